"""score-variants: windows, indel re-alignment, effects, statuses, formats, resume and shards."""

import subprocess
import sys

import numpy as np
import pysam
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.variants.effects import EFFECTS, effects
from epiformer_cli.variants.windows import alt_index_of_ref, build_alt, realign, score_bin_range, window_start
from tests.helpers import HEADER, PUBLISHED_TINY, other, read_tsv, run_job, score, score_files, status_vcf, write_bigwig, write_fasta
from tests.helpers import printed_close, score_bounds

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("sv"))


# ---- windows and re-alignment -----------------------------------------------------------------
def test_grid_window_is_the_one_with_the_nearest_centre():
    seq_len, crop = 16_384, 2048
    out_bp = seq_len - 2 * crop
    for pos in [0, 1, out_bp // 2, out_bp - 1, out_bp, 5 * out_bp + 77]:
        start = window_start("grid", pos, seq_len, crop)
        centres = [(i * out_bp - crop) + seq_len / 2 for i in range(8)]
        nearest = min(range(8), key=lambda i: abs(centres[i] - (pos + 0.5)))
        assert start == nearest * out_bp - crop
        assert start + crop <= pos < start + crop + out_bp
    c = window_start("centered", 10_000, seq_len, crop)
    assert 10_000 - c == seq_len // 2 + 64


def test_score_bins_centre_and_stay_inside():
    assert score_bin_range(2048 + 128 * 10 + 5, 5, 96, 2048) == (8, 13)
    assert score_bin_range(2048 + 3, 5, 96, 2048) == (0, 5)
    assert score_bin_range(2048 + 128 * 95, 5, 96, 2048) == (91, 96)
    assert score_bin_range(2048 + 128 * 10 + 100, 2, 96, 2048) == (10, 12)


def test_build_alt_keeps_length_and_conservation():
    codes = np.arange(20, dtype=np.uint8) % 4
    cons = np.arange(20, dtype=np.float32)
    alt, alt_cons = build_alt(codes, cons, 5, 3, np.array([1], np.uint8), 12)  # deletion of 2 bp
    assert len(alt) == 12 and list(alt_cons) == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]
    alt, alt_cons = build_alt(codes, cons, 5, 1, np.array([1, 2, 3], np.uint8), 12)  # insertion of 2 bp
    assert list(alt[5:8]) == [1, 2, 3] and list(alt_cons) == [0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9]


def test_indel_realignment_on_a_constructed_example():
    crop, out_bins, bin_bp = 256, 8, 128
    seq_len = 2 * crop + out_bins * bin_bp
    pred = np.arange(out_bins, dtype=np.float32)[None]  # alt bin b predicts the value b
    # a 256 bp (two-bin) deletion starting at a bin edge: downstream ref bins read alt bins 2 earlier
    offset = crop + 3 * bin_bp
    got = realign(pred, offset, 1 + 256, 1, seq_len, crop)
    assert got[0, :3].tolist() == [0, 1, 2]
    assert got[0, 6:].tolist() == [4, 5]
    # an insertion of one bin: downstream ref bins read the alt bin 1 later (clamped at the end)
    got = realign(pred, offset, 1, 1 + 128, seq_len, crop)
    assert got[0, :3].tolist() == [0, 1, 2] and got[0, 4:].tolist() == [5, 6, 7, 7]
    assert got[0, 3] == pytest.approx((1 * 3 + 127 * 4) / 128)  # the anchor base stays, the rest shift
    assert realign(pred, offset, 3, 3, seq_len, crop) is pred
    assert alt_index_of_ref(10, 4, 1, np.array([9, 10, 11, 13, 14])).tolist() == [9, 10, 10, 10, 11]


def test_effect_definitions():
    ref = np.array([[1.0, 2.0, 3.0, 4.0]])
    alt = np.array([[1.0, 4.0, 3.0, 1.0]])
    e = dict(zip(EFFECTS, effects(ref, alt, 1, 3)[0]))
    assert e["ref_sum"] == 5 and e["alt_sum"] == 7 and e["diff"] == 2
    assert e["log2fc"] == pytest.approx(np.log2(8 / 6))
    assert e["sad"] == -1 and e["max_abs"] == 3 and e["l2"] == pytest.approx(np.sqrt(13))
    swapped = dict(zip(EFFECTS, effects(alt, ref, 1, 3)[0]))
    assert swapped["diff"] == -e["diff"] and swapped["sad"] == -e["sad"]


# ---- scoring ---------------------------------------------------------------------------------
def snv_vcf(path, seqs, positions, chrom="chr1"):
    body = "".join(f"{chrom}\t{p + 1}\tv{i}\t{seqs[chrom][p]}\t{other(seqs[chrom][p], 1 + i % 3)}\t.\t.\t.\n"
                   for i, p in enumerate(positions))
    path.write_text(HEADER + body)
    return path


@pytest.fixture(scope="module")
def published_files(tmp_path_factory):
    """The same inputs with a model of the published family (as import-model writes it)."""
    return score_files(tmp_path_factory.mktemp("sv_published"), **PUBLISHED_TINY)


@pytest.mark.parametrize("rc, mode, family", [(True, "grid", "epiformer"), (False, "centered", "epiformer"),
                                              (True, "grid", "published")])
def test_fast_path_equals_plain_path(files, published_files, tmp_path, rc, mode, family):
    files = published_files if family == "published" else files
    seqs = files["seqs"]
    # chromosome start and end, grid-window output edges (12,288 bp apart), random places
    positions = [0, 5, 12_287, 12_288, 24_575, 39_999, 30_000, 30_001] + [int(p) for p in np.random.default_rng(1).integers(0, 40_000, 6)]
    vcf = snv_vcf(tmp_path / "v.vcf", seqs, positions)
    vcf.write_text(vcf.read_text() + f"chr1\t30001\tdel\t{seqs['chr1'][30000:30004]}\t{seqs['chr1'][30000]}\t.\t.\t.\n")
    _, fast = run_job(files, vcf, out=tmp_path / "fast.tsv", rc_average=rc, window_mode=mode)
    _, plain = run_job(files, vcf, out=tmp_path / "plain.tsv", rc_average=rc, window_mode=mode, fast=False)
    assert len(fast) == len(plain) == 3 * (len(positions) + 1)
    # the incremental tower and batched trunk vs full passes: float32 rounding through the network
    # (diff within 8e-4..1.1e-3 here, seen 8.5e-6); half the diffs exceed 1.4e-2, which a wrong bin or
    # allele would move by as much
    bounds = score_bounds(files["model"], fast, plain)
    for a, b in zip(fast, plain):
        assert a["status"] == b["status"] == "ok"
        for e in ("ref_sum", "alt_sum", "diff", "sad", "max_abs", "l2"):
            assert printed_close(a[e], b[e], bounds[e]), (e, a[e], b[e], bounds[e])
    assert max(abs(float(r["diff"])) for r in fast) > 1e-3


def test_swapping_ref_and_alt_flips_diff(files, tmp_path):
    seqs = dict(files["seqs"])
    p = 20_000
    ref, alt = seqs["chr1"][p], other(seqs["chr1"][p])
    swapped = dict(seqs)
    swapped["chr1"] = seqs["chr1"][:p] + alt + seqs["chr1"][p + 1:]
    fasta2 = write_fasta(tmp_path / "g2.fa", swapped)
    (tmp_path / "a.vcf").write_text(HEADER + f"chr1\t{p + 1}\t.\t{ref}\t{alt}\t.\t.\t.\n")
    (tmp_path / "b.vcf").write_text(HEADER + f"chr1\t{p + 1}\t.\t{alt}\t{ref}\t.\t.\t.\n")
    _, forward = run_job(files, tmp_path / "a.vcf", out=tmp_path / "a.tsv")
    files2 = dict(files, fasta=fasta2)
    _, backward = run_job(files2, tmp_path / "b.vcf", out=tmp_path / "b.tsv")
    # each run computes the reference by a full pass and the alternative on the fast path: float32
    # rounding through the network apart (a sign error moves diff by 2 |diff|)
    bounds = score_bounds(files["model"], forward, backward)
    for f, b in zip(forward, backward):
        assert printed_close(f["diff"], -float(b["diff"]), bounds["diff"]), (f["diff"], b["diff"])
        assert printed_close(f["ref_sum"], b["alt_sum"], bounds["ref_sum"]), (f["ref_sum"], b["alt_sum"])


def test_ref_equal_to_alt_has_zero_effect(files, tmp_path):
    seqs = files["seqs"]
    p = 1234
    (tmp_path / "v.vcf").write_text(HEADER + f"chr1\t{p + 1}\t.\t{seqs['chr1'][p]}\t{seqs['chr1'][p]}\t.\t.\t.\n")
    for fast in (True, False):
        _, rows = run_job(files, tmp_path / "v.vcf", out=tmp_path / f"{fast}.tsv", fast=fast)
        for row in rows:
            assert all(float(row[e]) == 0.0 for e in ("diff", "sad", "max_abs", "l2", "log2fc"))



def test_every_status_on_a_constructed_vcf(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    summary, rows = run_job(files, vcf)
    by_id = {}
    for row in rows:
        by_id.setdefault((row["id"], row["alt"]), set()).add((row["status"], row["flags"]))
    status = {k[0]: next(iter(v))[0] for k, v in by_id.items()}
    flags = {k[0]: next(iter(v))[1] for k, v in by_id.items()}
    assert status == {"snv": "ok", "multi": "ok", "del": "ok", "ins": "ok", "mismatch": "ref_mismatch",
                      "unknown": "unknown_chrom", "sym": "symbolic_allele", "star": "symbolic_allele",
                      "long": "too_long", "edge": "ok", "iupac": "invalid_allele", "noalt": "no_alt", "dup": "ok"}
    assert sum(1 for k in by_id if k[0] == "multi") == 2
    assert "alias" in flags["snv"] and "edge_padded" in flags["snv"] and "duplicate" in flags["dup"]
    assert "edge_padded" in flags["edge"] and "lowercase" in flags["edge"]
    assert len(rows) == 3 * 14  # every allele x track, nothing dropped
    assert all(rows[i]["ref_sum"] == "NA" for i in range(len(rows)) if rows[i]["status"] != "ok")
    assert summary.statuses["ok"] == 7 and summary.statuses["symbolic_allele"] == 2


def test_on_ref_mismatch_policies(files, tmp_path):
    from epiformer_cli.errors import InputFileError

    s = files["seqs"]["chr1"]
    (tmp_path / "v.vcf").write_text(HEADER + f"chr1\t501\tmm\t{other(s[500])}\t{s[500]}\t.\t.\t.\n")
    with pytest.raises(InputFileError, match="does not match the FASTA"):
        run_job(files, tmp_path / "v.vcf", out=tmp_path / "e.tsv", on_ref_mismatch="error")
    _, rows = run_job(files, tmp_path / "v.vcf", out=tmp_path / "u.tsv", on_ref_mismatch="use-vcf-ref")
    assert rows[0]["status"] == "ok" and "vcf_ref" in rows[0]["flags"]


def test_vcf_output_reread_by_pysam(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    out = tmp_path / "out.vcf"
    run_job(files, vcf, out=out, out_format="vcf", tracks=["glia", "neuron"])
    with pysam.VariantFile(str(out)) as reread:
        meta = str(reread.header)
        assert "EPI_DIFF_astro" not in reread.header.info and "EPI_L2_glia" in reread.header.info
        assert "##epiformer_tracks=glia,neuron" in meta and "##epiformer_version=" in meta
        records = list(reread)
    assert len(records) == 13
    multi = records[1]
    assert multi.info["EPI_STATUS"] == ("ok", "ok") and len(multi.info["EPI_DIFF_glia"]) == 2
    assert records[4].info["EPI_STATUS"] == ("ref_mismatch",) and records[4].info["EPI_DIFF_neuron"] == (None,)


def test_batch_size_and_chunk_size_do_not_change_results(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    _, a = run_job(files, vcf, out=tmp_path / "a.tsv", batch_size=1, chunk_size=1)
    _, b = run_job(files, vcf, out=tmp_path / "b.tsv", batch_size=7, chunk_size=100)
    # The chunks group the alleles into Transformer batches (other matrix shapes, other kernel
    # blockings), so the numbers agree within float32 rounding through the network, not bitwise
    # (tests/test_score_batching.py checks the predictions themselves).
    numbers = ("ref_sum", "alt_sum", "diff", "log2fc", "sad", "max_abs", "l2")
    assert len(a) == len(b)
    bounds = score_bounds(files["model"], a, b)
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in numbers} == {k: v for k, v in y.items() if k not in numbers}
        if x["status"] != "ok":
            assert all(x[e] == y[e] for e in numbers)
            continue
        for e in ("ref_sum", "alt_sum", "diff", "sad", "max_abs", "l2"):
            assert printed_close(x[e], y[e], bounds[e]), (e, x[e], y[e])
        # log2fc = log2((alt_sum + 1) / (ref_sum + 1)): each sum's bound over (sum + 1), over ln 2
        low = 1 + min(abs(float(x["ref_sum"])), abs(float(x["alt_sum"])))
        assert printed_close(x["log2fc"], y["log2fc"], 2 * bounds["ref_sum"] / low / np.log(2))


def test_shards_and_resume_give_the_same_file(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    run_job(files, vcf, out=tmp_path / "whole.tsv", chunk_size=3)
    whole = (tmp_path / "whole.tsv").read_text()
    out = tmp_path / "sharded.tsv"
    kw = dict(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], device="cpu",
              chunk_size=3, out=out)
    first = score(shard="1/2", **kw)
    assert not first.assembled and not out.exists() and (tmp_path / "sharded.tsv.parts").is_dir()
    second = score(shard="2/2", **kw)
    assert second.assembled and out.read_text() == whole
    assert not (tmp_path / "sharded.tsv.parts").exists()
    # a "killed" run: shard 1's parts exist; the unsharded command resumes them
    out.unlink()
    score(shard="1/2", **kw)
    resumed = score(**kw)
    assert resumed.resumed_chunks == first.scored_chunks and out.read_text() == whole
    score(shard="1/2", **kw)
    with pytest.raises(UsageError, match=r"made with other options \(--score-bins: 5 in the earlier run, 3 now\).*--force"):
        score(**dict(kw, score_bins=3, force=False))
    forced = score(**dict(kw, score_bins=3, force=True))  # --force discards the other run's parts
    assert forced.assembled and forced.resumed_chunks == 0


# ---- the command line ------------------------------------------------------------------------
def test_cli_stdin_to_stdout_with_env_only(files, tmp_path, monkeypatch):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    env = {"EPIFORMER_FASTA": str(files["fasta"]), "EPIFORMER_CONS": str(files["cons"]),
           "EPIFORMER_MODEL": str(files["model"])}
    result = runner.invoke(app, ["score-variants", "--null-size", "0", "-", "--device", "cpu"], input=vcf.read_text(), env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("chrom\tpos\tid\tref\talt\ttrack\tstatus") and len(lines) == 1 + 3 * 14
    by_file = runner.invoke(app, ["score-variants", "--null-size", "0", str(vcf), "--device", "cpu"], env=env)
    assert by_file.stdout == result.stdout
    proc = subprocess.run([sys.executable, "-m", "epiformer_cli", "score-variants", "--null-size", "0", "-", "--device", "cpu"],
                          input=vcf.read_text(), capture_output=True, text=True, env={**__import__("os").environ, **env})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == result.stdout
    assert "14 alleles: ok 7" in proc.stderr


def test_cli_errors_are_one_line(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    base = ["score-variants", "--null-size", "0", str(vcf), "--fasta", str(files["fasta"]), "--cons", str(files["cons"]),
            "--model", str(files["model"]), "--device", "cpu"]
    bad = runner.invoke(app, base + ["--tracks", "nosuch"])
    assert bad.exit_code == 2 and "--tracks nosuch: not in model" in bad.output
    (tmp_path / "nohead.vcf").write_text("chr1\t10\t.\tA\tC\t.\t.\t.\n")
    no_header = runner.invoke(app, ["score-variants", "--null-size", "0", str(tmp_path / "nohead.vcf"), "--fasta", str(files["fasta"]),
                                    "--cons", str(files["cons"]), "--model", str(files["model"])])
    assert no_header.exit_code == 1 and "##fileformat" in no_header.output
    assert runner.invoke(app, base + ["--window-mode", "nope"]).exit_code == 2
    assert runner.invoke(app, base + ["--shard", "3/2", "--out", str(tmp_path / "x.tsv")]).exit_code == 2
    malformed = tmp_path / "bad.vcf"
    malformed.write_text(HEADER + "chr1\t10\t.\tA\tC\t.\t.\t.\nchr1\tabc\t.\tA\tC\t.\t.\t.\n")
    res = runner.invoke(app, ["score-variants", "--null-size", "0", str(malformed), "--fasta", str(files["fasta"]),
                              "--cons", str(files["cons"]), "--model", str(files["model"]), "--out", str(tmp_path / "m.tsv")])
    assert res.exit_code == 1 and "malformed VCF line after record 1" in res.output
    mismatch = tmp_path / "contigs.vcf"
    mismatch.write_text("##fileformat=VCFv4.2\n##contig=<ID=scaffold9,length=10>\n"
                        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    res = runner.invoke(app, ["score-variants", "--null-size", "0", str(mismatch), "--fasta", str(files["fasta"]), "--cons", str(files["cons"]),
                              "--model", str(files["model"])])
    assert res.exit_code == 1 and "no chromosome names in common" in res.output


# ---- the same inputs get the same rules as predict ------------------------------------------------
def test_model_with_conservation_needs_cons_or_an_explicit_no_cons(files, tmp_path):
    """Without --cons a conservation model used to score every variant on all-zero conservation,
    exit 0, no word: it is refused like predict refuses it; --no-cons says so once and scores."""
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    base = ["score-variants", "--null-size", "0", str(vcf), "--fasta", str(files["fasta"]), "--model", str(files["model"]),
            "--device", "cpu", "--out", str(tmp_path / "s.tsv")]
    refused = runner.invoke(app, base)
    lines = refused.output.strip().splitlines()
    assert refused.exit_code == 2 and len(lines) == 1 and "uses conservation" in lines[0] and "--no-cons" in lines[0]
    assert not list(tmp_path.glob("s.tsv*"))
    zero = runner.invoke(app, base + ["--no-cons"])
    assert zero.exit_code == 0, zero.output
    assert sum("--no-cons" in line for line in zero.output.splitlines()) == 1
    with_cons = runner.invoke(app, base[:-2] + ["--cons", str(files["cons"]), "--out", str(tmp_path / "c.tsv")])
    assert with_cons.exit_code == 0, with_cons.output
    diffs = lambda path: [r["diff"] for r in read_tsv(path) if r["status"] == "ok"]  # noqa: E731
    assert diffs(tmp_path / "s.tsv") != diffs(tmp_path / "c.tsv")  # conservation really enters


def test_chromosome_without_conservation_is_warned_once(files, tmp_path):
    """predict warned about chromosomes the conservation bigWig lacks and score-variants did not."""
    partial = write_bigwig(tmp_path / "chr1only.bw", {"chr1": 40_000}, {"chr1": [(0, 100, 0.5)]})
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    result = runner.invoke(app, ["score-variants", "--null-size", "0", str(vcf), "--fasta", str(files["fasta"]), "--cons", str(partial),
                                 "--model", str(files["model"]), "--device", "cpu", "--out", str(tmp_path / "s.tsv")])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "no conservation for" in line]
    assert len(warned) == 1 and "chr2" in warned[0] and "read as 0" in warned[0]


def test_slurm_array_tasks_share_the_chunks_and_the_last_one_assembles(files, tmp_path):
    """Each array task runs the same command with the same --out (as predict's tasks do); every task
    scores its own chunks and the last to finish writes the file, equal to a run without an array."""
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    whole, _ = run_job(files, vcf, out=tmp_path / "whole.tsv", chunk_size=2)
    out = tmp_path / "array.tsv"
    summaries = []
    for task in (3, 1, 2):  # tasks finish in any order
        environ = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}
        summaries.append(score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=out,
                               device="cpu", chunk_size=2, environ=environ, force=False))
    assert [s.assembled for s in summaries] == [False, False, True]
    assert [s.scored_chunks for s in summaries] == [2, 3, 2]  # 7 chunks of 2 records, round-robin
    assert out.read_text() == (tmp_path / "whole.tsv").read_text()
    assert not (tmp_path / "array.tsv.parts").exists()
    # --shard 1/1 inside an array scores everything here; standard output never shards
    environ = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}
    alone = score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=tmp_path / "one.tsv",
                  device="cpu", chunk_size=2, environ=environ, shard="1/1")
    assert alone.assembled and alone.scored_chunks == 7
    import io
    sink = io.StringIO()
    piped = score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out="-", stdout=sink,
                  device="cpu", chunk_size=2, environ=environ)
    assert piped.scored_chunks == 7 and sink.getvalue() == out.read_text()
    with pytest.raises(UsageError, match="--shard needs --out FILE"):
        score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out="-", stdout=sink,
              device="cpu", shard="1/2")


def test_tsv_provenance_sidecar_and_vcf_header_hold_the_options(files, tmp_path):
    import json

    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    run_job(files, vcf, out=tmp_path / "s.tsv", score_bins=3, tracks=["glia"])
    sidecar = json.loads((tmp_path / "s.tsv.options.json").read_text())
    assert sidecar["options"]["score_bins"] == 3 and sidecar["options"]["inference"]["tracks"] == ["glia"]
    assert sidecar["tracks"] == ["glia"] and sidecar["inputs"]["vcf"] == str(vcf)
    run_job(files, vcf, out=tmp_path / "s.vcf", out_format="vcf", score_bins=3)
    header = [line for line in (tmp_path / "s.vcf").read_text().splitlines() if line.startswith("##epiformer_options=")]
    assert len(header) == 1 and json.loads(header[0].split("=", 1)[1])["score_bins"] == 3
