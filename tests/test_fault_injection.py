"""Whole commands meeting faults of the machine, as real processes: a file-size limit
(``RLIMIT_FSIZE``, what ``ulimit -f`` sets: the one fault a test can inject without root) landing in
different files, a folder made read-only part-way, damaged pieces in every kind of store, and two
runs on one output at once.

Every fault ends in exit code 1, exactly one stderr line, no traceback and no temporary file;
once the fault is removed, the same command finishes with what an uninterrupted run writes, byte
for byte. The inputs and uninterrupted reference runs are tests/process_runs.py's, shared with
tests/test_kill_resume.py.
"""

from __future__ import annotations

import gzip
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

from tests.helpers import make_read_only, make_writable, unmeasured
from tests.process_runs import (  # noqa: F401 (fixtures)
    PREDICT_CHROMS,
    _environment,
    assert_same_bigwigs,
    assert_same_store,
    assert_same_training,
    genome,
    hidden_temporaries,
    one_thread,
    predict_args,
    predicted,
    prepare_args,
    score_args,
    store,
    train_args,
    trained,
    vcf,
)

TIMEOUT = 300  # far above the real times: a hang (a writer spinning on a failed write) fails the test


def epiformer(args: List[str], limit: Optional[int] = None, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """``python -m epiformer_cli -q ARGS`` with the file-size limit ``limit`` (bytes; None: none)."""
    def preexec() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = _environment() if limit is None else unmeasured(_environment())
    return subprocess.run([sys.executable, "-m", "epiformer_cli", "-q", *map(str, args)], env=env,
                          input=stdin, capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=preexec)


def assert_one_line_fault(result: subprocess.CompletedProcess, folder: Path, *, limit: bool = True,
                          allow_temporaries: bool = False) -> str:
    """Exit 1, one stderr line naming a storage fault, no traceback, no temporaries in ``folder``
    (unless ``allow_temporaries``: then the resumed run must remove them)."""
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("epiformer: error: "), result.stderr
    if limit:
        assert "file size limit exceeded (EFBIG)" in lines[0] or "file-size limit" in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if not allow_temporaries:
        assert hidden_temporaries(folder) == [], hidden_temporaries(folder)
    return lines[0]


def bigwig_bytes(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.parent.glob(f"{out.stem}.*.bw"))}


# ---- predict ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predicted_bytes(genome, tmp_path_factory) -> dict:
    """An uninterrupted predict run as a process: its bigWigs' bytes."""
    out = tmp_path_factory.mktemp("predict-reference") / "pred.bw"
    result = epiformer(predict_args(genome, out))
    assert result.returncode == 0, result.stderr
    return bigwig_bytes(out)


# 2 KB: the store's settings file; 20 KB: a chunk fits, the bigWigs (~30 KB) do not
@pytest.mark.parametrize("limit", [2_000, 20_000])
def test_predict_under_a_file_size_limit_stops_in_one_line_and_resumes(genome, predicted, predicted_bytes,
                                                                        tmp_path, limit):
    out = tmp_path / "pred.bw"
    line = assert_one_line_fault(epiformer(predict_args(genome, out), limit), tmp_path)
    assert "resume" in line or "ulimit" in line
    assert bigwig_bytes(out) == {}
    again = epiformer(predict_args(genome, out))
    assert again.returncode == 0, again.stderr
    assert bigwig_bytes(out) == predicted_bytes
    assert_same_bigwigs(predicted, out)


def _chunk_files(out: Path) -> List[Path]:
    return sorted((out.parent / f".{out.name}.store" / "chunks").rglob("*.npy"))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_prediction_chunk_is_recomputed_with_one_warning(genome, predicted_bytes, tmp_path, damage):
    out = tmp_path / "pred.bw"
    assert epiformer(predict_args(genome, out)).returncode == 0
    chunk = _chunk_files(out)[3]
    data = chunk.read_bytes()
    chunk.write_bytes(data[:200] + bytes([data[200] ^ 0x10]) + data[201:] if damage == "flip" else data[:150])
    # export alone cannot recompute: refused naming the chunk and the fix
    refused = epiformer(["export-bigwig", out.parent / f".{out.name}.store", "--out", tmp_path / "x.bw"])
    line = assert_one_line_fault(refused, tmp_path, limit=False)
    assert str(chunk) in line and "run the same predict command again" in line
    assert not list(tmp_path.glob("x*.bw"))
    # predict checks its chunks when it resumes: the damaged one is computed again
    again = epiformer(predict_args(genome, out))
    assert again.returncode == 0, again.stderr
    warnings = again.stderr.splitlines()
    assert len(warnings) == 1 and str(chunk) in warnings[0] and "failed its checksum" in warnings[0]
    assert bigwig_bytes(out) == predicted_bytes


def test_two_predict_runs_on_one_output_share_the_chunks(genome, predicted_bytes, tmp_path):
    out = tmp_path / "pred.bw"
    env = _environment()
    cmd = [sys.executable, "-m", "epiformer_cli", "-v", *map(str, predict_args(genome, out))]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], errs
    assert bigwig_bytes(out) == predicted_bytes
    computed = [int(line.split(" chunk(s) computed")[0].rsplit(" ", 1)[1]) for err in errs
                for line in err.splitlines() if "chunk(s) computed" in line]
    # 16 chunks: each computed once between the two runs (a run started when the other had
    # finished everything computes none)
    assert sum(computed) == 2 * len(PREDICT_CHROMS), errs


# ---- prepare ---------------------------------------------------------------------------------
# 10 KB: under one chromosome's 24 KB array (refused before any work); 30 KB: the arrays fit,
# the finished store's 38 KB manifest does not
@pytest.mark.parametrize("limit, early", [(10_000, True), (30_000, False)])
def test_prepare_under_a_file_size_limit_stops_in_one_line_and_resumes(genome, store, tmp_path, limit, early):
    out = tmp_path / "store"
    line = assert_one_line_fault(epiformer(prepare_args(genome, out), limit), tmp_path)
    if early:
        assert "writes a file of 24.0 KB (24,576 bytes), over this shell's file-size limit" in line
    assert not out.exists()
    again = epiformer(prepare_args(genome, out))
    assert again.returncode == 0, again.stderr
    assert_same_store(store, out)


def test_two_prepare_runs_on_one_output_share_the_chromosomes(genome, store, tmp_path):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "epiformer_cli", "-v", *map(str, prepare_args(genome, out))]
    procs = [subprocess.Popen(cmd, env=_environment(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert_same_store(store, out)
    assert not (tmp_path / ".store.partial").exists()
    assert sum("was finished by another run of the same command" in err or "up to date" in err for err in errs) == 1, errs


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_training_store_is_refused_at_training_start(genome, tmp_path, damage):
    out = tmp_path / "store"
    assert epiformer(prepare_args(genome, out)).returncode == 0
    target = out / "targets" / "5.f16" if damage == "flip" else out / "seq" / "9.u8"
    data = target.read_bytes()
    target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:] if damage == "flip" else data[:-64])
    result = epiformer(["train", "--data", out, "--out", tmp_path / "run", "--preset", "tiny", "--device", "cpu",
                        "--max-steps", "1"])
    line = assert_one_line_fault(result, tmp_path, limit=False)
    assert str(target) in line and "epiformer prepare ... --force" in line
    assert ("fails its checksum" in line) if damage == "flip" else ("truncated" in line)
    assert not (tmp_path / "run").exists()


# ---- score-variants --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored_bytes(genome, vcf, tmp_path_factory) -> dict:
    """Uninterrupted score-variants runs as processes: without a null, and with a null of 300 SNVs."""
    folder = tmp_path_factory.mktemp("score-reference")
    out = {}
    for name, extra in (("plain.tsv", []),
                        ("null.tsv.gz", ["--null-size", "300", "--null", str(folder / "null.tsv.gz.null.tsv.gz")])):
        result = epiformer([*score_args(genome, folder / name, vcf["path"]), *extra])
        assert result.returncode == 0, result.stderr
        out[name] = (folder / name).read_bytes()
        if extra:
            out["null"] = gzip.open(folder / f"{name}.null.tsv.gz").read()
    return out


# 300 bytes: the first part; 3 KB: the parts fit, the assembled output (~9 KB) does not
@pytest.mark.parametrize("limit", [300, 3_000])
def test_score_variants_under_a_file_size_limit_stops_in_one_line_and_resumes(genome, vcf, scored_bytes, tmp_path,
                                                                               limit):
    out = tmp_path / "plain.tsv"
    assert_one_line_fault(epiformer(score_args(genome, out, vcf["path"]), limit), tmp_path)
    assert not out.exists()
    again = epiformer(score_args(genome, out, vcf["path"]))
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == scored_bytes["plain.tsv"]


@pytest.mark.parametrize("name", ["s.vcf.gz", "s.bcf"])
def test_score_variants_bgzf_and_bcf_outputs_under_a_file_size_limit(genome, vcf, tmp_path, name):
    """htslib's writers say only "Error closing BGZFile object" or fail in bcftools: the fault is
    still named, and the index (.tbi, .csi) appears with the resumed output."""
    (tmp_path / "ref").mkdir()
    reference = tmp_path / "ref" / name
    assert epiformer(score_args(genome, reference, vcf["path"])).returncode == 0
    out = tmp_path / name
    line = assert_one_line_fault(epiformer(score_args(genome, out, vcf["path"]), 2_500), tmp_path)
    assert line.startswith(f"epiformer: error: cannot write {out}: file size limit exceeded (EFBIG)"), line
    again = epiformer(score_args(genome, out, vcf["path"]))
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == reference.read_bytes()
    index = ".tbi" if name.endswith(".gz") else ".csi"
    assert out.with_name(name + index).read_bytes() == reference.with_name(name + index).read_bytes()


def test_score_variants_null_under_a_file_size_limit_resumes(genome, vcf, scored_bytes, tmp_path):
    out = tmp_path / "null.tsv.gz"
    args = [*score_args(genome, out, vcf["path"]), "--null-size", "300", "--null", str(tmp_path / "null.tsv.gz.null.tsv.gz")]
    assert_one_line_fault(epiformer(args, 20_000), tmp_path)  # the null's parts fit, the null file does not
    again = epiformer(args)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == scored_bytes["null.tsv.gz"]
    assert gzip.open(tmp_path / "null.tsv.gz.null.tsv.gz").read() == scored_bytes["null"]


def _damage_part(parts: Path, index: int, damage: str) -> Path:
    part = sorted(parts.glob("chunk-*.part"))[index]
    data = part.read_bytes()
    part.write_bytes(data[:40] + bytes([data[40] ^ 0x04]) + data[41:] if damage == "flip" else data[:-30])
    return part


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_score_part_is_scored_again_with_one_warning(genome, vcf, scored_bytes, tmp_path, damage):
    out = tmp_path / "plain.tsv"
    args = [*score_args(genome, out, vcf["path"]), "--shard", "1/2"]
    assert epiformer(args).returncode == 0
    part = _damage_part(tmp_path / "plain.tsv.parts", 2, damage)
    args[-1] = "2/2"  # the second shard resumes nothing of its own, and assembles: the damaged part is found
    again = epiformer(args)
    assert again.returncode == 0, again.stderr
    warnings = [w for w in again.stderr.splitlines() if "checksum" in w or "damaged" in w]
    assert len(warnings) == 1 and str(part) in warnings[0] and "failed its checksum" in warnings[0], again.stderr
    assert out.read_bytes() == scored_bytes["plain.tsv"]


def test_a_damaged_null_file_is_scored_again_with_one_warning(genome, vcf, scored_bytes, tmp_path):
    out = tmp_path / "null.tsv.gz"
    null = tmp_path / "null.tsv.gz.null.tsv.gz"
    args = [*score_args(genome, out, vcf["path"]), "--null-size", "300", "--null", str(null)]
    assert epiformer(args).returncode == 0
    text = bytearray(gzip.open(null).read())
    middle = next(i for i in range(len(text) // 2, len(text)) if chr(text[i]).isdigit())
    text[middle] = ord("7") if text[middle] != ord("7") else ord("3")
    with gzip.open(null, "wb") as handle:  # a changed value, recompressed: only the checksum line can tell
        handle.write(bytes(text))
    out.unlink()
    again = epiformer(args)
    assert again.returncode == 0, again.stderr
    warnings = [w for w in again.stderr.splitlines() if "checksum" in w or "damaged" in w]
    assert len(warnings) == 1 and str(null) in warnings[0] and "scoring the null again" in warnings[0], again.stderr
    assert out.read_bytes() == scored_bytes["null.tsv.gz"]
    assert gzip.open(null).read() == scored_bytes["null"]


def test_two_score_variants_runs_on_one_output_share_the_chunks(genome, vcf, scored_bytes, tmp_path):
    out = tmp_path / "plain.tsv"
    cmd = [sys.executable, "-m", "epiformer_cli", "-v", *map(str, score_args(genome, out, vcf["path"]))]
    procs = [subprocess.Popen(cmd, env=_environment(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert out.read_bytes() == scored_bytes["plain.tsv"]
    # one chunk a record: each scored exactly once between the two runs
    scored = [int(line.split("scored ")[1].split(" chunk")[0]) for err in errs for line in err.splitlines()
              if line.startswith("epiformer: scored ")]
    assert len(scored) == 2 and sum(scored) == len(vcf["records"]), errs


# ---- a folder made read-only part-way --------------------------------------------------------
def test_predict_into_a_folder_made_read_only_part_way_stops_and_resumes(genome, predicted_bytes, tmp_path):
    out = tmp_path / "pred.bw"
    cmd = [sys.executable, "-m", "epiformer_cli", "-q", *map(str, predict_args(genome, out))]
    proc = subprocess.Popen(cmd, env=_environment(), stderr=subprocess.PIPE, text=True)
    chunks = out.parent / f".{out.name}.store" / "chunks"
    deadline = time.monotonic() + TIMEOUT
    while not (chunks.is_dir() and list(chunks.rglob("*.npy"))) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    locked = [chunks, *sorted(p for p in chunks.iterdir() if p.is_dir())]
    hows = [make_read_only(folder) for folder in locked + [tmp_path]]
    if None in hows:
        proc.kill()
        pytest.skip("no way to make a folder read-only here (not root, no chattr)")
    try:
        err = proc.communicate(timeout=TIMEOUT)[1]
    finally:
        for folder, how in zip(locked + [tmp_path], hows):
            make_writable(folder, how)
    result = subprocess.CompletedProcess(cmd, proc.returncode, "", err)
    # a chunk's temporary file begun just before the folder turned read-only cannot be renamed nor
    # removed by the failing run: the resumed run must clean it up
    line = assert_one_line_fault(result, tmp_path, limit=False, allow_temporaries=True)
    assert "cannot write" in line and ("operation not permitted" in line or "permission denied" in line)
    again = epiformer(predict_args(genome, out))
    assert again.returncode == 0, again.stderr
    assert bigwig_bytes(out) == predicted_bytes
    assert hidden_temporaries(tmp_path) == [], hidden_temporaries(tmp_path)


# ---- train -----------------------------------------------------------------------------------
def test_train_under_a_file_size_limit_stops_in_one_line_and_resumes(store, trained, tmp_path):
    run = tmp_path / "run"
    # 200 KB: the run's small files fit, a checkpoint of the tiny model does not
    line = assert_one_line_fault(epiformer(train_args(store, run, workers=0), 200_000), tmp_path)
    assert f"cannot write {run / 'last.pt'}: file size limit exceeded (EFBIG)" in line, line
    assert not (run / "last.pt").exists()
    # the first checkpoint failed, so there is nothing to --resume: the same command starts over
    again = epiformer(train_args(store, run, workers=0))
    assert again.returncode == 0, again.stderr
    assert_same_training(trained, run)


# ---- explain ---------------------------------------------------------------------------------
EXPLAIN_BED = "chr1\t1000\t1300\tr1\nchr2\t5000\t5400\tr2\nchr3\t100\t300\tr3\n"


def explain_args(genome, bed: Path, out: Path) -> List[str]:
    return ["explain", "--regions", bed, "--fasta", genome["fasta"], "--cons", genome["cons"], "--model",
            genome["model"], "--device", "cpu", "--method", "gradient", "--out", out]


def explain_outputs(out: Path) -> dict:
    """The explain folder's data files (the plots are checked to exist: their pixels are matplotlib's)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.suffix != ".png" and p.name != "explain.json"}
    files["plots"] = sorted(p.name for p in (out / "plots").glob("*.png"))
    return files


@pytest.fixture(scope="module")
def explained(genome, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("explain-reference")
    (folder / "r.bed").write_text(EXPLAIN_BED)
    result = epiformer(explain_args(genome, folder / "r.bed", folder / "out"))
    assert result.returncode == 0, result.stderr
    return explain_outputs(folder / "out")


# 30 KB: the pieces (~20 KB) and bigWigs fit, contrib.npz (40 KB) does not; 60 KB: a plot does not
@pytest.mark.parametrize("limit", [30_000, 60_000])
def test_explain_under_a_file_size_limit_resumes_and_recomputes_a_damaged_piece(genome, explained, tmp_path, limit):
    (tmp_path / "r.bed").write_text(EXPLAIN_BED)
    out = tmp_path / "out"
    assert_one_line_fault(epiformer(explain_args(genome, tmp_path / "r.bed", out), limit), tmp_path)
    pieces = sorted((out / "explain.parts").rglob("*.npz")) if (out / "explain.parts").is_dir() else []
    assert len(pieces) == 3, sorted(out.rglob("*"))
    data = pieces[1].read_bytes()
    pieces[1].write_bytes(data[:300] + bytes([data[300] ^ 0x20]) + data[301:])
    again = epiformer(explain_args(genome, tmp_path / "r.bed", out))
    assert again.returncode == 0, again.stderr
    warnings = [w for w in again.stderr.splitlines() if "checksum" in w]
    assert len(warnings) == 1 and str(pieces[1]) in warnings[0], again.stderr
    assert explain_outputs(out) == explained


def test_two_explain_runs_on_one_folder_share_the_regions(genome, explained, tmp_path):
    (tmp_path / "r.bed").write_text(EXPLAIN_BED)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "epiformer_cli", "-q", *map(str, explain_args(genome, tmp_path / "r.bed", out))]
    procs = [subprocess.Popen(cmd, env=_environment(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert explain_outputs(out) == explained and not (out / "explain.parts").exists()
