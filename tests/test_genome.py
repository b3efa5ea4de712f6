import subprocess

import numpy as np
import pysam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epiformer_cli.data.encoding import decode_sequence
from epiformer_cli.errors import InputFileError
from epiformer_cli.io.genome import Genome
from tests.helpers import write_fasta

SEQS = {"chr1": "ACGTacgtNNRYACGT" * 3, "chr2": "GGGGCCCCAT"}


@pytest.fixture
def fasta(tmp_path):
    return write_fasta(tmp_path / "g.fa", SEQS, width=7)


def test_sizes_order_and_index_built(fasta):
    genome = Genome(fasta)
    assert genome.chrom_sizes == {"chr1": 48, "chr2": 10}
    assert genome.chroms == ["chr1", "chr2"]
    assert (fasta.parent / "g.fa.fai").exists()


def test_fetch_uppercases_and_maps_iupac_to_n(fasta, caplog):
    genome = Genome(fasta)
    with caplog.at_level("WARNING"):
        assert decode_sequence(genome.fetch("chr1", 0, 16)) == "ACGTACGTNNNNACGT"
        genome.fetch("chr1", 0, 16)
    assert sum("IUPAC" in r.message for r in caplog.records) == 1  # said once


def test_fetch_pads_with_n_past_both_ends(fasta):
    genome = Genome(fasta)
    assert decode_sequence(genome.fetch("chr2", -3, 13)) == "NNNGGGGCCCCATNNN"
    assert decode_sequence(genome.fetch("chr2", 20, 25)) == "NNNNN"
    assert genome.fetch("chr2", 5, 5).shape == (0,)


@settings(max_examples=100, deadline=None)
@given(start=st.integers(-30, 70), length=st.integers(0, 60))
def test_fetch_always_returns_the_requested_length(start, length, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "prop.fa"
    if not path.exists():
        write_fasta(path, SEQS, width=7)
    genome = Genome(path)
    codes = genome.fetch("chr1", start, start + length)
    assert codes.shape == (length,)
    seq = SEQS["chr1"].upper().replace("R", "N").replace("Y", "N")
    expected = "".join(seq[i] if 0 <= i < len(seq) else "N" for i in range(start, start + length))
    assert decode_sequence(codes) == expected


def test_bgzipped_fasta_reads_the_same(fasta, tmp_path):
    bgz = tmp_path / "g.fa.gz"
    pysam.tabix_compress(str(fasta), str(bgz))
    genome = Genome(bgz)
    assert genome.chrom_sizes == Genome(fasta).chrom_sizes
    np.testing.assert_array_equal(genome.fetch("chr1", 5, 40), Genome(fasta).fetch("chr1", 5, 40))
    assert (tmp_path / "g.fa.gz.gzi").exists()


def test_plain_gzip_is_refused_with_the_fix(fasta, tmp_path):
    gz = tmp_path / "plain.fa.gz"
    subprocess.run(["gzip", "-c", str(fasta)], stdout=open(gz, "wb"), check=True)
    with pytest.raises(InputFileError, match="bgzip"):
        Genome(gz)


def test_missing_and_not_fasta(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        Genome(tmp_path / "nope.fa")
    junk = tmp_path / "junk.fa"
    junk.write_text("this is not a fasta\n")
    with pytest.raises(InputFileError, match=str(junk)):
        Genome(junk)


def test_index_goes_to_cache_when_folder_not_writable(tmp_path, monkeypatch):
    """Simulated with a patched permission check, so it also runs as root (as on CI)."""
    import epiformer_cli.io.genome as genome_module

    path = write_fasta(tmp_path / "g.fa", SEQS)
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(genome_module, "_writable_dir", lambda folder: False)
    genome = Genome(path)
    assert genome.chrom_sizes["chr2"] == 10
    assert not (tmp_path / "g.fa.fai").exists()
    assert len(list((tmp_path / "cache").rglob("g.fa.fai"))) == 1


def test_genome_pickles_for_worker_processes(fasta):
    import pickle

    genome = Genome(fasta)
    genome.fetch("chr1", 0, 4)
    clone = pickle.loads(pickle.dumps(genome))
    assert decode_sequence(clone.fetch("chr2", 0, 4)) == "GGGG"


def test_duplicate_names_empty_file_and_crlf(tmp_path):
    dup = tmp_path / "dup.fa"
    dup.write_text(">a\nACGT\n>b\nTT\n>a\nGG\n")
    with pytest.raises(InputFileError, match=r"1 duplicate sequence name\(s\) among 3 records \(a\)"):
        Genome(dup)
    assert not (tmp_path / "dup.fa.fai").exists()  # no index left behind for a refused file
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(InputFileError, match="empty"):
        Genome(empty)
    crlf = write_fasta(tmp_path / "crlf.fa", {"chr1": "ACGTACGGTT", "chr2": "AAAA"}, width=6, newline="\r\n")
    genome = Genome(crlf)
    assert genome.chrom_sizes == {"chr1": 10, "chr2": 4}
    assert decode_sequence(genome.fetch("chr1", 0, 10)) == "ACGTACGGTT"


def test_stale_index_is_rebuilt(fasta, tmp_path):
    import os

    Genome(fasta)
    write_fasta(fasta, {"chrZ": "ACGT"})
    fai = tmp_path / "g.fa.fai"
    os.utime(fai, (1, 1))  # index older than the FASTA
    assert Genome(fasta).chrom_sizes == {"chrZ": 4}
