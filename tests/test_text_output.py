"""Text outputs in the format their names promise: BGZF for .gz, tabix-indexed .vcf.gz, BCF for .bcf,
atomically; score-variants' --format from the name."""

import gzip
import logging

import pandas as pd
import pysam
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.io.text_output import format_for, text_output
from tests.helpers import HEADER, other, score, score_files, status_vcf

runner = CliRunner()

VCF_HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=chr1>\n"
              '##INFO=<ID=X,Number=A,Type=Float,Description="x">\n'
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")


def vcf_text(positions):
    """VCF text with one A>G record per (chrom, POS), INFO X=POS/10; chr2 and the tag DP are not declared."""
    return VCF_HEADER + "".join(f"{c}\t{p}\tv{i}\tA\tG\t.\t.\tX={p / 10};DP={i}\n" for i, (c, p) in enumerate(positions))


SORTED = [("chr1", 100), ("chr1", 200), ("chr1", 200), ("chr2", 5), ("chr2", 900)]


def write(path, text, pieces=3):
    """Through text_output, in a few writes that split lines (as block copies do)."""
    step = len(text) // pieces + 1
    with text_output(path) as handle:
        for i in range(0, len(text), step):
            handle.write(text[i:i + step])
    return path


def is_bgzf(path):
    head = path.read_bytes()[:18]
    # gzip magic, deflate, FEXTRA flag; an extra field of 6 bytes with the BGZF subfield "BC"
    return head[:4] == b"\x1f\x8b\x08\x04" and head[10:12] == b"\x06\x00" and head[12:14] == b"BC"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("textout"))


def run_job(files, vcf, out, **kw):
    """score-variants into ``out`` (the format from its name unless ``out_format``)."""
    return score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=out, device="cpu", **kw)


# ---- the writer ------------------------------------------------------------------------------
def test_vcf_gz_is_bgzf_with_a_tabix_index(tmp_path):
    out = write(tmp_path / "o.vcf.gz", vcf_text(SORTED))
    assert is_bgzf(out) and gzip.open(out, "rt").read() == vcf_text(SORTED)
    assert (tmp_path / "o.vcf.gz.tbi").is_file()
    with pysam.TabixFile(str(out)) as tabix:
        assert [row.split("\t")[2] for row in tabix.fetch("chr1", 150, 250)] == ["v1", "v2"]
        assert [row.split("\t")[2] for row in tabix.fetch("chr2", 0, 10)] == ["v3"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("positions, why", [
    ([("chr1", 100), ("chr1", 50)], "chr1:50 comes after chr1:100"),
    ([("chr1", 100), ("chr2", 5), ("chr1", 300)], "chr1:300 comes after chr2:5"),
])
@pytest.mark.parametrize("name", ["o.vcf.gz", "o.bcf"])
def test_unsorted_records_get_no_index_one_warning_and_no_stale_index(tmp_path, caplog, positions, why, name):
    index = tmp_path / (name + (".tbi" if name.endswith(".gz") else ".csi"))
    write(tmp_path / name, vcf_text(SORTED))
    assert index.is_file()
    with caplog.at_level(logging.WARNING, logger="epiformer_cli"):
        write(tmp_path / name, vcf_text(positions))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and why in warnings[0] and "bcftools sort" in warnings[0]
    assert not index.exists()  # the earlier run's index would describe another file
    with pysam.VariantFile(str(tmp_path / name)) as reread:
        assert [(r.chrom, r.pos) for r in reread] == positions
    assert leftovers(tmp_path) == []


def test_bcf_declares_what_the_text_does_not_and_is_indexed(tmp_path):
    text = vcf_text(SORTED)
    write(tmp_path / "o.bcf", text)
    assert (tmp_path / "o.bcf.csi").is_file() and leftovers(tmp_path) == []
    with pysam.VariantFile(str(tmp_path / "o.bcf")) as bcf:
        assert bcf.is_bcf and {"chr1", "chr2"} <= set(bcf.header.contigs) and "DP" in bcf.header.info
        assert [(r.id, r.info["X"], r.info["DP"]) for r in bcf.fetch("chr2", 0, 1000)] == \
            [("v3", (0.5,), "3"), ("v4", (90.0,), "4")]


@pytest.mark.parametrize("name", ["o.tsv", "o.tsv.gz", "o.vcf.gz", "o.bcf"])
def test_an_error_leaves_the_earlier_file_and_no_temporaries(tmp_path, name):
    write(tmp_path / name, vcf_text(SORTED))
    before = sorted(p.name for p in tmp_path.iterdir())
    content = (tmp_path / name).read_bytes()
    with pytest.raises(RuntimeError, match="disk"):
        with text_output(tmp_path / name) as handle:
            handle.write(vcf_text([("chr1", 7)]))
            raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / name).read_bytes() == content


def test_plain_names_and_standard_output_stay_plain(tmp_path, capsys):
    assert write(tmp_path / "o.vcf", vcf_text(SORTED)).read_text() == vcf_text(SORTED)
    assert not (tmp_path / "o.vcf.tbi").exists()
    with text_output("-") as handle:
        handle.write("a\tb\n")
    assert capsys.readouterr().out == "a\tb\n"


def test_format_for_the_name():
    assert [format_for(p, None) for p in ("s.vcf", "s.VCF.GZ", "s.vcf.bgz", "s.bcf", "s.tsv.gz", "s.txt", "-")] == \
        ["vcf", "vcf", "vcf", "vcf", "tsv", "tsv", "tsv"]
    assert format_for("s.txt", "vcf") == "vcf" and format_for("-", "vcf") == "vcf" and format_for("s.vcf", "vcf") == "vcf"
    with pytest.raises(UsageError, match=r"--format tsv does not fit --out s\.vcf\.gz"):
        format_for("s.vcf.gz", "tsv")
    with pytest.raises(UsageError, match=r"--format vcf does not fit --out s\.tsv\.gz"):
        format_for("s.tsv.gz", "vcf")


# ---- score-variants ---------------------------------------------------------------------------
def sorted_vcf(path, seqs):
    """SNVs on chr1 and chr2 in order (chr2 has no ##contig line in HEADER)."""
    rows = [("chr1", p) for p in (1001, 1501, 22001, 22002)] + [("chr2", p) for p in (301, 15001)]
    path.write_text(HEADER + "".join(f"{c}\t{p}\tv{i}\t{seqs[c][p - 1]}\t{other(seqs[c][p - 1])}\t.\t.\t.\n"
                                     for i, (c, p) in enumerate(rows)))
    return path


def test_score_variants_vcf_gz_and_bcf_hold_the_vcf_outputs_records(files, tmp_path):
    vcf = sorted_vcf(tmp_path / "in.vcf", files["seqs"])
    for name in ("s.vcf", "s.vcf.gz", "s.bcf"):
        run_job(files, vcf, out=tmp_path / name, chunk_size=2)  # the format from the name
    assert is_bgzf(tmp_path / "s.vcf.gz") and (tmp_path / "s.vcf.gz.tbi").is_file()
    assert (tmp_path / "s.bcf.csi").is_file() and not list(tmp_path.glob("*.options.json"))

    def records(name, *region):
        with pysam.VariantFile(str(tmp_path / name)) as reread:
            rows = reread.fetch(*region) if region else reread
            return [(r.chrom, r.pos, r.id, r.ref, r.alts, dict(r.info)) for r in rows]

    plain = records("s.vcf")
    assert len(plain) == 6 and plain[0][5]["EPI_STATUS"] == ("ok",)
    assert records("s.vcf.gz") == plain and records("s.bcf") == plain
    assert records("s.vcf.gz", "chr1", 20000, 23000) == plain[2:4] == records("s.bcf", "chr1", 20000, 23000)
    assert "EPI_DIFF_glia" in str(pysam.VariantFile(str(tmp_path / "s.bcf")).header)


def test_score_variants_unsorted_vcf_gz_is_written_without_an_index(files, tmp_path, caplog):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])  # chr1:501 after chr1:30101, and an alias "1"
    with caplog.at_level(logging.WARNING, logger="epiformer_cli"):
        run_job(files, vcf, out=tmp_path / "s.bcf")
    assert [r.getMessage() for r in caplog.records if "not indexed" in r.getMessage()] == \
        [f"{tmp_path / 's.bcf'} is not indexed: its records are not sorted (chr1:501 comes after chr1:30101); "
         "sort it with `bcftools sort` to get an index"]
    with pysam.VariantFile(str(tmp_path / "s.bcf")) as reread:
        assert len(list(reread)) == 13 and {"1", "chrUn"} <= set(reread.header.contigs)


def test_score_variants_tsv_gz_reads_back_as_the_tsv(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    run_job(files, vcf, out=tmp_path / "s.tsv")
    run_job(files, vcf, out=tmp_path / "s.tsv.gz", chunk_size=4)
    assert is_bgzf(tmp_path / "s.tsv.gz") and not (tmp_path / "s.tsv.gz.tbi").exists()
    read = lambda name: pd.read_csv(tmp_path / name, sep="\t", keep_default_na=False)  # noqa: E731
    pd.testing.assert_frame_equal(read("s.tsv.gz"), read("s.tsv"))
    assert (tmp_path / "s.tsv.gz.options.json").is_file()


def test_a_resumed_run_with_the_default_format_matches_an_explicit_tsv(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    kw = dict(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], device="cpu",
              chunk_size=3, out=tmp_path / "s.tsv.gz", force=False)
    first = score(shard="1/2", out_format="tsv", **kw)
    resumed = score(**kw)
    assert resumed.assembled and resumed.resumed_chunks == first.scored_chunks > 0


def test_cli_refuses_a_format_the_name_contradicts_in_one_line(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    base = ["score-variants", str(vcf), "--fasta", str(files["fasta"]), "--cons", str(files["cons"]),
            "--model", str(files["model"]), "--device", "cpu"]
    for out, fmt in (("s.vcf.gz", "tsv"), ("s.bcf", "tsv"), ("s.tsv.gz", "vcf")):
        result = runner.invoke(app, base + ["--out", str(tmp_path / out), "--format", fmt])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert f"--format {fmt}" in lines[0] and out in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.vcf"]
    made = runner.invoke(app, base + ["--null-size", "0", "--out", str(tmp_path / "s.vcf.gz")])
    assert made.exit_code == 0, made.output
    with pysam.VariantFile(str(tmp_path / "s.vcf.gz")) as reread:
        assert "EPI_STATUS" in reread.header.info and len(list(reread)) == 13
