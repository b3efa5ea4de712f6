"""Inputs that once ended in an internal error (a traceback's last line, after the computing): each is
refused in exactly one stderr line naming the file, before any work, with the CLI's exit code.

* a BED whose columns hold a byte that is not UTF-8 (explain --regions, prepare --blacklist,
  score-variants --null-blacklist);
* ``epiformer info`` given something that is not a model file (a TSV, a folder, a store, an
  empty file, random bytes, an .npz, gzip data).
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import InputFileError
from epiformer_cli.io.bed import bed_lines, read_bed
from tests.helpers import HEADER, score_files, write_bigwig, write_fasta

runner = CliRunner()

ACCEPTS = "`epiformer info` describes a model file (a .pt written by `epiformer train` or `epiformer import-model`)"


def one_line(result, code: int) -> str:
    """The one stderr line of a refused command (and nothing else on stderr)."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("epiformer: error: ")
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("one_line"))


# ---- BED files with bytes that are not UTF-8 ----------------------------------------------------------
def test_explain_regions_with_a_latin1_name_is_refused_before_any_work(files, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_bytes(b"chr1\t10000\t10020\tok\nchr1\t12000\t12020\tn\xe9uron_peak\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["-q", "explain", "-o", str(out), "--regions", str(bed), "--fasta", str(files["fasta"]),
                                 "--cons", str(files["cons"]), "--model", str(files["model"]), "--device", "cpu",
                                 "--plot", "0"])
    line = one_line(result, 1)
    assert line == (f"epiformer: error: {bed}:2: column 4 holds the byte b'\\xe9', which is not UTF-8 "
                    "(b'chr1\\t12000\\t12020\\tn\\xe9uron_peak'): save the BED as UTF-8 text "
                    "(e.g. iconv -f latin1 -t utf-8)")
    assert not (out / "contrib.npz").exists() and not list(out.glob("contrib.*.bw"))


def test_prepare_blacklist_with_a_bad_chromosome_byte_is_refused(files, tmp_path):
    bed = tmp_path / "black.bed"
    bed.write_bytes(b"chr1\t0\t100\nchr\xff\t0\t100\n")
    sizes = {c: 8_192 for c in ("chr1", "chr8", "chr9")}
    fasta = write_fasta(tmp_path / "g.fa", {c: "ACGT" * (n // 4) for c, n in sizes.items()})
    bigwig = write_bigwig(tmp_path / "a.bw", sizes, {c: [(0, n, 1.0)] for c, n in sizes.items()})
    sheet = tmp_path / "t.tsv"
    sheet.write_text(f"name\tpath\nA\t{bigwig}\n")
    result = runner.invoke(app, ["-q", "prepare", "--targets", str(sheet), "--out", str(tmp_path / "store"),
                                 "--fasta", str(fasta), "--no-cons", "--blacklist", str(bed), "--window", "4096"])
    line = one_line(result, 1)
    assert f"{bed}:2: column 1 holds the byte b'\\xff', which is not UTF-8" in line
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_score_variants_null_blacklist_with_a_bad_byte_is_refused(files, tmp_path):
    bed = tmp_path / "null_black.bed"
    bed.write_bytes(b"chr\xe9\t0\t100\n")
    vcf = tmp_path / "v.vcf"
    vcf.write_text(HEADER + "chr1\t20000\t.\t" + files["seqs"]["chr1"][19_999] + "\tT\t.\t.\t.\n")
    out = tmp_path / "s.tsv"
    result = runner.invoke(app, ["-q", "score-variants", str(vcf), "--fasta", str(files["fasta"]), "--cons",
                                 str(files["cons"]), "--model", str(files["model"]), "--out", str(out), "--device",
                                 "cpu", "--null-size", "100", "--null-blacklist", str(bed)])
    line = one_line(result, 1)
    assert f"{bed}:1: column 1 holds the byte b'\\xe9', which is not UTF-8" in line
    assert not out.exists()


def test_only_the_columns_read_must_be_utf8(tmp_path):
    """A blacklist's name column is never read: a Latin-1 name there is no reason to refuse it; a
    regions BED's name column is read, so it must be UTF-8."""
    bed = tmp_path / "b.bed"
    bed.write_bytes(b"chr1\t5\t10\tn\xe9\n")
    assert read_bed(bed) == [("chr1", 5, 10)]
    with pytest.raises(InputFileError, match="b.bed:1: column 4 holds the byte"):
        list(bed_lines(bed, "regions BED"))
    bed.write_bytes("chr1\t5\t10\tneurône\n".encode())  # UTF-8 beyond ASCII is fine
    assert [f[3] for _, f in bed_lines(bed)] == ["neurône"]


# ---- epiformer info on what is not a model file -----------------------------------------------------------
def _make(kind: str, tmp_path, files):
    path = tmp_path / kind
    if kind == "metrics.tsv":
        path.write_text("epoch\tloss\tpearson\n1\t0.5\t0.1\n")
    elif kind == "empty.pt":
        path.write_bytes(b"")
    elif kind == "random.bin":
        path.write_bytes(b"\x07\x00" + np.random.default_rng(1).bytes(4000))  # neither zip, pickle nor text
    elif kind == "folder":
        path.mkdir()
    elif kind == "store":
        path.mkdir()
        (path / "manifest.json").write_text("{}")
    elif kind == "run":
        path.mkdir()
        (path / "model.pt").write_bytes((files["model"]).read_bytes())
    elif kind == "contrib.npz":
        np.savez(path, a=np.zeros(3))
    elif kind == "cons.bw":
        write_bigwig(path, {"chr1": 100}, {"chr1": [(0, 10, 1.0)]})
    elif kind == "table.tsv.gz":
        import gzip

        path.write_bytes(gzip.compress(b"chrom\tpos\n"))
    return path


@pytest.mark.parametrize("kind, says", [
    ("metrics.tsv", "is a text file (it starts 'epoch\\tloss\\tpearson'), not a model file"),
    ("empty.pt", "is empty (0 bytes), not a model file"),
    ("random.bin", "is not a model file (neither a zip archive, as torch.save writes, nor a pickle)"),
    ("folder", "is a folder, not a model file"),
    ("store", "is a store folder, not a model file"),
    ("run", "is a folder (a training run?): give its model file"),
    ("contrib.npz", "is a zip archive of other files (such as an .npz of arrays), not a model file"),
    ("cons.bw", "is not a model file (neither a zip archive"),
    ("table.tsv.gz", "holds gzip-compressed data (a table or a null?), not a model file"),
])
def test_info_on_what_is_not_a_model_file_says_what_info_accepts(files, tmp_path, kind, says):
    path = _make(kind, tmp_path, files)
    line = one_line(runner.invoke(app, ["info", str(path)]), 1)
    assert line.startswith(f"epiformer: error: {path} {says}"), line
    assert line.endswith(ACCEPTS)


def test_info_still_describes_a_model_file(files):
    result = runner.invoke(app, ["info", str(files["model"])])
    assert result.exit_code == 0, result.output
    assert "tracks (3)    neuron, glia, astro" in result.stdout


@pytest.mark.parametrize("kind, says", [
    ("metrics.tsv", "is a text file (it starts 'epoch\\tloss\\tpearson'), not a model file"),
    ("table.tsv.gz", "holds gzip-compressed data (a table or a null?), not a model file"),
])
def test_every_command_says_what_is_not_a_model_file(files, tmp_path, kind, says):
    """The check lives in load_model, so predict (and every command) says it too, not only info."""
    path = _make(kind, tmp_path, files)
    line = one_line(runner.invoke(app, ["predict", "--fasta", str(files["fasta"]), "--model", str(path),
                                        "--no-cons", "--out", str(tmp_path / "p.bw")]), 1)
    assert line.startswith(f"epiformer: error: {path} {says}"), line
    assert line.endswith("give a model file (a .pt written by `epiformer train` or `epiformer import-model`)")
