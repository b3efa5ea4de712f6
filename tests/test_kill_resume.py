"""Interrupted commands, as real processes: SIGKILL, SIGINT (Ctrl-C) and SIGTERM part-way through
`prepare`, `train`, `predict` and `score-variants`.

A kill leaves nothing under a real output name; the same command (train: with --resume) then
finishes with exactly what an uninterrupted run writes. SIGINT and SIGTERM stop cleanly: exit 130
and 143, one line on stderr saying how to resume, no traceback, no process left behind (DataLoader
workers included), also when the signal lands in a checkpoint write or a run dies while assembling
its output. Also the exit codes of score-variants for records that only get a status (0) and under
--strict (1), resumed parts included.

Every signal is sent only once the job has made visible progress (a finished chunk, chromosome,
part or checkpoint), and the exit status proves it arrived before the job finished: a job that
outruns the test fails it instead of turning it into a no-op.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from tests.helpers import read_tsv, score

from tests.process_runs import (  # noqa: F401 (fixtures)
    N_CHROMS,
    PREDICT_CHROMS,
    TRAIN_STEPS,
    VCF_HEADER,
    assert_clean_stop,
    assert_killed,
    assert_same_bigwigs,
    assert_same_store,
    assert_same_training,
    checkpoint,
    genome,
    hidden_temporaries,
    one_thread,
    predict_args,
    predicted,
    prepare_args,
    runs,
    score_args,
    scored,
    store,
    train_args,
    trained,
    vcf,
)


# ---- prepare ---------------------------------------------------------------------------------
def _done_chromosomes(out: Path) -> int:
    done = out.parent / f".{out.name}.partial" / "done"
    return len(list(done.glob("*.json"))) if done.is_dir() else 0


def test_prepare_sigkilled_resumes_to_the_same_store(genome, store, tmp_path, runs):
    out = tmp_path / "store"
    run = runs(prepare_args(genome, out), tmp_path / "1.err")
    run.wait_for(lambda: _done_chromosomes(out) >= 1, "the first finished chromosome")
    assert_killed(run.signal(signal.SIGKILL))
    assert not out.exists()  # the store appears only when complete
    done = _done_chromosomes(out)
    assert 1 <= done < N_CHROMS
    runs(prepare_args(genome, out), tmp_path / "2.err").finish()
    assert_same_store(store, out)
    assert not (tmp_path / ".store.partial").exists()


def test_prepare_sigint_and_sigterm_stop_cleanly_and_resume(genome, store, tmp_path, runs):
    out = tmp_path / "store"
    first = runs(prepare_args(genome, out), tmp_path / "1.err")
    first.wait_for(lambda: _done_chromosomes(out) >= 1, "the first finished chromosome")
    assert_clean_stop(first, first.signal(signal.SIGINT, group=True), signal.SIGINT)
    assert not out.exists()
    done = _done_chromosomes(out)
    second = runs(prepare_args(genome, out), tmp_path / "2.err")
    second.wait_for(lambda: _done_chromosomes(out) > done, "a chromosome more than the first run")
    assert_clean_stop(second, second.signal(signal.SIGTERM), signal.SIGTERM)
    assert not out.exists() and _done_chromosomes(out) < N_CHROMS
    runs(prepare_args(genome, out), tmp_path / "3.err").finish()
    assert_same_store(store, out)


# ---- predict ---------------------------------------------------------------------------------
def _chunks_done(out: Path) -> int:
    chunks = out.with_name(f".{out.name}.store") / "chunks"
    return len(list(chunks.rglob("*.npy"))) if chunks.is_dir() else 0


def _assert_no_bigwigs(out: Path) -> None:
    assert not list(out.parent.glob(f"{out.stem}*.bw")), "a bigWig exists under its real name"


def test_predict_sigkilled_resumes_to_the_same_bigwigs(genome, predicted, tmp_path, runs):
    out = tmp_path / "p.bw"
    run = runs(predict_args(genome, out), tmp_path / "1.err")
    run.wait_for(lambda: _chunks_done(out) >= 1, "the first finished chunk")
    assert_killed(run.signal(signal.SIGKILL))
    _assert_no_bigwigs(out)
    done = _chunks_done(out)
    assert 1 <= done < 2 * len(PREDICT_CHROMS)
    text = runs(predict_args(genome, out), tmp_path / "2.err", quiet=False).finish()
    assert f"{done} already done" in text  # only the missing chunks were computed
    assert_same_bigwigs(predicted, out)
    assert not hidden_temporaries(tmp_path)  # what the killed run was writing was cleaned up


def test_predict_sigint_and_sigterm_stop_cleanly_and_resume(genome, predicted, tmp_path, runs):
    out = tmp_path / "p.bw"
    first = runs(predict_args(genome, out), tmp_path / "1.err")
    first.wait_for(lambda: _chunks_done(out) >= 1, "the first finished chunk")
    assert_clean_stop(first, first.signal(signal.SIGINT, group=True), signal.SIGINT)
    _assert_no_bigwigs(out)
    assert not hidden_temporaries(tmp_path)  # the writer thread finished or removed its file
    done = _chunks_done(out)
    second = runs(predict_args(genome, out), tmp_path / "2.err")
    second.wait_for(lambda: _chunks_done(out) > done, "a chunk more than the first run")
    assert_clean_stop(second, second.signal(signal.SIGTERM), signal.SIGTERM)
    _assert_no_bigwigs(out)
    assert not hidden_temporaries(tmp_path)
    done = _chunks_done(out)
    assert done < 2 * len(PREDICT_CHROMS)
    text = runs(predict_args(genome, out), tmp_path / "3.err", quiet=False).finish()
    assert f"{done} already done" in text
    assert_same_bigwigs(predicted, out)


# ---- score-variants --------------------------------------------------------------------------
# The VCF comes on standard input, a few records at a time: the run cannot finish before the
# test closes it, so every signal lands part-way by construction.
def _parts(out: Path) -> int:
    folder = out.with_name(out.name + ".parts")
    return len(list(folder.glob("chunk-*.part"))) if folder.is_dir() else 0


def test_score_variants_sigkilled_resumes_to_the_same_rows(genome, vcf, scored, tmp_path, runs):
    out = tmp_path / "s.tsv"
    run = runs(score_args(genome, out), tmp_path / "1.err", stdin=subprocess.PIPE)
    run.feed(VCF_HEADER + "".join(vcf["records"][:4]))
    run.wait_for(lambda: _parts(out) >= 3, "three finished chunks")
    assert_killed(run.signal(signal.SIGKILL))
    assert not out.exists()
    done = _parts(out)
    assert 3 <= done <= 4
    again = runs(score_args(genome, out), tmp_path / "2.err", stdin=subprocess.PIPE)
    again.finish(vcf["text"])
    assert read_tsv(out) == scored
    assert not out.with_name(out.name + ".parts").exists()


def test_score_variants_killed_while_scoring_its_null_resumes_it(genome, vcf, tmp_path, runs):
    """The genome-wide null is scored in parts of 500 SNVs: a run SIGKILLed after the first part
    resumes from it, to the same null file and the same calibrated rows."""
    common = dict(vcf=vcf["path"], fasta=genome["fasta"], cons=genome["cons"], model=genome["variant_model"],
                  device="cpu", chunk_size=1, null_size=1000)
    score(**common, out=tmp_path / "whole.tsv", null_path=tmp_path / "whole.null.tsv")
    out, null = tmp_path / "s.tsv", tmp_path / "s.null.tsv"
    args = [*score_args(genome, out, vcf_arg=str(vcf["path"])), "--null-size", "1000", "--null", str(null)]
    run = runs(args, tmp_path / "1.err")
    run.wait_for(lambda: _parts(null) >= 1, "a finished part of the null")
    assert_killed(run.signal(signal.SIGKILL))
    assert not null.exists() and not out.exists() and _parts(null) == 1
    again = runs(args, tmp_path / "2.err", quiet=False).finish()
    assert "resuming" in again
    assert null.read_bytes() == (tmp_path / "whole.null.tsv").read_bytes()
    assert out.read_bytes() == (tmp_path / "whole.tsv").read_bytes()
    assert not null.with_name(null.name + ".parts").exists()


def test_score_variants_sigint_and_sigterm_stop_cleanly_and_resume(genome, vcf, scored, tmp_path, runs):
    """On two threads the tiny model's strands run in lanes (inference/lanes.py): a signal must stop
    them too (a lane left computing in torch's C++ code at exit aborted the process: exit -6)."""
    out = tmp_path / "s.tsv"
    parts = out.with_name(out.name + ".parts")
    first = runs(score_args(genome, out) + ["--threads", "2"], tmp_path / "1.err", stdin=subprocess.PIPE)
    first.feed(VCF_HEADER + "".join(vcf["records"][:3]))
    first.wait_for(lambda: _parts(out) >= 2, "two finished chunks")
    assert_clean_stop(first, first.signal(signal.SIGINT, group=True), signal.SIGINT)
    assert not out.exists() and not hidden_temporaries(tmp_path)
    done = _parts(out)
    second = runs(score_args(genome, out) + ["--threads", "2"], tmp_path / "2.err", stdin=subprocess.PIPE)
    second.feed(VCF_HEADER + "".join(vcf["records"][:8]))
    second.wait_for(lambda: _parts(out) >= done + 3, "three chunks more than the first run")
    assert_clean_stop(second, second.signal(signal.SIGTERM), signal.SIGTERM)
    assert not out.exists() and not hidden_temporaries(tmp_path) and parts.is_dir()
    runs(score_args(genome, out), tmp_path / "3.err", stdin=subprocess.PIPE).finish(vcf["text"])
    assert read_tsv(out) == scored
    assert not parts.exists()


def test_score_variants_killed_while_assembling_is_assembled_by_the_next_run(genome, vcf, scored, tmp_path):
    """A run killed while it writes OUT from the parts leaves the assembly lock file behind; the
    next run must still assemble OUT. A live assembler is never raced: a shard finishing while
    another assembles waits for it, and assembles OUT itself if that one dies without doing so."""
    import fcntl
    import threading

    out = tmp_path / "s.tsv"
    kw = dict(vcf=vcf["path"], fasta=genome["fasta"], cons=genome["cons"], model=genome["variant_model"],
              out=out, device="cpu", chunk_size=1)
    assert not score(shard="1/2", **kw).assembled
    lock = out.with_name(out.name + ".parts") / "assemble.lock"
    with open(lock, "a") as held:  # another process is assembling right now ...
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        released = threading.Timer(1.0, lambda: fcntl.flock(held, fcntl.LOCK_UN))  # ... and dies without finishing
        released.start()
        started = time.monotonic()
        assert score(shard="2/2", **kw).assembled
        assert time.monotonic() - started >= 1.0  # it waited for the live holder
        released.join()
    assert read_tsv(out) == scored and not lock.parent.exists()
    # that a killed assembler's lock file (nobody holds it) blocks nothing:
    out.unlink()
    assert not score(shard="1/2", **kw).assembled
    lock.touch()
    assert score(shard="2/2", **kw).assembled and read_tsv(out) == scored


# ---- score-variants exit codes ---------------------------------------------------------------
cli = CliRunner()


def small_vcf(path: Path, records: List[str]) -> Path:
    path.write_text(VCF_HEADER + "".join(records))
    return path


def status_records(vcf, name: str) -> str:
    return next(r for r in vcf["records"] if f"\t{name}\t" in r)


def record_label(record: str) -> str:
    chrom, pos, _, ref, alt = record.split("\t")[:5]
    return f"{chrom}:{pos} {ref}>{alt}"


def test_records_with_only_a_status_exit_0_and_are_counted(genome, vcf, tmp_path):
    good = vcf["records"][:3]
    path = small_vcf(tmp_path / "v.vcf", good + [status_records(vcf, "mismatch"), status_records(vcf, "unknown")])
    out = tmp_path / "s.tsv"
    result = cli.invoke(app, ["-q"] + score_args(genome, out, path))  # -q, as in a pipeline
    assert result.exit_code == 0, result.output
    assert "5 alleles: ok 3, " in result.stderr, result.stderr
    assert result.stderr.startswith("epiformer: warning:") and "2 not scored" in result.stderr
    assert "ref_mismatch 1" in result.stderr and "unknown_chrom 1" in result.stderr
    rows = read_tsv(out)
    assert len(rows) == 5 * 3  # every allele x track, the ones with a status too
    assert {(r["id"], r["status"]) for r in rows if r["status"] != "ok"} == {("mismatch", "ref_mismatch"),
                                                                             ("unknown", "unknown_chrom")}


def assert_strict_failure(result, record: str, out: Path) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("epiformer: error:")]
    assert len(errors) == 1 and record_label(record) in errors[0] and "--strict" in errors[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("first_bad", [False, True], ids=["bad-record-after-finished-chunks", "bad-first-record"])
def test_strict_exits_1_naming_the_record_and_leaves_nothing(genome, vcf, tmp_path, first_bad):
    good, bad = vcf["records"][:3], status_records(vcf, "mismatch")
    path = small_vcf(tmp_path / "v.vcf", [bad] + good if first_bad else good + [bad])
    out = tmp_path / "s.tsv"
    assert_strict_failure(cli.invoke(app, score_args(genome, out, path) + ["--strict"]), bad, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.vcf"]  # no parts folder, no temporary file
    result = cli.invoke(app, score_args(genome, out, small_vcf(tmp_path / "ok.vcf", good)) + ["--strict"])
    assert result.exit_code == 0, result.output
    assert {r["status"] for r in read_tsv(out)} == {"ok"}


def test_strict_refuses_bad_records_in_chunks_resumed_from_an_earlier_run(genome, vcf, tmp_path):
    """Parts left by a killed run without --strict hold rows with a status: --strict must refuse
    them too, not accept them because they were scored earlier."""
    bad = status_records(vcf, "mismatch")
    path = small_vcf(tmp_path / "v.vcf", vcf["records"][:3] + [bad])
    out = tmp_path / "s.tsv"
    # the earlier run finished chunks 1 and 3 of 0-3 (chunks of one record), the bad record's among them
    score(vcf=path, fasta=genome["fasta"], cons=genome["cons"], model=genome["variant_model"],
          out=out, device="cpu", chunk_size=1, shard="2/2", force=False)
    assert not out.exists() and _parts(out) == 2
    assert_strict_failure(cli.invoke(app, score_args(genome, out, path) + ["--strict"]), bad, out)


# ---- train -----------------------------------------------------------------------------------
def _step(run_dir: Path) -> int:
    """The step of the run's last.pt (0 while there is none)."""
    path = run_dir / "last.pt"
    return checkpoint(path)["step"] if path.exists() else 0


def _checkpoint_id(run_dir: Path) -> Optional[int]:
    """Changes with every checkpoint written (each is a new file renamed over last.pt)."""
    try:
        return (run_dir / "last.pt").stat().st_ino
    except FileNotFoundError:
        return None


def _assert_no_final_outputs(run_dir: Path) -> None:
    for name in ("model.pt", "metrics.tsv", "learning_curve.png"):
        assert not (run_dir / name).exists(), f"{name} exists before the run's first validation"


def test_train_sigkilled_resumes_to_the_same_weights(store, trained, tmp_path, runs):
    out = tmp_path / "run"
    run = runs(train_args(store, out, workers=0), tmp_path / "1.err")
    run.wait_for(lambda: (out / "last.pt").exists(), "the first checkpoint")
    assert_killed(run.signal(signal.SIGKILL))
    _assert_no_final_outputs(out)
    step = _step(out)  # a complete checkpoint: written to a temporary name, then renamed
    assert 1 <= step < TRAIN_STEPS
    text = runs(train_args(store, out, workers=0) + ["--resume"], tmp_path / "2.err").finish()
    assert "Traceback" not in text
    assert_same_training(trained, out)
    assert not hidden_temporaries(out)


def test_train_with_a_worker_sigint_and_sigterm_stop_cleanly_and_resume(store, trained, tmp_path, runs):
    """With a DataLoader worker process: Ctrl-C and a scheduler's SIGTERM reach the whole process
    group, `kill PID` only the main process; none leaves a worker behind, hangs or prints a
    traceback. The same seed gives the same weights whatever --workers."""
    out = tmp_path / "run"
    first = runs(train_args(store, out, workers=1), tmp_path / "1.err")
    first.wait_for(lambda: (out / "last.pt").exists(), "the first checkpoint")
    assert_clean_stop(first, first.signal(signal.SIGINT, group=True), signal.SIGINT)
    _assert_no_final_outputs(out)
    assert not hidden_temporaries(out)
    step = _step(out)
    assert 1 <= step < TRAIN_STEPS
    for n, (sig, group) in enumerate([(signal.SIGTERM, True), (signal.SIGTERM, False)], start=2):
        before = _checkpoint_id(out)
        resumed = runs(train_args(store, out, workers=1) + ["--resume"], tmp_path / f"{n}.err")
        resumed.wait_for(lambda: _checkpoint_id(out) != before, "a checkpoint past the previous run's")
        assert_clean_stop(resumed, resumed.signal(sig, group=group), sig)
        _assert_no_final_outputs(out)
        assert not hidden_temporaries(out)
        assert step < _step(out) < TRAIN_STEPS
        step = _step(out)
    runs(train_args(store, out, workers=1) + ["--resume"], tmp_path / "4.err").finish()
    assert_same_training(trained, out)


def test_a_signal_during_a_checkpoint_write_stops_cleanly(tmp_path):
    """torch.save given a Python file calls back into Python for every block; a SIGTERM handled
    inside such a call broke the writer (a bogus RuntimeError, or an abort). The interruption must
    come out as itself, with the previous checkpoint intact and no temporary file left."""
    from epiformer_cli.cli.common import Terminated, _raise_terminated
    from epiformer_cli.training.checkpoint import atomic_save

    path = tmp_path / "last.pt"
    atomic_save({"format_version": 1, "step": 1}, path)
    previous = path.read_bytes()
    new = {"format_version": 1, "step": 2, "w": torch.zeros(16 << 20)}  # 64 MB: tens of ms to write
    handler = signal.signal(signal.SIGALRM, _raise_terminated)
    try:
        for delay in (0.0005, 0.002, 0.005, 0.01, 0.02):
            with pytest.raises(Terminated):
                try:
                    # armed inside: on a loaded machine 0.5 ms can pass before the next line, and a
                    # signal outside pytest.raises stopped the whole test run (a KeyboardInterrupt)
                    signal.setitimer(signal.ITIMER_REAL, delay)
                    atomic_save(new, path)
                    time.sleep(1)  # the save outran the timer: it fires here, and the file is the new one
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
            if path.read_bytes() != previous:
                assert checkpoint(path)["step"] == 2
                atomic_save({"format_version": 1, "step": 1}, path)
    finally:
        signal.signal(signal.SIGALRM, handler)


# ---- explain -----------------------------------------------------------------------------------
EXPLAIN_REGIONS = 30


def explain_args(genome, out: Path, bed: Path) -> List[str]:
    return [str(a) for a in ["explain", "--regions", bed, "--out", out, "--fasta", genome["fasta"], "--cons",
                             genome["cons"], "--model", genome["variant_model"], "--device", "cpu", "--method",
                             "gradient", "--plot", "0"]]


def _explained(out: Path) -> int:
    return len(list((out / "explain.parts").glob("region-*.npz")))


def test_explain_sigkilled_or_interrupted_resumes_to_the_same_files(genome, tmp_path, runs):
    bed = tmp_path / "r.bed"
    bed.write_text("".join(f"chr{i + 1}\t{5_000 + 7 * i}\t{5_012 + 7 * i}\tr{i}\n" for i in range(EXPLAIN_REGIONS)))
    runs(explain_args(genome, tmp_path / "whole", bed), tmp_path / "0.err").finish()
    out = tmp_path / "out"
    first = runs(explain_args(genome, out, bed), tmp_path / "1.err")
    first.wait_for(lambda: _explained(out) >= 2, "two explained regions")
    assert_killed(first.signal(signal.SIGKILL))
    assert not (out / "contrib.npz").exists() and not (out / "explain.json").exists()
    second = runs(explain_args(genome, out, bed), tmp_path / "2.err")
    done = _explained(out)
    second.wait_for(lambda: _explained(out) >= done + 2, "two regions more than the first run")
    assert_clean_stop(second, second.signal(signal.SIGINT, group=True), signal.SIGINT)
    assert not (out / "contrib.npz").exists() and not hidden_temporaries(out / "explain.parts")
    done = _explained(out)
    assert done < EXPLAIN_REGIONS
    text = runs(explain_args(genome, out, bed), tmp_path / "3.err", quiet=False).finish()
    assert f"({done} resumed from an earlier run)" in text
    for name in ("contrib.npz", "regions.tsv", "contrib.neuron.bw", "contrib.astro.bw"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not (out / "explain.parts").exists() and not hidden_temporaries(out)
