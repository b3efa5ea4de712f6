"""Real-world input quirks: plain gzip (not bgzip), CRLF line endings, no final newline, UCSC
track/browser lines, a UTF-8 byte-order mark, multi-sample VCFs, BCF, VCFs without ##contig lines.

Each quirk gives exactly the result of the clean file (byte-identical outputs, equal intervals and
tracks, no "\\r" in any name); damaged compressed data is refused in one line naming the file.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Callable, Dict

import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import InputFileError
from epiformer_cli.io.bed import bed_lines, read_bed
from epiformer_cli.io.targets import read_targets
from epiformer_cli.io.vcf import read_vcf
from tests.helpers import bgzip_text, clear_launcher_environment, fifo, other, score, score_files, write_bigwig, write_fasta

COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"
INFO_DP = '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">'
FORMAT_GT = '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">'
FORMAT_DP = '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">'


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    clear_launcher_environment(monkeypatch)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("quirks"))


# ---- building the quirky copies of one file ------------------------------------------------------
def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)




def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode())  # never newline-translated
    return path


#: the text quirks every line-based format must take: name -> (file name suffix, writer)
TEXT_QUIRKS: Dict[str, Callable[[str, Path], Path]] = {
    "clean": lambda t, p: _write(p, t),
    "crlf": lambda t, p: _write(p, _crlf(t)),
    "no-final-newline": lambda t, p: _write(p, t.rstrip("\n")),
    "crlf-no-final-newline": lambda t, p: _write(p, _crlf(t).rstrip("\r\n")),
    "gzip": lambda t, p: _write(p.with_name(p.name + ".gz"), _gzip(t)),
    "gzip-named-plain": lambda t, p: _write(p, _gzip(t)),  # told apart by its bytes, not its name
    "gzip-crlf-no-final-newline": lambda t, p: _write(p.with_name(p.name + ".gz"), _gzip(_crlf(t).rstrip("\r\n"))),
    "bgzip": lambda t, p: bgzip_text(t, p.with_name(p.name + ".gz")),
    "byte-order-mark-crlf": lambda t, p: _write(p, "\ufeff" + _crlf(t)),
}


# ---- VCF: score-variants ---------------------------------------------------------------------------
def vcf_text(seqs, contigs: bool = True, samples: int = 0, info: bool = False) -> str:
    """Sites on chr1 and chr2 (sorted): SNVs, a multi-allelic site, a deletion, an ID on each."""
    s1, s2 = seqs["chr1"], seqs["chr2"]
    rows = [("chr1", 101, s1[100], other(s1[100])),
            ("chr1", 5001, s1[5000], f"{other(s1[5000])},{other(s1[5000], 2)}"),
            ("chr1", 20001, s1[20000:20003], s1[20000]),
            ("chr1", 30001, s1[30000], other(s1[30000], 3)),
            ("chr2", 9001, s2[9000], other(s2[9000]))]
    head = ["##fileformat=VCFv4.2"]
    if contigs:
        head += ["##contig=<ID=chr1,length=40000>", "##contig=<ID=chr2,length=20000>"]
    if info:
        head.append(INFO_DP)
    if samples:
        head += [FORMAT_GT, FORMAT_DP]
    columns = COLUMNS + ("\tFORMAT" + "".join(f"\tS{i}" for i in range(1, samples + 1)) if samples else "")
    lines = head + [columns]
    genotypes = ["0/1:7", "1/1:.", "./.:3"]
    for i, (chrom, pos, ref, alt) in enumerate(rows):
        line = f"{chrom}\t{pos}\tvar{i}\t{ref}\t{alt}\t.\t.\t{'DP=9' if info else '.'}"
        if samples:
            line += "\tGT:DP" + "".join(f"\t{genotypes[(i + k) % 3]}" for k in range(samples))
        lines.append(line)
    return "\n".join(lines) + "\n"


def _bcf(text: str, path: Path) -> Path:
    import pysam

    plain = _write(path.with_suffix(".src.vcf"), text)
    with pysam.VariantFile(str(plain)) as src, pysam.VariantFile(str(path), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    plain.unlink()
    return path


#: VCF quirks: name -> writer(seqs, path) of a VCF with the same sites as the clean one
VCF_QUIRKS: Dict[str, Callable] = {
    # a byte-order mark too: htslib needs "##fileformat" at byte 0, so the reader strips the mark
    **{name: (lambda make: lambda seqs, p: make(vcf_text(seqs), p))(make) for name, make in TEXT_QUIRKS.items()},
    "byte-order-mark-gzip": lambda seqs, p: _write(p.with_name(p.name + ".gz"), _gzip("\ufeff" + vcf_text(seqs))),
    "byte-order-mark-bgzip-no-contig-lines": lambda seqs, p: bgzip_text("\ufeff" + vcf_text(seqs, contigs=False),
                                                                   p.with_name(p.name + ".gz")),
    "no-contig-lines": lambda seqs, p: _write(p, vcf_text(seqs, contigs=False)),
    "no-contig-lines-gzip": lambda seqs, p: _write(p, _gzip(vcf_text(seqs, contigs=False))),
    "three-samples": lambda seqs, p: _write(p, vcf_text(seqs, samples=3)),
    "three-samples-crlf-gzip": lambda seqs, p: _write(p, _gzip(_crlf(vcf_text(seqs, samples=3)))),
    "bcf": lambda seqs, p: _bcf(vcf_text(seqs), p.with_suffix(".bcf")),
    "bcf-three-samples": lambda seqs, p: _bcf(vcf_text(seqs, samples=3), p.with_suffix(".bcf")),
}


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def score_cli(files, vcf, out, *extra):
    return invoke(["score-variants", vcf, "--fasta", files["fasta"], "--cons", files["cons"], "--model",
                   files["model"], "--device", "cpu", "--null-size", "0", "--out", out, *extra])


def assert_clean_run(result) -> None:
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr and "error" not in result.stderr, result.stderr


def assert_refused(result, code: int, *says: str) -> str:
    """Exit ``code``, exactly one stderr line for the error, naming ``says``; no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("epiformer: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout and "internal error" not in errors[0], result.stderr
    for text in says:
        assert text in errors[0], (text, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def clean_outputs(files, tmp_path_factory):
    """The clean VCF's TSV and VCF outputs, scored once."""
    folder = tmp_path_factory.mktemp("clean")
    vcf = _write(folder / "in.vcf", vcf_text(files["seqs"]))
    out = {}
    for fmt in ("tsv", "vcf"):
        path = folder / f"out.{fmt}"
        assert_clean_run(score_cli(files, vcf, path))
        out[fmt] = path.read_bytes()
    rows = out["tsv"].decode().splitlines()
    assert len(rows) == 1 + 3 * 6 and all("\tok\t" in r for r in rows[1:])  # 6 alleles x 3 tracks
    return out


@pytest.mark.parametrize("quirk", list(VCF_QUIRKS))
def test_vcf_quirks_score_exactly_like_the_clean_vcf(files, clean_outputs, tmp_path, quirk):
    """The TSV of every quirk is byte-identical to the clean VCF's: plain gzip as bgzip as plain,
    CRLF and a missing final newline change nothing, genotypes are ignored, BCF equals VCF, and a
    VCF without ##contig lines takes its chromosomes from the FASTA."""
    vcf = VCF_QUIRKS[quirk](files["seqs"], tmp_path / "in.vcf")
    result = score_cli(files, vcf, tmp_path / "out.tsv")
    assert_clean_run(result)
    assert (tmp_path / "out.tsv").read_bytes() == clean_outputs["tsv"]


@pytest.mark.parametrize("quirk", ["gzip", "gzip-named-plain", "crlf", "no-final-newline", "bgzip", "no-contig-lines"])
def test_vcf_output_of_a_quirk_equals_the_clean_one(files, clean_outputs, tmp_path, quirk):
    """``--format vcf`` echoes the input records: the same bytes, no "\\r" carried over. Without
    ##contig lines the header has none either (htslib learns them from the records)."""
    vcf = VCF_QUIRKS[quirk](files["seqs"], tmp_path / "in.vcf")
    assert_clean_run(score_cli(files, vcf, tmp_path / "out.vcf"))
    got = (tmp_path / "out.vcf").read_bytes()
    assert b"\r" not in got
    if quirk == "no-contig-lines":
        want = b"".join(line for line in clean_outputs["vcf"].splitlines(keepends=True)
                        if not line.startswith(b"##contig="))
        assert got == want
    else:
        assert got == clean_outputs["vcf"]


def test_multi_sample_vcf_output_keeps_the_genotypes_and_adds_the_same_info(files, clean_outputs, tmp_path):
    vcf = _write(tmp_path / "samples.vcf", vcf_text(files["seqs"], samples=3))
    assert_clean_run(score_cli(files, vcf, tmp_path / "out.vcf"))
    got = [line for line in (tmp_path / "out.vcf").read_text().splitlines() if not line.startswith("##")]
    want = [line for line in clean_outputs["vcf"].decode().splitlines() if not line.startswith("##")]
    assert got[0] == want[0] + "\tFORMAT\tS1\tS2\tS3"
    samples = [line.split("\t")[8:] for line in vcf_text(files["seqs"], samples=3).splitlines()[-5:]]
    assert [line.split("\t")[:8] for line in got[1:]] == [line.split("\t") for line in want[1:]]
    assert [line.split("\t")[8:] for line in got[1:]] == samples


def test_reader_leaves_no_carriage_return_in_any_field(tmp_path, files):
    """CRLF and CR-LF-less last lines: chromosome, ID, REF, ALT and the echoed line are clean,
    through plain text, plain gzip and with samples (the last column then is a genotype)."""
    seqs = files["seqs"]
    texts = {"info": vcf_text(seqs, info=True), "samples": vcf_text(seqs, samples=2)}
    for name, text in texts.items():
        for raw in (_crlf(text).encode(), _gzip(_crlf(text)), _crlf(text).rstrip("\r\n").encode()):
            path = _write(tmp_path / f"{name}.vcf", raw)
            with read_vcf(path) as reader:
                records = list(reader.records())
                header = reader.header_text()
            assert len(records) == 5 and "\r" not in header
            assert [r.line for r in records] == [line + "\n" for line in text.splitlines()[-5:]]
            for allele in (a for r in records for a in r.alleles):
                assert "\r" not in allele.chrom + allele.id + allele.ref + allele.alt
                assert allele.chrom in ("chr1", "chr2") and allele.id.startswith("var")


def test_plain_gzip_vcf_from_standard_input(files, clean_outputs, tmp_path):
    """The in-process runner's stdin is spooled to a file: the plain-gzip bytes are read as a stream."""
    result = CliRunner().invoke(app, ["score-variants", "-", "--fasta", str(files["fasta"]), "--cons",
                                      str(files["cons"]), "--model", str(files["model"]), "--device", "cpu",
                                      "--null-size", "0"], input=_gzip(vcf_text(files["seqs"])))
    assert_clean_run(result)
    assert result.stdout.encode() == clean_outputs["tsv"]




def test_plain_gzip_vcf_from_a_pipe(files, clean_outputs, tmp_path):
    """A pipe cannot seek either (and its first bytes cannot be looked at twice): read as a stream."""
    pipe = fifo(tmp_path / "in.vcf.gz", _gzip(vcf_text(files["seqs"])))
    result = invoke(["score-variants", pipe, "--fasta", files["fasta"], "--cons", files["cons"], "--model",
                     files["model"], "--device", "cpu", "--null-size", "0"])
    assert_clean_run(result)
    assert result.stdout.encode() == clean_outputs["tsv"]


def test_plain_gzip_vcf_shards_and_resumes_like_the_clean_one(files, clean_outputs, tmp_path):
    """Shards and resume digests read the plain-gzip file again from its start (one record per
    chunk: five chunks over two shards)."""
    vcf = _write(tmp_path / "in.vcf.gz", _gzip(vcf_text(files["seqs"])))
    out = tmp_path / "sharded.tsv"
    kw = dict(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=out, device="cpu",
              chunk_size=1, force=False)
    first = score(shard="1/2", **kw)
    assert not first.assembled and first.scored_chunks == 3 and first.chunks == 5
    second = score(shard="2/2", **kw)
    assert second.assembled and second.scored_chunks == 2 and out.read_bytes() == clean_outputs["tsv"]
    out.unlink()
    score(shard="1/2", **kw)
    resumed = score(**kw)
    assert resumed.resumed_chunks == 3 and resumed.scored_chunks == 2 and out.read_bytes() == clean_outputs["tsv"]


def test_a_plain_gzip_vcf_leaves_no_file_descriptor_open(files, tmp_path):
    vcf = _write(tmp_path / "in.vcf.gz", _gzip(vcf_text(files["seqs"])))
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with read_vcf(vcf) as reader:
            assert len(list(reader.records())) == 5
    assert sorted(os.listdir("/proc/self/fd")) == before


# ---- VCF refusals ----------------------------------------------------------------------------------
def _many_records(n: int) -> str:
    """``n`` sites on a contig the FASTA lacks (status unknown_chrom: no model work), then one on chr1."""
    head = "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=40000>\n##contig=<ID=chrZ>\n" + COLUMNS + "\n"
    return head + "".join(f"chrZ\t{i + 1}\tz{i}\tA\tC\t.\t.\t.\n" for i in range(n)) + "chr1\t10\t.\tA\tC\t.\t.\t.\n"


def _damage_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"x" * 64 + data[middle + 64:]


def test_a_cut_short_plain_gzip_vcf_is_refused_in_one_line(files, tmp_path):
    data = _gzip(vcf_text(files["seqs"]))
    vcf = _write(tmp_path / "cut.vcf.gz", data[: len(data) - 20])
    out = tmp_path / "out.tsv"
    assert_refused(score_cli(files, vcf, out), 1, str(vcf), "cut short", "copy or download it again")
    assert not out.exists()


@pytest.mark.parametrize("compression", ["gzip", "bgzip"])
def test_damaged_compressed_vcf_is_refused_naming_the_last_record_read(files, tmp_path, compression):
    """Damage far into the file: the error of the read is told (it used to be hidden by a second
    error closing the file: an internal error), and no output or parts are left."""
    text = _many_records(20_000)
    if compression == "gzip":
        data = _gzip(text)
    else:
        data = bgzip_text(text, tmp_path / "whole.vcf.gz").read_bytes()
        (tmp_path / "whole.vcf.gz").unlink()
    vcf = _write(tmp_path / "damaged.vcf.gz", _damage_middle(data))
    out = tmp_path / "out.tsv"
    line = assert_refused(score_cli(files, vcf, out, "--chunk-size", "100000"), 1, str(vcf),
                          "malformed VCF line or damaged compressed data after record",
                          "check it with bcftools view, then fix that line or copy the file again")
    assert 0 < int(re.search(r"after record (\d+) ", line).group(1)) < 20_000
    assert not out.exists() and not (tmp_path / "out.tsv.parts").exists()


# ---- BED: regions, blacklists ---------------------------------------------------------------------
BED_CLEAN = "chr1\t100\t900\tpeak_a\nchr1\t2000\t2600\tpeak_b\n1\t5000\t5100\tpeak_c\nchr2\t300\t700\tpeak_d\n"
UCSC_HEADER = ('browser position chr1:1-10000\nbrowser hide all\n'
               'track name="my peaks" description="from \\"MACS2\\"" visibility=2\n# a comment\n\n')
SIZES = {"chr1": 40_000, "chr2": 20_000}


def bed_quirks(tmp_path: Path) -> Dict[str, Path]:
    out = {}
    for header in ("", UCSC_HEADER):
        for name, make in TEXT_QUIRKS.items():
            key = f"{'ucsc-header-' if header else ''}{name}"
            folder = tmp_path / key
            folder.mkdir()
            out[key] = make(header + BED_CLEAN, folder / "regions.bed")
    return out


def test_bed_quirks_read_like_the_clean_bed(tmp_path):
    """Every reader of a BED: the raw lines (explain --regions), read_bed with and without the
    genome (predict --regions, prepare --blacklist, score-variants --null-blacklist)."""
    quirks = bed_quirks(tmp_path)
    clean = quirks["clean"]
    want_lines = list(bed_lines(clean))
    want_raw = read_bed(clean)
    want_resolved = read_bed(clean, SIZES, unknown="skip")
    assert [f[3] for _, f in want_lines] == ["peak_a", "peak_b", "peak_c", "peak_d"]
    assert want_resolved == [("chr1", 100, 900), ("chr1", 2000, 2600), ("chr1", 5000, 5100), ("chr2", 300, 700)]
    offset = len(UCSC_HEADER.splitlines())
    for key, path in quirks.items():
        lines = list(bed_lines(path))
        shift = offset if key.startswith("ucsc-header-") else 0
        assert [(n - shift, f) for n, f in lines] == want_lines, key
        assert read_bed(path) == want_raw, key
        assert read_bed(path, SIZES, unknown="skip") == want_resolved, key


def test_bed_quirks_give_the_same_explain_and_predict_regions(tmp_path):
    from epiformer_cli.explain.regions import read_regions as explain_regions
    from epiformer_cli.jobs.predict import read_regions as predict_regions
    from epiformer_cli.model.config import preset

    config = preset("tiny", n_tracks=1)
    quirks = bed_quirks(tmp_path)
    want_explain = [(r.chrom, r.start, r.end, r.name) for r in explain_regions(quirks["clean"], SIZES, config)]
    want_predict = predict_regions(quirks["clean"], SIZES)
    assert [name for *_, name in want_explain] == ["peak_a", "peak_b", "peak_c", "peak_d"]
    for key, path in quirks.items():
        assert [(r.chrom, r.start, r.end, r.name) for r in explain_regions(path, SIZES, config)] == want_explain, key
        assert predict_regions(path, SIZES) == want_predict, key


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_bed_from_a_pipe(tmp_path, compress):
    text = _crlf(UCSC_HEADER + BED_CLEAN)
    pipe = fifo(tmp_path / "regions.bed", _gzip(text) if compress else text.encode())
    assert read_bed(pipe, SIZES) == read_bed(_write(tmp_path / "clean.bed", BED_CLEAN), SIZES)


def test_a_contig_named_like_a_ucsc_keyword_is_data(tmp_path):
    """Only the words ``track`` and ``browser`` start a UCSC line: ``track_7`` is a contig."""
    bed = _write(tmp_path / "odd.bed", "track type=bed\ntrack_7\t0\t10\nbrowsers\t5\t6\n")
    assert read_bed(bed) == [("track_7", 0, 10), ("browsers", 5, 6)]


def test_predict_regions_from_a_quirky_bed_equal_the_clean_ones(files, tmp_path):
    """End to end: a plain-gzip, CRLF, UCSC-headed BED without a final newline predicts the same bigWig."""
    clean = _write(tmp_path / "clean.bed", "chr1\t1000\t1300\nchr2\t200\t300\n")
    quirky = _write(tmp_path / "quirky.bed.gz", _gzip(_crlf(UCSC_HEADER + "chr1\t1000\t1300\nchr2\t200\t300\n")
                                                      .rstrip("\r\n")))
    outs = []
    for name, bed in (("clean", clean), ("quirky", quirky)):
        out = tmp_path / name / "pred.bw"
        out.parent.mkdir()
        result = invoke(["predict", "--fasta", files["fasta"], "--cons", files["cons"], "--model", files["model"],
                         "--out", out, "--device", "cpu", "--tracks", "neuron", "--no-rc-average", "--regions", bed])
        assert_clean_run(result)
        outs.append(_bigwig_intervals(out))
    assert outs[0] == outs[1] and outs[0]["chr1"] and outs[0]["chr2"]


def _bigwig_intervals(path: Path) -> dict:
    import pyBigWig

    bw = pyBigWig.open(str(path))
    try:
        return {chrom: list(bw.intervals(chrom) or ()) for chrom in bw.chroms()}
    finally:
        bw.close()


def test_a_cut_short_gzip_bed_is_refused_in_one_line(files, tmp_path):
    data = _gzip(UCSC_HEADER + BED_CLEAN * 200)
    bed = _write(tmp_path / "regions.bed.gz", data[: len(data) // 2])
    out = tmp_path / "pred.bw"
    line = assert_refused(invoke(["predict", "--fasta", files["fasta"], "--cons", files["cons"], "--model",
                                  files["model"], "--out", out, "--device", "cpu", "--regions", bed]),
                          1, str(bed), "BED file's compressed data is damaged or cut short after line",
                          "copy or download it again")
    assert int(re.search(r"after line (\d+) ", line).group(1)) > 0
    assert not out.exists() and not list(tmp_path.glob(".pred.bw*"))


# ---- targets sheets ---------------------------------------------------------------------------------
SHEET = "name\tpath\tscale\tclip\tstat\nneuron\tbw/a.bw\t2\t\tmean\nglia\tbw/b.bw\t1\t64\tsum\n"
LIST = "bw/a.bw\nbw/b.bw\n"


@pytest.mark.parametrize("text", [SHEET, "# tracks for the brain\n" + SHEET, LIST], ids=["table", "commented", "list"])
def test_targets_sheet_quirks_read_like_the_clean_sheet(tmp_path, text):
    """No "\\r" in a track name or path; a plain-gzip or bgzipped sheet resolves its paths
    against its own folder, like the plain one."""
    (tmp_path / "bw").mkdir()
    for name in ("a.bw", "b.bw"):
        write_bigwig(tmp_path / "bw" / name, {"chr1": 1000}, {"chr1": [(0, 100, 1.0)]})
    want = read_targets(_write(tmp_path / "clean.tsv", text))
    assert [t.path for t in want] == [tmp_path / "bw" / "a.bw", tmp_path / "bw" / "b.bw"]
    for name, make in TEXT_QUIRKS.items():
        got = read_targets(make(text, tmp_path / f"{name}.tsv"))
        assert got == want, name
        assert all("\r" not in t.name and "\r" not in str(t.path) for t in got)


def test_targets_sheet_errors_name_the_file_line_comments_counted(tmp_path):
    sheet = _write(tmp_path / "t.tsv.gz", _gzip(_crlf("# header next\nname\tpath\tscale\n\nx\tx.bw\tlots\n")))
    with pytest.raises(InputFileError, match=f"{sheet}:4: scale and clip must be numbers"):
        read_targets(sheet)


def test_a_cut_short_gzip_targets_sheet_is_refused_in_one_line(tmp_path):
    seqs = {c: "ACGT" * 500 for c in ("chr1", "chr2", "chr3")}
    fasta = write_fasta(tmp_path / "g.fa", seqs)
    cons = write_bigwig(tmp_path / "c.bw", {c: 2000 for c in seqs}, {c: [(0, 2000, 0.5)] for c in seqs})
    data = _gzip(SHEET + "".join(f"t{i}\tbw/a.bw\n" for i in range(2000)))
    sheet = _write(tmp_path / "targets.tsv.gz", data[: len(data) // 2])
    out = tmp_path / "store"
    assert_refused(invoke(["prepare", "--fasta", fasta, "--cons", cons, "--targets", sheet, "--preset", "tiny",
                           "--valid-chroms", "chr2", "--test-chroms", "chr3", "--out", out]),
                   1, str(sheet), "targets sheet's compressed data is damaged or cut short after line",
                   "copy or download it again")
    assert not out.exists()
