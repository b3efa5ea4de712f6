"""Calibrated variant scores: the null's draw, exact p-values and quantiles, the null file's reuse
and refusal, a killed null resuming, shards sharing it, and the calibrated columns in every format."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.io.genome import Genome
from epiformer_cli.variants import null_run as score_null
from epiformer_cli.options import ScoreOptions
from epiformer_cli.variants.calibration import CALIBRATED, Calibration, quantile, upper_tail_p
from epiformer_cli.variants.effects import EFFECTS
from epiformer_cli.variants.null import NullTable, draw_null_snvs, null_chromosomes, read_null, read_null_key
from tests.helpers import float_tolerance, other, printed_close, score, score_bounds, score_files, write_fasta


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("calibration"))


def snv_vcf(path, seqs, positions):
    """A VCF of SNVs at 1-based ``positions`` of chr1 (ALT: the next base)."""
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for pos in positions:
        ref = seqs["chr1"][pos - 1]
        lines.append(f"chr1\t{pos}\tv{pos}\t{ref}\t{other(ref)}\t.\t.\t.")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(files, vcf, out, **kw):
    kw.setdefault("null_size", 200)
    return score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=out, device="cpu", **kw)


def read(path):
    return pd.read_csv(path, sep="\t", dtype={"chrom": str, "id": str, "flags": str}, na_values=["NA"],
                       keep_default_na=False, comment=None, skiprows=1 if open(path).readline().startswith("##") else 0)


# ---- the formulas, on a hand-made null ------------------------------------------------------
def test_p_values_and_quantiles_on_a_hand_made_null():
    null = np.sort(np.array([0.0, 1.0, 1.0, 2.0, 5.0]))
    # (1 + #null >= x) / (1 + N): ties count as at least as extreme
    np.testing.assert_array_equal(upper_tail_p(null, [0.0, 1.0, 1.5, 5.0, 6.0]), [6 / 6, 5 / 6, 3 / 6, 2 / 6, 1 / 6])
    np.testing.assert_array_equal(quantile(null, [-1.0, 0.0, 1.0, 4.0, 5.0]), [0.0, 0.2, 0.6, 0.8, 1.0])
    assert np.isnan(upper_tail_p(null, [np.nan])).all() and np.isnan(quantile(null, [np.inf])).all()

    table = NullTable({"size": 4, "seed": 0}, {"a": {
        "ref_sum": np.array([1.0, 2.0, 3.0, 4.0]), "diff": np.array([-0.5, 0.1, 0.2, 0.4]),
        "log2fc": np.array([0.3, -0.3, 0.0, 0.05]), "max_abs": np.array([0.1, 0.2, 0.3, 0.4])}})
    cal = Calibration(table, ["a"])
    row = np.zeros((1, len(EFFECTS)))
    row[0, EFFECTS.index("ref_sum")], row[0, EFFECTS.index("alt_sum")] = 2.0, 3.5
    row[0, EFFECTS.index("diff")], row[0, EFFECTS.index("log2fc")], row[0, EFFECTS.index("max_abs")] = -0.2, 0.3, 0.35
    got = dict(zip(CALIBRATED, cal.columns(row)[0]))
    # two-sided: |diff| 0.2 is reached by |-0.5|, 0.2, 0.4 -> (1 + 3) / 5
    assert got == {"diff_p": 4 / 5, "log2fc_p": 3 / 5, "max_abs_p": 2 / 5, "ref_quantile": 0.5, "alt_quantile": 0.75}
    with pytest.raises(UsageError, match="holds tracks a, not b"):
        Calibration(table, ["b"])


# ---- the null's draw -------------------------------------------------------------------------
def test_null_draw_is_uniform_over_acgt_bases_seeded_and_skips_blacklist(tmp_path):
    from epiformer_cli.io.bed import IntervalIndex

    seqs = {"chr1": "N" * 500 + "ACGT" * 250 + "N" * 500, "chr2": "ACGT" * 500,
            "chr1_random": "A" * 5000, "chrM": "C" * 5000}
    genome = Genome(write_fasta(tmp_path / "g.fa", seqs))
    assert null_chromosomes(genome.chrom_sizes) == ["chr1", "chr2"]
    black = IntervalIndex([("chr2", 0, 1000)])
    snvs = draw_null_snvs(genome, 3000, seed=7, blacklist=black)
    again = draw_null_snvs(genome, 3000, seed=7, blacklist=black)
    assert [r.line for r in snvs] == [r.line for r in again]
    assert [r.line for r in snvs] != [r.line for r in draw_null_snvs(genome, 3000, seed=8, blacklist=black)]
    alleles = [r.alleles[0] for r in snvs]
    assert all(seqs[a.chrom][a.start] == a.ref != a.alt and a.ref in "ACGT" and a.alt in "ACGT" for a in alleles)
    assert not any(a.chrom == "chr2" and a.start < 1000 for a in alleles)
    # 1,000 usable bases on chr1, 1,000 on chr2: half each, within sampling noise
    share = np.mean([a.chrom == "chr1" for a in alleles])
    assert 0.45 < share < 0.55
    # ALTs uniform over the three other bases; sorted by (FASTA order, position)
    shifts = np.array([("ACGT".index(a.alt) - "ACGT".index(a.ref)) % 4 for a in alleles])
    assert all(abs(np.mean(shifts == k) - 1 / 3) < 0.04 for k in (1, 2, 3))
    assert [(a.chrom, a.start) for a in alleles] == sorted((a.chrom, a.start) for a in alleles)


def test_a_genome_of_n_cannot_give_a_null(tmp_path):
    from epiformer_cli.errors import InputFileError

    genome = Genome(write_fasta(tmp_path / "n.fa", {"chr1": "N" * 2000}))
    with pytest.raises(InputFileError, match="cannot draw a null"):
        draw_null_snvs(genome, 10, seed=0)


# ---- end to end ------------------------------------------------------------------------------
def test_calibrated_columns_follow_from_the_null_file(files, tmp_path):
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], range(2_001, 38_000, 1_777))
    out = tmp_path / "s.tsv"
    summary = run(files, vcf, out, null_path=tmp_path / "null.tsv.gz")
    assert summary.statuses == {"ok": 21}
    scores = read(out)
    assert list(scores.columns[-5:]) == list(CALIBRATED)
    # the key line and the closing checksum line are comments: the rest is a plain TSV
    null = pd.read_csv(tmp_path / "null.tsv.gz", sep="\t", comment="#", na_values=["NA"], keep_default_na=False)
    assert len(null) == 200 * 3 and (null["status"] == "ok").all()
    assert gzip.open(tmp_path / "null.tsv.gz").read().splitlines()[-1].startswith(b"#epiformer-crc32 ")
    # every p-value and quantile recomputed by hand from the two files, exactly but for printing them
    # with 6 significant digits (one count more or less moves a p-value by 1/201 = 5e-3)
    def printed(value):
        return pytest.approx(value, rel=0, abs=float_tolerance(value, dtype="%.6g"))

    for row in scores.itertuples():
        n = null[null["track"] == row.track]
        assert row.diff_p == printed((1 + (n["diff"].abs() >= abs(row.diff)).sum()) / 201)
        assert row.max_abs_p == printed((1 + (n["max_abs"] >= row.max_abs).sum()) / 201)
        assert row.ref_quantile == printed((n["ref_sum"] <= row.ref_sum).mean())
    # the null file is the TSV of its SNVs scored as an input would be
    key = read_null_key(tmp_path / "null.tsv.gz")
    assert key["size"] == 200 and key["seed"] == 0 and key["scoring"]["score_bins"] == 5
    as_vcf = tmp_path / "nullsnvs.vcf"
    as_vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                      + "".join(f"{r.chrom}\t{r.pos}\t{r.id}\t{r.ref}\t{r.alt}\t.\t.\t.\n"
                                for r in null.drop_duplicates(["id"]).itertuples()))
    run(files, as_vcf, tmp_path / "again.tsv", null_size=0)
    again = read(tmp_path / "again.tsv")
    # batched otherwise than the null's chunks: float32 rounding through the network, then printed
    bounds = score_bounds(files["model"], again.to_dict("records"), null.to_dict("records"))
    low = 1 + np.minimum(null["ref_sum"], null["alt_sum"])
    bounds_of = dict(bounds, log2fc=2 * bounds["ref_sum"] / low / np.log(2))
    for effect in EFFECTS:
        tol = np.broadcast_to(bounds_of[effect], len(null))
        assert all(printed_close(x, y, t) for x, y, t in zip(again[effect], null[effect], tol)), effect


def test_null_file_is_reused_and_a_mismatch_refused(files, tmp_path, caplog):
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [3_001, 9_001])
    null = tmp_path / "null.tsv.gz"
    run(files, vcf, tmp_path / "a.tsv", null_path=null)
    made = null.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        run(files, vcf, tmp_path / "b.tsv", null_path=null, force=False)
    assert "reusing the null of 200 SNVs" in caplog.text and null.stat().st_mtime_ns == made
    assert read(tmp_path / "a.tsv").equals(read(tmp_path / "b.tsv"))
    # a subset of the null's tracks is served by it
    run(files, vcf, tmp_path / "c.tsv", null_path=null, tracks=["glia"], force=False)
    assert null.stat().st_mtime_ns == made
    for change, named in (({"seed": 1}, "--seed: 0 in the null, 1 now"),
                          ({"score_bins": 3}, "--score-bins: 5 in the null, 3 now"),
                          ({"null_size": 300}, "--null-size: 200 in the null, 300 now"),
                          ({"rc_average": False}, "--no-rc-average: the null has it on, this run off")):
        with pytest.raises(UsageError, match=f"already holds a null made with other options \\({named}\\): "):
            run(files, vcf, tmp_path / "d.tsv", null_path=null, force=False, **change)
    assert null.stat().st_mtime_ns == made and not (tmp_path / "d.tsv").exists()
    # --force replaces it
    run(files, vcf, tmp_path / "d.tsv", null_path=null, seed=1)
    assert read_null_key(null)["seed"] == 1
    # not a null file at all
    (tmp_path / "other.tsv").write_text("chrom\tpos\n")
    with pytest.raises(UsageError, match="is not an epiformer null file"):
        run(files, vcf, tmp_path / "e.tsv", null_path=tmp_path / "other.tsv", force=False)


def test_a_killed_null_resumes_to_the_same_file(files, tmp_path, monkeypatch):
    from epiformer_cli.runs.parts import PartedOutput

    monkeypatch.setattr(score_null, "NULL_CHUNK", 50)
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [5_001])
    run(files, vcf, tmp_path / "whole.tsv", null_path=tmp_path / "whole.null.tsv")
    real_write, calls = PartedOutput.write, []

    def dying_write(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after two of the four parts
        calls.append(args[0])
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(PartedOutput, "write", dying_write)
    null = tmp_path / "cut.null.tsv"
    with pytest.raises(KeyboardInterrupt):
        run(files, vcf, tmp_path / "cut.tsv", null_path=null)
    assert not null.exists() and len(list((tmp_path / "cut.null.tsv.parts").glob("chunk-*.part"))) == 2
    monkeypatch.setattr(PartedOutput, "write", real_write)
    scored = []
    monkeypatch.setattr(PartedOutput, "write", lambda self, *a, **k: (scored.append(a[0]), real_write(self, *a, **k)))
    run(files, vcf, tmp_path / "cut.tsv", null_path=null, force=False)
    assert sorted(scored) == [0, 2, 3]  # the null's two missing parts, then the input's one chunk
    assert null.read_bytes() == (tmp_path / "whole.null.tsv").read_bytes()
    assert not (tmp_path / "cut.null.tsv.parts").exists()
    assert (tmp_path / "cut.tsv").read_bytes() == (tmp_path / "whole.tsv").read_bytes()


def cached_nulls(folder):
    """The null files of the null cache in ``folder`` (an EPIFORMER_CACHE_DIR)."""
    return sorted((folder / "nulls").glob("null-*.tsv.gz"))


def test_shards_share_the_null_and_give_the_unsharded_file(files, tmp_path, monkeypatch):
    monkeypatch.setattr(score_null, "NULL_CHUNK", 50)
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], range(1_001, 39_000, 997))
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "cache-whole"))
    run(files, vcf, tmp_path / "whole.tsv", chunk_size=7)
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "cache-shards"))  # the shards score their own
    for shard in ("1/2", "2/2"):  # one after the other, as a throttled SLURM array runs them
        run(files, vcf, tmp_path / "sharded.tsv", chunk_size=7, shard=shard, force=False)
    assert (tmp_path / "sharded.tsv").read_bytes() == (tmp_path / "whole.tsv").read_bytes()
    (whole,), (sharded,) = cached_nulls(tmp_path / "cache-whole"), cached_nulls(tmp_path / "cache-shards")
    assert whole.name == sharded.name and gzip.open(sharded).read() == gzip.open(whole).read()


def test_calibrated_fields_in_the_vcf_and_standard_output(files, tmp_path):
    import io

    import pysam

    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001, 12_001, 30_001])
    null = tmp_path / "null.tsv.gz"
    run(files, vcf, tmp_path / "s.tsv", null_path=null)
    run(files, vcf, tmp_path / "s.vcf", null_path=null, out_format="vcf", force=False)
    text = io.StringIO()
    run(files, vcf, "-", null_path=null, stdout=text, force=False)
    tsv = read(tmp_path / "s.tsv")
    piped = pd.read_csv(io.StringIO(text.getvalue()), sep="\t", dtype={"chrom": str, "id": str, "flags": str},
                        na_values=["NA"], keep_default_na=False)
    pd.testing.assert_frame_equal(tsv, piped)
    with pysam.VariantFile(str(tmp_path / "s.vcf")) as vf:
        header = str(vf.header)
        assert '##epiformer_null={"size":200,"seed":0' in header
        assert "EPI_DIFF_P_glia,Number=A,Type=Float,Description=\"epiformer diff_p of track glia per ALT: two-sided" \
            in header
        for rec in vf:
            row = tsv[(tsv["pos"] == rec.pos) & (tsv["track"] == "glia")].iloc[0]
            for column in CALIBRATED:
                # the TSV and the VCF each print 6 significant digits; a VCF Float is a float32 on the way
                x = row[column]
                tol = float_tolerance(abs(x), dtype="%.6g") + float_tolerance(abs(x))
                assert rec.info[f"EPI_{column.upper()}_glia"][0] == pytest.approx(x, rel=0, abs=tol)


def test_without_a_null_there_are_no_calibrated_columns_and_null_options_are_refused(files, tmp_path):
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    run(files, vcf, tmp_path / "s.tsv", null_size=0)
    assert "diff_p" not in read(tmp_path / "s.tsv").columns
    assert not list(tmp_path.glob("*.null.*"))
    with pytest.raises(UsageError, match="--plots needs a null"):
        ScoreOptions(null_size=0, plots="p")
    with pytest.raises(UsageError, match="--null-size must be 0 .* or at least 100"):
        ScoreOptions(null_size=50)


def test_cli_plots_and_refusals_in_one_line(files, tmp_path, monkeypatch):
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "cache"))
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], range(2_001, 38_000, 3_001))
    base = ["score-variants", str(vcf), "--fasta", str(files["fasta"]), "--cons", str(files["cons"]),
            "--model", str(files["model"]), "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "s.tsv"), "--null-size", "200",
                                      "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    for name in ("qq.png", "diff_vs_null.png", "top_variants.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    (cached,) = cached_nulls(tmp_path / "cache")
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "t.tsv"), "--null-size", "200", "--seed", "5",
                                      "--null", str(cached)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "(--seed: 0 in the null, 5 now)" in lines[0] and "--force" in lines[0]
    assert not (tmp_path / "t.tsv").exists()
    result = CliRunner().invoke(app, [*base, "--null-size", "20"])
    assert result.exit_code == 2 and "--null-size must be 0" in result.output


def test_random_snvs_get_uniform_p_values(files, tmp_path):
    """Calibration: SNVs drawn like the null (another seed) get diff_p near uniform."""
    null = tmp_path / "null.tsv.gz"
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    run(files, vcf, tmp_path / "s.tsv", null_path=null, null_size=400)
    other_draw = draw_null_snvs(Genome(files["fasta"]), 400, seed=99)
    as_vcf = tmp_path / "random.vcf"
    as_vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                      + "".join(r.line for r in other_draw))
    run(files, as_vcf, tmp_path / "r.tsv", null_path=null, null_size=400, force=False)
    p = read(tmp_path / "r.tsv")["diff_p"].to_numpy()
    assert 0.05 < np.mean(p < 0.2) < 0.35  # 0.2 expected; loose band for 400 x 3 correlated rows
    assert 0.35 < np.median(p) < 0.65


def test_plot_data_reads_the_same_values_from_tsv_and_vcf_outputs(files, tmp_path):
    """The plots come from the written output: TSV (plain or gzipped), VCF or BCF give one dataset."""
    from epiformer_cli.variants.plot_data import PlotCollector

    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001, 12_001, 30_001, 33_001])
    null = tmp_path / "null.tsv.gz"
    tracks = ["neuron", "glia", "astro"]
    collected = {}
    for name in ("s.tsv", "s.tsv.gz", "s.vcf", "s.bcf"):
        run(files, vcf, tmp_path / name, null_path=null, force=False)
        collector = PlotCollector(tracks, "vcf" if ".vcf" in name or ".bcf" in name else "tsv")
        collector.feed_file(tmp_path / name)
        data, top = collector.plot_inputs(read_null(null))
        collected[name] = ([(d.track, d.diff.tolist(), d.diff_p.tolist()) for d in data],
                           [(t.label, t.track) for t in top])
    assert all(len(d[1]) == 4 for d in collected["s.tsv"][0])
    for name in ("s.tsv.gz", "s.vcf", "s.bcf"):
        assert collected[name] == collected["s.tsv"], name
    top = collected["s.tsv"][1]
    assert len(top) == 12 and top[0][0].startswith("chr1:") and " v" in top[0][0]


def test_two_processes_at_once_score_each_part_of_the_null_once(files, tmp_path, monkeypatch):
    """Two shards started together (threads here; the claims are flocks on separate open files, so
    they exclude each other as two processes' would): every part of the null is scored once, by
    whichever claimed it, and both end with the unsharded output."""
    import threading
    import time

    from epiformer_cli.runs.parts import PartedOutput

    monkeypatch.setattr(score_null, "NULL_CHUNK", 50)
    monkeypatch.setattr(score_null, "POLL_SECONDS", 0.05)
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], range(1_001, 39_000, 1_997))
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "cache-whole"))
    run(files, vcf, tmp_path / "whole.tsv", chunk_size=5, null_size=400)
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "cache-both"))  # both shards find no null
    real_write, written, lock = PartedOutput.write, [], threading.Lock()

    def counting_write(self, index, *args, **kwargs):
        with lock:
            written.append((self.folder.name, index, threading.current_thread().name, time.monotonic()))
        return real_write(self, index, *args, **kwargs)

    monkeypatch.setattr(PartedOutput, "write", counting_write)
    errors = []

    def shard(spec):
        try:
            run(files, vcf, tmp_path / "both.tsv", chunk_size=5, null_size=400, shard=spec, force=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(spec,)) for spec in ("1/2", "2/2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    null_parts = sorted(w[1] for w in written if w[0].startswith("null-") and w[0].endswith(".tsv.gz.parts"))
    assert null_parts == list(range(8))  # each of the 8 parts once
    assert (tmp_path / "both.tsv").read_bytes() == (tmp_path / "whole.tsv").read_bytes()
    assert not list(tmp_path.glob("*.parts")) and not list((tmp_path / "cache-both" / "nulls").glob("*.parts"))
