"""Real processes of the real command, shared by the tests that interrupt them
(tests/test_kill_resume.py) and the ones that make the machine fail under them
(tests/test_fault_injection.py): the inputs (a genome of many small chromosomes, its conservation
and targets, two models, a VCF), uninterrupted reference runs, a process runner, and comparisons.

The genome: many small chromosomes, so `prepare` (one resumable step per chromosome, ~10 ms each)
runs long enough to be stopped part-way.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest
import torch

from epiformer_cli.model.modelfile import save_model
from tests.helpers import write_bigwig, write_fasta
from tests.helpers import sensitive_model
from tests.helpers import random_model
from tests.helpers import read_bw
from tests.helpers import other, read_tsv, score

ROOT = Path(__file__).resolve().parents[1]

# The genome: many small chromosomes, so `prepare` (one resumable step per chromosome, ~10 ms
# each) runs long enough to be killed part-way. 24,576 bp = two 12,288 bp output spans of the
# tiny preset: two prediction windows and two 16,384 bp training windows (step 8,192) each.
N_CHROMS = 120
CHROM_BP = 24_576
CHROMS = {f"chr{i + 1}": CHROM_BP for i in range(N_CHROMS)}
TRACKS = ["ASCT", "OPC"]

PREPARE_ARGS = ["--preset", "tiny", "--step", "8192", "--valid-chroms", "chr2", "--test-chroms", "chr3"]
# 16 windows, one chunk each, one window per model call: the first chunk is a small part of the run.
PREDICT_CHROMS = [f"chr{i}" for i in range(1, 9)]
PREDICT_ARGS = ["--chroms", ",".join(PREDICT_CHROMS), "--device", "cpu", "--batch-size", "1",
                "--chunk-windows", "1"]
# 16 optimizer steps of one window, a checkpoint after each; 236 training windows, so the first
# validation (and model.pt) comes at the last step.
TRAIN_STEPS = 16
TRAIN_ARGS = ["--preset", "tiny", "--device", "cpu", "--batch-size", "1", "--max-steps", str(TRAIN_STEPS),
              "--warmup-steps", "2", "--checkpoint-every", "1", "--seed", "7"]
SCORE_ARGS = ["--device", "cpu", "--chunk-size", "1", "--null-size", "0"]

WAIT_SECONDS = 120  # for progress, and for a signalled process to exit: far above the real times


# ---- running the command as a process --------------------------------------------------------
def _environment() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPIFORMER_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p))
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Run:
    """``python -m epiformer_cli -q ARGS`` in its own process group, stderr into a file (without
    ``-q`` when ``quiet`` is false: the closing summary line is an INFO line)."""

    def __init__(self, args: List[str], log: Path, stdin: Optional[int] = None, quiet: bool = True) -> None:
        self.args = [sys.executable, "-m", "epiformer_cli", *(["-q"] if quiet else []), *map(str, args)]
        self.log = log
        with open(log, "wb") as err:
            # a test runner started in the background ignores SIGINT, and its children would too
            reset = _default_sigint if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else None
            self.proc = subprocess.Popen(self.args, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err,
                                         env=_environment(), start_new_session=True, preexec_fn=reset)

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def feed(self, text: str) -> None:
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Poll until ``ready()``; the process must still be running (the job is not done)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"the process exited ({self.proc.returncode}) before {what}: the job must run long "
                            f"enough to be signalled part-way\n{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {WAIT_SECONDS} s\n{self.stderr}")
            time.sleep(0.01)

    def signal(self, sig: int, group: bool = False) -> int:
        """Send ``sig`` (to the whole process group, as a terminal's Ctrl-C does, or to the main
        process only, as ``kill PID`` does) and return the exit status."""
        (os.killpg if group else os.kill)(self.proc.pid, sig)
        self.close_stdin()  # a reader blocked on standard input sees EOF, as when its producer dies
        return self.wait()

    def wait(self) -> int:
        try:
            code = self.proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill_group()
            pytest.fail(f"hung: no exit {WAIT_SECONDS} s after the signal\n{self.stderr}")
        self.assert_group_gone()
        return code

    def finish(self, stdin_text: Optional[str] = None) -> str:
        """Run to the end; must exit 0. Returns stderr."""
        if stdin_text is not None:
            self.feed(stdin_text)
        self.close_stdin()
        code = self.wait()
        assert code == 0, f"exit {code}\n{self.stderr}"
        return self.stderr

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def assert_group_gone(self) -> None:
        """No process of this run (e.g. a DataLoader worker) outlives it."""
        deadline = time.monotonic() + 15
        while _live_group_members(self.proc.pid):
            if time.monotonic() > deadline:
                left = _live_group_members(self.proc.pid)
                self.kill_group()
                pytest.fail(f"processes {left} of the run were still alive 15 s after it exited\n{self.stderr}")
            time.sleep(0.05)


def _live_group_members(pgid: int) -> List[int]:
    """Processes of group ``pgid`` that are not zombies (from /proc; any member without it)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    found = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def runs():
    """Runs started by a test; any left running when it ends is killed with its process group."""
    started: List[Run] = []

    def start(args, log, stdin=None, quiet=True) -> Run:
        run = Run(args, log, stdin, quiet)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.kill_group()
        run.close_stdin()


def assert_killed(code: int) -> None:
    assert code == -signal.SIGKILL, f"exit {code}: the job finished before SIGKILL reached it"


def assert_clean_stop(run: Run, code: int, sig: int) -> None:
    """Exit 130 (SIGINT) or 143 (SIGTERM), one error line saying how to resume, nothing else."""
    expected, word = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}[sig]
    text = run.stderr
    assert code != 0, f"the job finished before {sig.name} reached it:\n{text}"
    assert code == expected, f"{sig.name}: exit {code}, expected {expected}\n{text}"
    assert "Traceback" not in text and "Exception" not in text, text
    lines = text.splitlines()
    errors = [line for line in lines if line.startswith("epiformer: error:")]
    assert len(errors) == 1 and word in errors[0] and "run the same command again" in errors[0], text
    assert "--resume" in errors[0]
    assert all(line.startswith("epiformer: ") for line in lines), text  # no noise from threads or workers


def hidden_temporaries(folder: Path) -> List[Path]:
    """Temporary files of atomic writes (``.NAME.HOST-PID.XXXX.tmp``) under ``folder``."""
    return sorted(p for p in folder.rglob("*") if ".tmp" in p.name)


# ---- shared inputs and uninterrupted reference runs ------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """In-process runs compute on one thread, like the processes (OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> dict:
    """FASTA, conservation and two target bigWigs, a targets sheet, a predict model and a (more
    base-sensitive) variant model, all on the same chromosomes."""
    folder = tmp_path_factory.mktemp("genome")
    rng = np.random.default_rng(17)
    seqs = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in CHROMS.items()}
    write_fasta(folder / "g.fa", seqs)
    write_bigwig(folder / "cons.bw", CHROMS, {c: [(s, s + 100, float(rng.random())) for s in range(0, n - 100, 100)]
                                              for c, n in CHROMS.items()})
    for name in ("a", "b"):
        write_bigwig(folder / f"{name}.bw", CHROMS, {c: [(s, s + 64, float(rng.exponential()))
                                                         for s in range(0, n - 64, 64)] for c, n in CHROMS.items()})
    (folder / "targets.tsv").write_text("name\tpath\nA\ta.bw\nB\tb.bw\n")
    model = random_model(seed=5)
    save_model(folder / "model.pt", model, model.config, TRACKS)
    variant_model = sensitive_model(seed=4)
    save_model(folder / "variants.pt", variant_model, variant_model.config, ["neuron", "glia", "astro"])
    return {"fasta": folder / "g.fa", "cons": folder / "cons.bw", "targets": folder / "targets.tsv",
            "model": folder / "model.pt", "variant_model": folder / "variants.pt", "seqs": seqs, "folder": folder}


def prepare_args(genome, out: Path) -> List[str]:
    return [str(a) for a in ["prepare", "--fasta", genome["fasta"], "--cons", genome["cons"], "--targets",
                             genome["targets"], *PREPARE_ARGS, "--out", out]]


@pytest.fixture(scope="module")
def store(genome) -> Path:
    """The uninterrupted prepare run (in-process); also the training data."""
    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.options import PrepareOptions

    out = genome["folder"] / "store"
    prepare_store(genome["fasta"], genome["cons"], genome["targets"], out,
                  options=PrepareOptions(window_bp=16_384, step_bp=8192, valid_chroms=["chr2"], test_chroms=["chr3"]))
    return out


def predict_args(genome, out: Path) -> List[str]:
    return [str(a) for a in ["predict", "--fasta", genome["fasta"], "--cons", genome["cons"], "--model",
                             genome["model"], *PREDICT_ARGS, "--out", out]]


@pytest.fixture(scope="module")
def predicted(genome, tmp_path_factory) -> Dict[str, Path]:
    """The uninterrupted predict run (in-process): track -> bigWig."""
    from epiformer_cli.jobs.predict import predict_genome
    from epiformer_cli.options import PredictOptions

    out = tmp_path_factory.mktemp("predicted") / "pred.bw"
    summary = predict_genome(genome["fasta"], genome["cons"], genome["model"], out,
                             options=PredictOptions.of(chroms=PREDICT_CHROMS, device="cpu", batch_size=1,
                                                       chunk_windows=1))
    assert summary.chunks_computed == 2 * len(PREDICT_CHROMS)
    return summary.outputs


def train_args(store: Path, out: Path, workers: int) -> List[str]:
    return [str(a) for a in ["train", "--data", store, "--out", out, *TRAIN_ARGS, "--workers", workers]]


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> Path:
    """The uninterrupted training run, as a process like the interrupted ones (same threads)."""
    folder = tmp_path_factory.mktemp("trained")
    run = Run(train_args(store, folder / "run", workers=0), folder / "stderr.txt")
    run.finish()
    return folder / "run"


def variant_records(seqs) -> List[str]:
    """VCF body lines: SNVs, an indel pair, a multi-allelic site, and two records that only get a
    status (a REF that disagrees with the FASTA, a chromosome the FASTA lacks)."""
    rows = []
    for i in range(1, 7):
        s = seqs[f"chr{i}"]
        for pos in (6_000 + 997 * i, 17_000 + 131 * i):
            rows.append((f"chr{i}", pos + 1, f"v{i}_{pos}", s[pos], other(s[pos], i)))
    s = seqs["chr7"]
    rows += [("chr7", 9_001, "del", s[9_000:9_004], s[9_000]), ("chr7", 12_001, "ins", s[12_000], s[12_000] + "GATC"),
             ("chr7", 15_001, "multi", s[15_000], f"{other(s[15_000])},{other(s[15_000], 2)}"),
             ("chr8", 501, "mismatch", other(seqs["chr8"][500]), seqs["chr8"][500]),
             ("chrUn", 10, "unknown", "A", "C")]
    return [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows]


# Every contig declared: over 1 KiB, which htslib reads before it opens a stream on standard input.
VCF_HEADER = ("##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c},length={n}>\n" for c, n in CHROMS.items())
              + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")


@pytest.fixture(scope="module")
def vcf(genome) -> dict:
    records = variant_records(genome["seqs"])
    path = genome["folder"] / "v.vcf"
    path.write_text(VCF_HEADER + "".join(records))
    return {"path": path, "records": records, "text": path.read_text()}


def score_args(genome, out: Path, vcf_arg="-") -> List[str]:
    return [str(a) for a in ["score-variants", vcf_arg, "--fasta", genome["fasta"], "--cons", genome["cons"],
                             "--model", genome["variant_model"], *SCORE_ARGS, "--out", out]]


@pytest.fixture(scope="module")
def scored(genome, vcf) -> List[dict]:
    """The uninterrupted score-variants run (in-process, from the file): its TSV rows."""
    out = genome["folder"] / "scored.tsv"
    summary = score(vcf=vcf["path"], fasta=genome["fasta"], cons=genome["cons"],
                    model=genome["variant_model"], out=out, device="cpu", chunk_size=1)
    assert summary.statuses["ref_mismatch"] == 1 and summary.statuses["unknown_chrom"] == 1
    assert summary.statuses["ok"] == len(vcf["records"]) - 1  # the multi-allelic record has two ALTs
    return read_tsv(out)


# ---- comparisons -----------------------------------------------------------------------------
def assert_same_bigwigs(reference: Dict[str, Path], out: Path) -> None:
    for track, path in reference.items():
        got = out.with_name(f"{out.stem}.{track}.bw")
        a, b = read_bw(path), read_bw(got)
        assert a["header"] == b["header"]
        for chrom in PREDICT_CHROMS:
            assert len(a[chrom][2]) == -(-CHROM_BP // 128)
            for k in range(3):
                np.testing.assert_array_equal(a[chrom][k], b[chrom][k])


def assert_same_store(reference: Path, out: Path) -> None:
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in files:
        if name == Path("manifest.json"):
            a, b = (json.loads((root / name).read_text()) for root in (reference, out))
            a.pop("created"), b.pop("created")  # the only field that is a time
            assert a == b
        else:
            assert (reference / name).read_bytes() == (out / name).read_bytes(), name


def model_state(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def checkpoint(path: Path) -> dict:
    from epiformer_cli.training.checkpoint import load_checkpoint

    return load_checkpoint(path)


def assert_same_training(reference: Path, run: Path) -> None:
    a, b = checkpoint(reference / "last.pt"), checkpoint(run / "last.pt")
    assert a["step"] == b["step"] == TRAIN_STEPS
    for states in ((a["model"], b["model"]), (model_state(reference / "model.pt"), model_state(run / "model.pt"))):
        assert states[0].keys() == states[1].keys()
        for key in states[0]:
            assert torch.equal(states[0][key], states[1][key]), key
    for key, value in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(value[name], b["optimizer"]["state"][key][name]), (key, name)

    def rows(path):
        with open(path / "metrics.tsv", newline="") as handle:
            return [{k: v for k, v in r.items() if k not in ("seconds", "windows_per_s")}
                    for r in csv.DictReader(handle, delimiter="\t")]

    assert rows(reference) == rows(run) and [r["split"] for r in rows(run)][-1] == "test"
    assert (run / "learning_curve.png").is_file()


