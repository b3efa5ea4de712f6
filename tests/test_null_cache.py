"""score-variants' null cache, its time estimate and its clustered draw (issue 25).

The null is computed once per model, genome, conservation and scoring options and kept in the
cache folder (here each test's own EPIFORMER_CACHE_DIR, tests/conftest.py); every later run reuses
it, two runs at once share it through the claims, an entry that was not made for the run is never
used. Before scoring, the first windows are timed and a long null is said, or refused."""

from __future__ import annotations

import collections
import gzip
import io
import json
import logging
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.io.genome import Genome
from epiformer_cli.io.identity import cache_dir
from epiformer_cli.variants import null_run
from epiformer_cli.variants.null import draw_null_snvs, null_key, read_null_key
from epiformer_cli.variants.null_run import NullPace, human_duration
from tests.helpers import other, score, score_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("null-cache"))


def snv_vcf(path, seqs, positions):
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"chr1\t{p}\tv{p}\t{seqs['chr1'][p - 1]}\t{other(seqs['chr1'][p - 1])}\t.\t.\t." for p in positions]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(files, vcf, out, **kw):
    kw.setdefault("null_size", 200)
    return score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=out, device="cpu", **kw)


def nulls():
    return sorted((cache_dir() / "nulls").glob("null-*.tsv.gz"))


def count_scored_parts(monkeypatch):
    """Record every null part written (the folder's name and the part's index)."""
    from epiformer_cli.runs.parts import PartedOutput

    real, written = PartedOutput.write, []

    def counting(self, index, *args, **kwargs):
        if self.folder.name.startswith("null-"):
            written.append(index)
        return real(self, index, *args, **kwargs)

    monkeypatch.setattr(PartedOutput, "write", counting)
    return written


# ---- the cache ----------------------------------------------------------------------------------
def test_a_second_vcf_and_a_pipe_reuse_the_cached_null(files, tmp_path, monkeypatch, caplog):
    written = count_scored_parts(monkeypatch)
    first = snv_vcf(tmp_path / "a.vcf", files["seqs"], [4_001, 12_001])
    second = snv_vcf(tmp_path / "b.vcf", files["seqs"], [4_001, 30_001])
    run(files, first, tmp_path / "a.tsv")
    assert written == [0] and len(nulls()) == 1
    assert not list(tmp_path.glob("*.null.*"))  # nothing beside the output any more
    text = io.StringIO()
    with caplog.at_level(logging.INFO):
        run(files, second, "-", stdout=text, force=False)
        run(files, second, tmp_path / "b.tsv", force=False)
    assert written == [0]  # neither the pipe nor the file scored the null again
    assert sum("reusing the null of 200 SNVs from the cache" in r.getMessage() for r in caplog.records) == 2
    rows_a = {l.split("\t")[1] + l.split("\t")[5]: l for l in (tmp_path / "a.tsv").read_text().splitlines()[1:]}
    rows_b = {l.split("\t")[1] + l.split("\t")[5]: l for l in text.getvalue().splitlines()[1:]}
    shared = [k for k in rows_a if k.startswith("4001")]
    assert len(shared) == 3 and all(rows_a[k] == rows_b[k] for k in shared)  # same null, same calibrated values
    assert text.getvalue() == (tmp_path / "b.tsv").read_text()


def test_a_track_subset_fills_the_cache_for_every_track(files, tmp_path, monkeypatch):
    written = count_scored_parts(monkeypatch)
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001, 12_001])
    run(files, vcf, tmp_path / "glia.tsv", tracks=["glia"])
    (entry,) = nulls()
    assert {line.split("\t")[5] for line in gzip.open(entry, "rt").read().splitlines()[2:-1]} == {"neuron", "glia", "astro"}
    run(files, vcf, tmp_path / "all.tsv", force=False)
    assert written == [0]  # the run of every track reused it
    # the same null serves both: p-values equal up to one rank of it (the head of one track or of
    # three rounds alike, within float32)
    glia = pd.read_csv(tmp_path / "glia.tsv", sep="\t", na_values=["NA"])
    every = pd.read_csv(tmp_path / "all.tsv", sep="\t", na_values=["NA"]).query("track == 'glia'")
    assert len(glia) == len(every) == 2
    np.testing.assert_allclose(glia["diff_p"].to_numpy(), every["diff_p"].to_numpy(), rtol=0, atol=1 / 201 + 1e-9)


def test_an_entry_not_made_for_this_run_is_never_used(files, tmp_path, monkeypatch, caplog):
    written = count_scored_parts(monkeypatch)
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001, 12_001])
    run(files, vcf, tmp_path / "fresh.tsv")
    (entry,) = nulls()
    fresh_null, fresh = gzip.open(entry).read(), (tmp_path / "fresh.tsv").read_bytes()
    other_entry = tmp_path / "seed5"
    run(files, vcf, tmp_path / "seed5.tsv", seed=5, force=False)
    (seed5,) = [p for p in nulls() if p != entry]
    seed5.rename(other_entry)

    # 1. another null's file at this run's name (its first line is its own key): scored again
    entry.write_bytes(other_entry.read_bytes())
    assert read_null_key(entry)["seed"] == 5
    with caplog.at_level(logging.WARNING):
        run(files, vcf, tmp_path / "again.tsv", force=False)
    assert any("was not made for this run" in r.getMessage() and str(entry) in r.getMessage() for r in caplog.records)
    assert (tmp_path / "again.tsv").read_bytes() == fresh and gzip.open(entry).read() == fresh_null

    # 2. a value changed and recompressed (only the checksum line can tell): scored again
    text = bytearray(gzip.open(entry).read())
    middle = next(i for i in range(len(text) // 2, len(text)) if chr(text[i]).isdigit())
    text[middle] = ord("7") if text[middle] != ord("7") else ord("3")
    with gzip.open(entry, "wb") as handle:
        handle.write(bytes(text))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run(files, vcf, tmp_path / "again.tsv")
    assert any("scoring the null again" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "again.tsv").read_bytes() == fresh and gzip.open(entry).read() == fresh_null
    assert len(written) == 4  # fresh, seed 5, and each of the two damaged entries: one part each


def test_a_model_changed_in_place_gets_a_null_of_its_own(tmp_path, monkeypatch):
    """The key holds the model's SHA-256, not its path: new weights at the same path never meet
    the old null."""
    from tests.helpers import save_model, sensitive_model

    files = score_files(tmp_path)
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    run(files, vcf, tmp_path / "old.tsv")
    (old,) = nulls()
    model = sensitive_model(seed=7)
    save_model(files["model"], model, model.config, ["neuron", "glia", "astro"])
    run(files, vcf, tmp_path / "new.tsv")
    assert len(nulls()) == 2 and old in nulls()
    (new,) = [p for p in nulls() if p != old]
    assert read_null_key(new)["inputs"]["model_sha256"] != read_null_key(old)["inputs"]["model_sha256"]
    assert gzip.open(new).read() != gzip.open(old).read()


def test_two_runs_at_once_share_one_null_one_computes_the_other_waits(files, tmp_path, monkeypatch, caplog):
    """Run A holds the null's only part; run B, started meanwhile, waits for it (it does not score
    it again), then both write the same calibrated rows: one to a file, one to a pipe."""
    from epiformer_cli.runs.parts import PartedOutput

    monkeypatch.setattr(null_run, "POLL_SECONDS", 0.05)
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001, 12_001])
    real, written, b_waits = PartedOutput.write, [], threading.Event()

    def slow_write(self, index, *args, **kwargs):
        if self.folder.name.startswith("null-"):
            written.append(threading.current_thread().name)
            assert b_waits.wait(120), "run B never waited"
        return real(self, index, *args, **kwargs)

    class Waiting(logging.Handler):
        def emit(self, record):
            if "waiting for another process scoring" in record.getMessage():
                b_waits.set()

    monkeypatch.setattr(PartedOutput, "write", slow_write)
    handler = Waiting(level=logging.INFO)
    logging.getLogger("epiformer_cli").addHandler(handler)
    piped, errors = io.StringIO(), []

    def start(name, out, **kw):
        def body():
            try:
                run(files, vcf, out, force=False, **kw)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        thread = threading.Thread(target=body, name=name)
        thread.start()
        return thread

    try:
        with caplog.at_level(logging.INFO):
            a = start("A", tmp_path / "a.tsv")
            while not written and a.is_alive():
                a.join(0.05)
            b = start("B", "-", stdout=piped)
            a.join(300)
            b.join(300)
    finally:
        logging.getLogger("epiformer_cli").removeHandler(handler)
    assert not errors, errors
    assert written == ["A"] and b_waits.is_set()
    assert piped.getvalue() == (tmp_path / "a.tsv").read_text()
    assert len(nulls()) == 1 and not list((cache_dir() / "nulls").glob("*.parts"))


@pytest.mark.slow
def test_two_processes_at_once_score_the_null_once(files, tmp_path):
    """Two real commands started together on one cache folder (a file output and a pipe): the null's
    one part is scored by one of them, and both print the same rows."""
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001, 12_001])
    base = [sys.executable, "-m", "epiformer_cli", "-v", "score-variants", str(vcf), "--fasta", str(files["fasta"]),
            "--cons", str(files["cons"]), "--model", str(files["model"]), "--device", "cpu", "--null-size", "300"]
    procs = [subprocess.Popen([*base, "--out", str(tmp_path / "a.tsv")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True),
             subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[1][0] == (tmp_path / "a.tsv").read_text()
    scored = sum(o[1].count("scored part 1 of the null") for o in outs)
    assert scored == 1, [o[1][-3000:] for o in outs]
    assert len(nulls()) == 1


def test_an_unwritable_cache_keeps_the_null_in_memory(files, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(blocker))
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    with caplog.at_level(logging.WARNING):
        run(files, vcf, tmp_path / "s.tsv")
    (line,) = [r.getMessage() for r in caplog.records if "null cache" in r.getMessage()]
    assert "cannot write the null cache" in line and "EPIFORMER_CACHE_DIR" in line and "--null FILE" in line
    assert "diff_p" in (tmp_path / "s.tsv").read_text().splitlines()[0]


def test_cache_list_and_clear(files, tmp_path):
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    run(files, vcf, tmp_path / "s.tsv")
    (entry,) = nulls()
    busy = cache_dir() / "nulls" / "null-0123456789abcdef0123456789abcdef.tsv.gz.parts"
    (busy / "claims").mkdir(parents=True)
    lock = busy / "claims" / "chunk-0000000.lock"
    lock.write_text("")
    listed = CliRunner().invoke(app, ["cache", "list"])
    assert listed.exit_code == 0, listed.output
    line = next(l for l in listed.stdout.splitlines() if entry.name in l)
    assert "ready" in line and "200 SNVs (seed 0, 10 a window)" in line
    assert "interrupted" in next(l for l in listed.stdout.splitlines() if busy.name in l)
    as_json = json.loads(CliRunner().invoke(app, ["cache", "list", "--json", "--kind", "nulls"]).stdout)
    assert {e["state"] for e in as_json["entries"]} == {"ready", "interrupted"}
    assert next(e for e in as_json["entries"] if e["path"] == str(entry))["snvs"] == 200

    import fcntl

    with open(lock, "a") as held:  # a live run scoring that null
        fcntl.flock(held, fcntl.LOCK_EX)
        assert "being scored" in CliRunner().invoke(app, ["cache", "list"]).stdout
        cleared = CliRunner().invoke(app, ["cache", "clear", "--kind", "nulls"])
        assert cleared.exit_code == 0
        assert "removed 1 entry" in cleared.stderr and "kept 1 null(s) being scored" in cleared.stderr
    assert not entry.exists() and busy.is_dir()
    assert CliRunner().invoke(app, ["cache", "clear"]).exit_code == 0
    assert not busy.exists()
    bad = CliRunner().invoke(app, ["cache", "clear", "--kind", "everything"])
    assert bad.exit_code == 2 and bad.stderr.startswith("epiformer: error: unknown cache kind everything")


# ---- the estimate ---------------------------------------------------------------------------------
def test_the_pace_says_nothing_under_a_minute_and_refuses_over_the_limit(caplog):
    quick = NullPace(to_score=1_000, processes=1, limit_minutes=60, size=1_000, device="this CPU")
    with caplog.at_level(logging.INFO):
        quick.record(100, 5.0)  # 900 left at 20/s: 45 s
    assert quick.decided and quick.estimate == pytest.approx(45.0) and not caplog.records

    said = NullPace(to_score=10_000, processes=1, limit_minutes=60, size=10_000, device="this CPU")
    said.record(10, 3.0)  # the first group carries set-up: a second one is timed
    assert not said.decided
    with caplog.at_level(logging.INFO):
        said.record(10, 1.0)  # 9,980 left at 10/s: 998 s
    assert said.estimate == pytest.approx(998.0)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("the null: about 17 min more to score 9,980 SNVs on this CPU (10 SNVs/s)")

    shared = NullPace(to_score=10_000, processes=10, limit_minutes=120, size=10_000, device="this CPU")
    shared.record(10, 70.0)  # over a minute alone: decided on it; 9,990 / (1/7 per s) / 10 tasks
    assert shared.estimate == pytest.approx(6993.0)
    with pytest.raises(UsageError) as refused:
        NullPace(to_score=10_000, processes=1, limit_minutes=60, size=10_000, device="this CPU").record(10, 70.0)
    message = str(refused.value)
    assert message.startswith("the null of 10,000 SNVs would take about 19 h 26 min more on this CPU (0.143 SNVs/s)")
    for words in ("--max-null-minutes 60", "lower --null-size", "--null-size 0", "GPU (--device cuda)",
                  "SLURM array", "raise --max-null-minutes"):
        assert words in message
    unlimited = NullPace(to_score=10_000, processes=1, limit_minutes=0, size=10_000, device="this CPU")
    unlimited.record(10, 70.0)
    assert unlimited.decided


@pytest.mark.parametrize("seconds, said", [(45, "45 s"), (600, "10 min"), (3 * 3600 + 1200, "3 h 20 min"),
                                           (7200, "2 h"), (50 * 3600, "2 days 2 h")])
def test_human_duration(seconds, said):
    assert human_duration(seconds) == said


def test_a_slow_null_is_refused_in_one_line_before_it_is_scored(files, tmp_path, monkeypatch):
    """A fake clock: every group of the null seems to take 5,000 s. The run refuses after timing
    it (exit 2, one line) and writes no output and no null."""
    ticks = iter(np.arange(0, 1e9, 5_000.0))
    monkeypatch.setattr(null_run, "clock", lambda: float(next(ticks)))
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    base = ["score-variants", str(vcf), "--fasta", str(files["fasta"]), "--cons", str(files["cons"]),
            "--model", str(files["model"]), "--device", "cpu", "--null-size", "300", "--null-per-window", "1"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "s.tsv")])
    assert result.exit_code == 2, result.output
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert lines[0].startswith("epiformer: scoring a genome-wide null of 300 random SNVs")  # the log: INFO
    assert len(lines) == 2 and lines[1].startswith("epiformer: error: the null of 300 SNVs would take about")
    assert "over --max-null-minutes 60" in lines[1] and "Traceback" not in result.stderr
    assert not (tmp_path / "s.tsv").exists() and not nulls()
    # the same run with the limit raised: said in one line, then scored
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "s.tsv"), "--max-null-minutes", "0"])
    assert result.exit_code == 0, result.output
    assert "the null: about" in result.stderr and len(nulls()) == 1


def test_the_null_progress_moves_by_groups_of_windows(files, tmp_path):
    calls = []
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    run(files, vcf, tmp_path / "s.tsv", null_size=300,
        null_progress=lambda n=1, total=None, **_: calls.append((n, total)))
    assert calls[0] == (0, 300) and sum(n for n, _ in calls) == 300
    assert len(calls) > 2  # not one step per part of 500


def test_a_tiny_limit_refuses_with_the_real_clock(files, tmp_path):
    vcf = snv_vcf(tmp_path / "v.vcf", files["seqs"], [4_001])
    with pytest.raises(UsageError, match=r"over --max-null-minutes 1e-09"):
        run(files, vcf, tmp_path / "s.tsv", null_size=300, max_null_minutes=1e-9, null_per_window=1)


def test_bad_limits_and_cluster_sizes_are_one_line(files, tmp_path):
    base = ["score-variants", "x.vcf", "--fasta", str(files["fasta"]), "--model", str(files["model"])]
    for args, words in ((["--max-null-minutes", "-1"], "--max-null-minutes must be 0 (no limit) or more"),
                        (["--null-per-window", "0"], "--null-per-window must be at least 1, got 0")):
        result = CliRunner().invoke(app, [*base, *args])
        assert result.exit_code == 2 and words in result.stderr, result.stderr


# ---- the clustered draw -------------------------------------------------------------------------------
def test_one_snv_a_window_is_the_draw_and_the_key_of_earlier_versions(files):
    genome = Genome(files["fasta"])
    drawn = draw_null_snvs(genome, 300, 0)
    # the first SNVs of seed 0 as version 0.x drew them (git show 9e6ca39:epiformer_cli/variants/null.py)
    assert [(r.alleles[0].chrom, r.alleles[0].pos, r.alleles[0].ref, r.alleles[0].alt) for r in drawn[:4]] == \
        [("chr1", 244, "C", "A"), ("chr1", 506, "T", "A"), ("chr1", 560, "T", "A"), ("chr1", 982, "C", "A")]
    assert "per_window" not in null_key({}, {}, 300, 0, None, per_window=1)
    assert null_key({}, {}, 300, 0, None, per_window=10)["per_window"] == 10


def test_clustered_snvs_share_windows_and_stay_uniform(tmp_path):
    from tests.helpers import write_fasta

    rng = np.random.default_rng(3)
    window = 1_000
    # 40 windows of ACGT with an N-rich stretch: uniform over the usable bases, not over windows
    seq = "".join(rng.choice(list("ACGT"), 40_000))
    seq = seq[:10_000] + "N" * 900 + seq[10_900:]
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": seq}))
    drawn = draw_null_snvs(genome, 20_000, 1, per_window=10, window_bp=window)
    assert len(drawn) == 20_000 and [r.alleles[0].id for r in drawn[:2]] == ["null_1", "null_2"]
    starts = np.array([r.alleles[0].start for r in drawn])
    assert all(seq[s] in "ACGT" and r.alleles[0].ref == seq[s] and r.alleles[0].alt != seq[s]
               for s, r in zip(starts, drawn))
    assert np.all(np.diff(starts) >= 0)
    per_window = collections.Counter(starts // window)
    # the N-rich window has 100 usable bases of 1,000: a tenth of the SNVs of a full one
    full = np.mean([per_window[w] for w in range(40) if w != 10])
    assert per_window[10] / full == pytest.approx(0.1, abs=0.04)
    assert np.std([per_window[w] for w in range(40) if w != 10]) / full < 0.2  # 50 clusters a window
    # within a window, positions are uniform: each tenth of a full window holds a tenth of its SNVs
    tenths = np.bincount((starts[(starts // window) != 10] % window) // 100, minlength=10) / (starts // window != 10).sum()
    assert np.abs(tenths - 0.1).max() < 0.01
    # every cluster of 10 consecutive draws lies in one window (the draw's own order)
    again = draw_null_snvs(genome, 20_000, 1, per_window=10, window_bp=window)
    assert [r.line for r in again] == [r.line for r in drawn]
    with pytest.raises(ValueError, match="window_bp"):
        draw_null_snvs(genome, 100, 1, per_window=10)
