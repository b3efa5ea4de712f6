"""Bad inputs through the command line, one parametrized case per row.

A refused input must: exit 1 (runtime: a bad file) or 2 (usage: a bad option), print exactly one
``epiformer: error:`` line naming the file or option and saying what to do, print no traceback,
and leave nothing behind (no output, no half-made store; a previous output byte-identical). A
tolerated input (IUPAC codes, conservation outside [0, 1], NaN runs, ...) must exit 0, warn once,
and give the values the documented policy says. Every row also checks that no input changed.

Rows run in-process through Typer's CliRunner (stderr apart from stdout); rows marked ``process``
run the real entry point (``python -m epiformer_cli``) to prove that nothing else reaches the
terminal, such as htslib's own messages.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyBigWig
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.model.modelfile import save_model
from tests.helpers import write_bigwig, write_fasta
from tests.helpers import random_model

# ---- the good inputs (tiny preset: 16,384 bp windows, 96 output bins of 128 bp) ---------------
SIZES = {"chr1": 17_000, "chr2": 16_500, "chr3": 3_000}
TRACKS = ["ASCT", "OPC"]
#: N in the good FASTA; the IUPAC row writes R (chr1) and Y (chr2) there instead.
N_RUNS = {"chr1": (2_000, 2_300), "chr2": (100, 150)}
#: no conservation data in the good bigWig; the NaN row writes NaN there instead.
CONS_GAP = ("chr1", 5_000, 5_600)
#: conservation exactly 1 and 0 in the good bigWig; the out-of-range row writes 1.7 and -0.4.
CONS_ONE = ("chr2", 1_000, 1_500)
CONS_ZERO = ("chr2", 2_000, 2_500)
#: no data in the good target a.bw (on the 128 bp grid); the NaN row writes NaN there instead.
TARGET_GAP = ("chr1", 8_064, 8_576)
#: SNV positions (1-based, as in a VCF) away from the N runs.
SNVS = [("chr1", 6_001), ("chr1", 9_001), ("chr2", 3_001)]
VCF_COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def _inside(region: Tuple[str, int, int], chrom: str, start: int) -> bool:
    return chrom == region[0] and region[1] <= start < region[2]


def cons_intervals(variant: str = "good", names: Optional[Dict[str, str]] = None) -> Dict[str, list]:
    """50 bp conservation intervals; ``variant`` outside|nan changes only the regions above."""
    rng = np.random.default_rng(7)
    out: Dict[str, list] = {}
    for chrom, size in SIZES.items():
        entries = []
        for start in range(0, size, 50):
            value = float(rng.uniform(0.05, 0.95))
            if _inside(CONS_GAP, chrom, start):
                if variant != "nan":
                    continue
                value = float("nan")
            elif _inside(CONS_ONE, chrom, start):
                value = 1.7 if variant == "outside" else 1.0
            elif _inside(CONS_ZERO, chrom, start):
                value = -0.4 if variant == "outside" else 0.0
            entries.append((start, min(start + 50, size), value))
        out[(names or {}).get(chrom, chrom)] = entries
    return out


def target_intervals(seed: int, gap: Optional[str] = None) -> Dict[str, list]:
    """64 bp target intervals; ``gap`` ``"empty"`` leaves TARGET_GAP without data, ``"nan"`` fills
    it with NaN."""
    rng = np.random.default_rng(seed)
    out: Dict[str, list] = {}
    for chrom, size in SIZES.items():
        entries = []
        for start in range(0, size, 64):
            value = float(rng.uniform(0, 4))
            if gap and _inside(TARGET_GAP, chrom, start):
                if gap == "empty":
                    continue
                value = float("nan")
            entries.append((start, min(start + 64, size), value))
        out[chrom] = entries
    return out


def genome_text(iupac: bool = False) -> Dict[str, str]:
    rng = np.random.default_rng(5)
    seqs = {c: "".join(rng.choice(list("ACGTacgt"), n)) for c, n in SIZES.items()}
    for (chrom, (start, end)), code in zip(N_RUNS.items(), "RY"):
        seqs[chrom] = seqs[chrom][:start] + (code if iupac else "N") * (end - start) + seqs[chrom][end:]
    return seqs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second thread only waits for the CPU on a shared machine (values do not
    depend on the number of threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """FASTA, conservation, two target bigWigs and their sheet, a 2-track model, the reference
    prediction (and its store) and a prepared store, all made once through the CLI."""
    folder = tmp_path_factory.mktemp("good")
    g = SimpleNamespace(folder=folder, seqs=genome_text())
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, folder)
        g.fasta = write_fasta(folder / "genome.fa", g.seqs)
        g.cons = write_bigwig(folder / "cons.bw", SIZES, cons_intervals())
        g.a_bw = write_bigwig(folder / "a.bw", SIZES, target_intervals(1, gap="empty"))
        g.b_bw = write_bigwig(folder / "b.bw", SIZES, target_intervals(2))
        g.targets = folder / "targets.tsv"
        g.targets.write_text("name\tpath\nA\ta.bw\nB\tb.bw\n")
        model = random_model(seed=3)
        g.model = save_model(folder / "model.pt", model, model.config, TRACKS)
        (folder / "ref").mkdir()
        g.ref = folder / "ref" / "pred.bw"
        g.ref_store = folder / "ref" / ".pred.bw.store"
        g.store = folder / "store"
        ctx = Ctx(good=g, tmp=folder, inp=folder, out=folder, monkeypatch=mp)
        assert_ok(invoke(ctx.predict(out=g.ref)))
        assert_ok(invoke(ctx.prepare(out=g.store)))
        shutil.rmtree(folder / "home")
    g.ref_bins = {c: bins_of(read_bw(g.ref)[c]) for c in SIZES}
    assert all(np.isfinite(v).all() and len(v) == -(-SIZES[c] // 128) for c, v in g.ref_bins.items())
    return g


# ---- running the CLI ------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    exception: Optional[BaseException] = None


def invoke(args: Sequence[str], process: bool = False) -> Outcome:
    if process:  # the real entry point, with the (already cleaned) environment of the test
        proc = subprocess.run([sys.executable, "-m", "epiformer_cli", *map(str, args)], capture_output=True,
                              text=True, env=dict(os.environ), timeout=120)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)
    result = CliRunner().invoke(app, [str(a) for a in args])
    return Outcome(result.exit_code, result.stdout, result.stderr, result.exception)


def clean_environment(mp: pytest.MonkeyPatch, root: Path) -> None:
    """No EPIFORMER_* defaults, no SLURM array or torchrun rank, and a HOME and cache inside
    ``root`` so that nothing is written elsewhere."""
    for name in list(os.environ):
        if name.startswith(("EPIFORMER_", "SLURM_", "TORCHELASTIC_")) or name in (
                "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"):
            mp.delenv(name)
    (root / "home").mkdir(exist_ok=True)
    mp.setenv("HOME", str(root / "home"))
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))


def assert_ok(outcome: Outcome, warnings: int = 0) -> None:
    """Exit 0, no error, no traceback, and exactly ``warnings`` warning lines."""
    assert outcome.code == 0, outcome.stderr
    assert outcome.exception is None, outcome.exception
    assert "epiformer: error" not in outcome.stderr and "Traceback" not in outcome.stderr, outcome.stderr
    said = [line for line in outcome.stderr.splitlines() if line.startswith("epiformer: warning:")]
    assert len(said) == warnings, outcome.stderr


def assert_refused(outcome: Outcome, code: int, says: Sequence[str]) -> str:
    """Exit ``code``, one error line containing every text of ``says``, nothing else unprefixed."""
    assert outcome.code == code, (outcome.code, outcome.stderr)
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.exception
    lines = outcome.stderr.splitlines()
    errors = [line for line in lines if line.startswith("epiformer: error:")]
    assert len(errors) == 1, outcome.stderr
    assert all(line.startswith("epiformer: ") for line in lines), outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert "internal error" not in errors[0], errors[0]
    for text in says:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def assert_warned_once(outcome: Outcome, *texts: str) -> str:
    """Exit 0 with one warning, the only line mentioning ``texts[0]``, that contains all ``texts``."""
    assert_ok(outcome, warnings=1)
    warnings = [line for line in outcome.stderr.splitlines() if texts[0] in line]
    assert len(warnings) == 1, outcome.stderr
    assert warnings[0].startswith("epiformer: warning:"), warnings[0]
    for text in texts:
        assert text in warnings[0], (text, warnings[0])
    return warnings[0]


# ---- files: snapshots, bigWigs, TSVs --------------------------------------------------------
def snapshot(root: Path) -> Dict[str, str]:
    """Every file (by content) and folder under ``root``."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            state[rel] = "<dir>"
        else:
            try:
                state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:  # a file the row made unreadable on purpose
                stat = path.stat()
                state[rel] = f"<unreadable {stat.st_size} {stat.st_mtime_ns}>"
    return state


def left_behind(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
    """Paths a run created, changed or removed; FASTA indexes (caches, not outputs) excepted."""
    new = {p for p in after if p not in before}
    index = {p for p in new if p.endswith((".fai", ".gzi"))}
    parents = {str(Path(p).parents[i].as_posix()) for p in index for i in range(len(Path(p).parents) - 1)}
    changed = {p for p in before if after.get(p) != before[p]}
    return sorted((new - index - parents) | changed)


def read_bw(path: Path) -> dict:
    bw = pyBigWig.open(str(path))
    try:
        out = {chrom: list(bw.intervals(chrom) or ()) for chrom in bw.chroms()}
        out["header"] = list(bw.chroms().items())
    finally:
        bw.close()
    return out


def bins_of(intervals) -> np.ndarray:
    """Values of consecutive 128 bp bins starting at 0 (as predict writes them)."""
    starts = [s for s, _, _ in intervals]
    assert starts == list(range(0, 128 * len(starts), 128))
    return np.array([v for _, _, v in intervals])


def assert_same_prediction(path: Path, good) -> None:
    data = read_bw(path)
    assert data["header"] == list(SIZES.items())
    for chrom in SIZES:
        np.testing.assert_array_equal(bins_of(data[chrom]), good.ref_bins[chrom])


def read_tsv(path: Path) -> List[dict]:
    lines = path.read_text().splitlines()
    columns = lines[0].split("\t")
    return [dict(zip(columns, line.split("\t"))) for line in lines[1:]]


def store_arrays(store: Path) -> Dict[str, bytes]:
    """The per-chromosome data files of a prepared store (bases, conservation, targets)."""
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.glob("*/*"))
            if p.suffix in (".u8", ".f16")}


def window_starts(store: Path, split: str = "train") -> List[Tuple[str, int]]:
    rows = (store / "windows.tsv").read_text().splitlines()[1:]
    return [(r.split("\t")[0], int(r.split("\t")[1])) for r in rows if r.split("\t")[3] == split]


def vcf_text(records: Sequence[str], contigs: Sequence[str] = tuple(SIZES)) -> str:
    head = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c}>\n" for c in contigs)
    head += '##ALT=<ID=DEL,Description="Deletion">\n'
    return head + VCF_COLUMNS + "".join(records)


def record(chrom: str, pos: int, ref: str, alt: str, ident: str = ".") -> str:
    return f"{chrom}\t{pos}\t{ident}\t{ref}\t{alt}\t.\t.\t.\n"


def other_base(base: str) -> str:
    return "ACGT"[("ACGT".index(base.upper()) + 1) % 4]


class _Exploit:
    """A pickle payload that creates a file when an unrestricted unpickler loads it."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


# ---- one row's context ----------------------------------------------------------------------
@dataclass
class Ctx:
    good: SimpleNamespace
    tmp: Path
    inp: Path  # the row's own input files
    out: Path  # outputs go here
    monkeypatch: pytest.MonkeyPatch
    cleanups: List[Callable[[], None]] = field(default_factory=list)

    # command lines with the good inputs unless told otherwise
    def predict(self, out=None, fasta=None, cons=None, model=None, device="cpu", extra=()) -> List[str]:
        g = self.good
        return ["predict", "--fasta", fasta or g.fasta, "--cons", cons or g.cons, "--model", model or g.model,
                "--out", out or self.out / "pred.bw", "--device", device, "--tracks", "ASCT", "--no-rc-average",
                *extra]

    def prepare(self, out=None, fasta=None, cons=None, targets=None, extra=()) -> List[str]:
        g = self.good
        return ["prepare", "--fasta", fasta or g.fasta, "--cons", cons or g.cons, "--targets", targets or g.targets,
                "--preset", "tiny", "--step", "256", "--valid-chroms", "chr2", "--test-chroms", "chr3",
                "--out", out or self.out / "store", *extra]

    def score(self, vcf, out=None, device="cpu", extra=()) -> List[str]:
        g = self.good
        return ["score-variants", "--null-size", "0", vcf, "--fasta", g.fasta, "--cons", g.cons, "--model", g.model, "--tracks", "ASCT",
                "--device", device, "--out", out or self.out / "scores.tsv", *extra]

    def train(self, out=None, device="cpu", extra=()) -> List[str]:
        return ["train", "--data", self.good.store, "--out", out or self.out / "run", "--preset", "tiny",
                "--workers", "0", "--device", device, "--max-steps", "1", "--batch-size", "2", *extra]

    def export(self, out=None, extra=()) -> List[str]:
        return ["export-bigwig", self.good.ref_store, "--out", out or self.out / "pred.bw", "--tracks", "ASCT", *extra]

    # inputs
    def file(self, name: str, content: str | bytes) -> Path:
        """A file of the row's inputs."""
        return self.put(self.inp / name, content)

    def put(self, path: Path, content: str | bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def vcf(self, records: Sequence[str], name: str = "in.vcf", **kw) -> Path:
        return self.file(name, vcf_text(records, **kw))

    def snv(self, chrom: str, pos: int, lower: bool = False) -> str:
        ref = self.good.seqs[chrom][pos - 1].upper()
        alt = other_base(ref)
        return record(chrom, pos, ref.lower() if lower else ref, alt.lower() if lower else alt)

    def sheet(self, text: str, name: str = "targets.tsv") -> Path:
        """A targets sheet in the row's folder; the good bigWigs are copied beside it."""
        for bw in (self.good.a_bw, self.good.b_bw):
            if not (self.inp / bw.name).exists():
                shutil.copy(bw, self.inp / bw.name)
        return self.file(name, text)

    def model_payload(self) -> dict:
        return torch.load(self.good.model, map_location="cpu", weights_only=True)

    def deny(self, path: Path, mode: int) -> None:
        """Make ``path`` unreadable (R_OK) or unwritable (W_OK): chmod for ordinary users; for
        root, whom permissions do not stop, the tool's ``os.access`` check is made to say no."""
        old = path.stat().st_mode
        path.chmod(0o000 if mode == os.R_OK else 0o555)
        self.cleanups.append(lambda: path.chmod(old))
        if os.geteuid() == 0:
            real, target = os.access, os.path.abspath(path)

            def access(p, m, *args, **kwargs):
                if m & mode and os.path.abspath(os.fspath(p)) == target:
                    return False
                return real(p, m, *args, **kwargs)

            self.monkeypatch.setattr(os, "access", access)

    def no_gpu(self) -> None:
        self.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        if getattr(torch.backends, "mps", None) is not None:
            self.monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    def snapshot(self) -> Dict[str, str]:
        return snapshot(self.tmp)


# ---- the rows -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    id: str
    run: Callable[[Ctx], None]


ROWS: List[Row] = []


def refused(code: int, *says: str, process: bool = False, then: Optional[Callable[[Ctx, str], None]] = None):
    """A row whose command (returned by the decorated builder) must be refused: exit ``code``,
    one error line containing ``says``, no traceback, nothing left behind; ``then`` checks more."""

    def register(build: Callable[[Ctx], Sequence]) -> Callable:
        def run(c: Ctx) -> None:
            args = build(c)
            before = c.snapshot()
            line = assert_refused(invoke(args, process), code, says)
            assert left_behind(before, c.snapshot()) == []
            if then is not None:
                then(c, line)

        ROWS.append(Row(build.__name__.replace("_", "-"), run))
        return build

    return register


def works(check: Callable[[Ctx], None]) -> Callable:
    """A row that must succeed; the function runs the command and checks the result itself."""
    ROWS.append(Row(check.__name__.replace("_", "-"), check))
    return check


# -- FASTA ------------------------------------------------------------------------------------
@refused(1, "missing.fa", "not found", "check the path")
def fasta_missing(c):
    return c.predict(fasta=c.inp / "missing.fa")


@refused(1, "locked.fa", "not readable", "permissions")
def fasta_unreadable(c):
    fasta = write_fasta(c.inp / "locked.fa", c.good.seqs)
    c.deny(fasta, os.R_OK)
    return c.predict(fasta=fasta)


@refused(1, "empty.fa", "empty", "re-download")
def fasta_empty(c):
    return c.predict(fasta=c.file("empty.fa", ""))


@refused(1, "notes.fa", "could not index", "valid", "'>name' header lines", process=True)
def fasta_not_fasta(c):
    return c.predict(fasta=c.file("notes.fa", "my notes on the genome\nchr1 is long\n"))


@refused(1, "dup.fa", "duplicate sequence name(s) among 3 records (chr1)", "unique name")
def fasta_duplicate_chromosome_names(c):
    return c.predict(fasta=c.file("dup.fa", ">chr1\nACGTACGT\n>chr2\nACGT\n>chr1\nTTTT\n"))


@refused(1, "genome.fa.gz", "gzip-compressed", "bgzip")
def fasta_plain_gzip(c):
    path = c.inp / "genome.fa.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("".join(f">{name}\n{seq}\n" for name, seq in c.good.seqs.items()))
    return c.predict(fasta=path)


@works
def fasta_without_index_in_a_read_only_folder(c):
    """The index goes to $XDG_CACHE_HOME/epiformer/fasta-index, never beside the FASTA."""
    folder = c.inp / "readonly"
    folder.mkdir()
    fasta = write_fasta(folder / "genome.fa", c.good.seqs)
    c.deny(folder, os.W_OK)
    outcome = invoke(c.predict(fasta=fasta))
    assert_ok(outcome)
    assert "read-only" in outcome.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["genome.fa"]
    cached = list((c.tmp / "cache" / "epiformer" / "fasta-index").glob("*/genome.fa.fai"))
    assert len(cached) == 1
    assert_same_prediction(c.out / "pred.bw", c.good)


@refused(1, "genome.fa", "no .fai index", "samtools faidx")
def fasta_without_index_and_nowhere_to_write_one(c):
    folder = c.inp / "readonly"
    folder.mkdir()
    fasta = write_fasta(folder / "genome.fa", c.good.seqs)
    c.deny(folder, os.W_OK)
    blocker = c.file("blocker", "a file where the cache folder would go")
    c.monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    return c.predict(fasta=fasta)


@works
def fasta_windows_line_endings(c):
    fasta = write_fasta(c.inp / "crlf.fa", c.good.seqs, newline="\r\n")
    assert b"\r\n" in fasta.read_bytes()
    assert_ok(invoke(c.predict(fasta=fasta)))
    assert_same_prediction(c.out / "pred.bw", c.good)


@works
def fasta_iupac_codes(c):
    """R and Y (on two chromosomes) read as N -- the good FASTA has N there -- with one warning."""
    fasta = write_fasta(c.inp / "iupac.fa", genome_text(iupac=True))
    outcome = invoke(c.predict(fasta=fasta))
    assert_warned_once(outcome, "IUPAC", "iupac.fa", "read as N")
    assert_same_prediction(c.out / "pred.bw", c.good)


# -- bigWigs: conservation (predict) and targets (prepare) -------------------------------------
@refused(1, "missing.bw", "not found", "check the path")
def cons_missing(c):
    return c.predict(cons=c.inp / "missing.bw")


@refused(1, "cons.bw", "not a bigWig", "bedGraphToBigWig")
def cons_not_a_bigwig(c):
    return c.predict(cons=c.file("cons.bw", "chr1\t0\t100\t0.5\n"))


@refused(1, "a.bw", "not a bigWig", "bedGraphToBigWig")
def target_not_a_bigwig(c):
    c.file("a.bw", "chr1\t0\t100\t0.5\n")
    return c.prepare(targets=c.sheet("name\tpath\nA\ta.bw\n"))


@refused(1, "scaffold.bw", "no chromosome names in common", "chr1, chr2, chr3", "scaffold_1, scaffold_2",
         "same genome assembly")
def cons_no_chromosome_in_common(c):
    names = {chrom: f"scaffold_{i}" for i, chrom in enumerate(SIZES, 1)}
    bw = write_bigwig(c.inp / "scaffold.bw", {names[k]: v for k, v in SIZES.items()}, cons_intervals(names=names))
    return c.predict(cons=bw)


@refused(1, "scaffold.bw", "no chromosome names in common", "chr1, chr2, chr3", "scaffold_1", "same genome assembly")
def target_no_chromosome_in_common(c):
    write_bigwig(c.inp / "scaffold.bw", {"scaffold_1": 20_000}, {"scaffold_1": [(0, 100, 1.0)]})
    return c.prepare(targets=c.sheet("name\tpath\nA\tscaffold.bw\n"))


@works
def cons_chromosome_longer_than_the_fasta(c):
    """Another assembly's lengths: warned (naming the chromosome and both lengths), never silent;
    the bases the FASTA has read the same."""
    bw = write_bigwig(c.inp / "long.bw", dict(SIZES, chr1=50_000), cons_intervals())
    outcome = invoke(c.predict(cons=bw))
    assert_warned_once(outcome, "long.bw", "chr1", "50,000", "17,000", "assembly")
    assert_same_prediction(c.out / "pred.bw", c.good)


@works
def target_chromosome_longer_than_the_fasta(c):
    write_bigwig(c.inp / "a.bw", dict(SIZES, chr1=50_000), target_intervals(1, gap="empty"))
    outcome = invoke(c.prepare(targets=c.sheet("name\tpath\nA\ta.bw\nB\tb.bw\n")))
    assert_warned_once(outcome, "a.bw", "chr1", "50,000", "17,000", "assembly")
    assert store_arrays(c.out / "store") == store_arrays(c.good.store)


@works
def cons_outside_0_1_predict(c):
    """1.7 and -0.4 are clipped to 1 and 0, as the training store clips them: the good bigWig
    has exactly 1 and 0 there, so the prediction is the reference one."""
    bw = write_bigwig(c.inp / "cons.bw", SIZES, cons_intervals("outside"))
    outcome = invoke(c.predict(cons=bw))
    assert_warned_once(outcome, "outside [0, 1]", "cons.bw", "clipped")
    assert_same_prediction(c.out / "pred.bw", c.good)


@works
def cons_outside_0_1_prepare(c):
    bw = write_bigwig(c.inp / "cons.bw", SIZES, cons_intervals("outside"))
    outcome = invoke(c.prepare(cons=bw))
    assert_warned_once(outcome, "outside [0, 1]", "cons.bw", "clipped")
    assert store_arrays(c.out / "store") == store_arrays(c.good.store)


@works
def cons_nan_runs(c):
    """NaN is missing data: read as 0 like the good bigWig's gap there; no NaN in the output."""
    bw = write_bigwig(c.inp / "cons.bw", SIZES, cons_intervals("nan"))
    outcome = invoke(c.predict(cons=bw))
    assert_warned_once(outcome, "NaN", "cons.bw", "missing")
    assert_same_prediction(c.out / "pred.bw", c.good)


@works
def target_nan_runs(c):
    write_bigwig(c.inp / "a.bw", SIZES, target_intervals(1, gap="nan"))
    outcome = invoke(c.prepare(targets=c.sheet("name\tpath\nA\ta.bw\nB\tb.bw\n")))
    assert_warned_once(outcome, "NaN", "a.bw", "missing")
    arrays = store_arrays(c.out / "store")
    assert arrays == store_arrays(c.good.store)
    targets = np.frombuffer(arrays["targets/0.f16"], dtype=np.float16).reshape(-1, 2)
    assert np.isfinite(targets).all()
    assert (targets[TARGET_GAP[1] // 128: TARGET_GAP[2] // 128, 0] == 0).all()


# -- targets sheet (prepare) ------------------------------------------------------------------
@refused(1, "targets.tsv", "lacks the column(s) name, path", "must name")
def sheet_missing_columns(c):
    return c.prepare(targets=c.sheet("label\tbigwig\nA\ta.bw\n"))


@refused(1, "targets.tsv", "duplicate track name(s) A", "its own name")
def sheet_duplicate_names(c):
    return c.prepare(targets=c.sheet("name\tpath\nA\ta.bw\nA\tb.bw\n"))


@works
def sheet_relative_paths(c):
    """Paths are read against the sheet's folder, not the working directory."""
    (c.inp / "tracks").mkdir()
    for bw in (c.good.a_bw, c.good.b_bw):
        shutil.copy(bw, c.inp / "tracks" / bw.name)
    sheet = c.file("sheets/targets.tsv", "name\tpath\nA\t../tracks/a.bw\nB\t../tracks/b.bw\n")
    (c.inp / "elsewhere").mkdir()
    c.monkeypatch.chdir(c.inp / "elsewhere")
    assert_ok(invoke(c.prepare(targets=sheet)))
    assert store_arrays(c.out / "store") == store_arrays(c.good.store)
    manifest = json.loads((c.out / "store" / "manifest.json").read_text())
    assert [t["path"] for t in manifest["tracks"]] == [str((c.inp / "tracks" / n).resolve()) for n in ("a.bw", "b.bw")]


@refused(1, "targets.tsv", "targets sheet is not readable", "permissions")
def sheet_unreadable(c):
    sheet = c.sheet("name\tpath\nA\ta.bw\n")
    c.deny(sheet, os.R_OK)
    return c.prepare(targets=sheet)


@refused(1, "gone.bw", "target 'B' not found", "check the path")
def sheet_names_a_missing_bigwig(c):
    return c.prepare(targets=c.sheet("name\tpath\nA\ta.bw\nB\tgone.bw\n"))


# -- BED: predict --regions and prepare --blacklist --------------------------------------------
def _bed_rows(option: str) -> None:
    def command(c, text):
        bed = c.file("regions.bed", text)
        return c.predict(extra=["--regions", bed]) if option == "regions" else c.prepare(extra=["--blacklist", bed])

    cases = {
        "malformed-line": ("chr1\t100\t200\nchr1\tabc\t300\n", ("regions.bed:2", "not a BED line", "tab-separated")),
        "start-after-end": ("chr1\t500\t100\n", ("regions.bed:1", "chr1:500-100", "start <= end")),
        "negative-start": ("chr1\t-5\t100\n", ("regions.bed:1", "chr1:-5-100", "0 <= start")),
    }
    for name, (text, says) in cases.items():
        def build(c, text=text):
            return command(c, text)

        build.__name__ = f"bed_{name}_{option}"
        refused(1, *says)(build)


_bed_rows("regions")
_bed_rows("blacklist")


@refused(1, "regions.bed", "BED file is not readable", "permissions")
def bed_unreadable_regions(c):
    bed = c.file("regions.bed", "chr1\t0\t100\n")
    c.deny(bed, os.R_OK)
    return c.predict(extra=["--regions", bed])

BED_HEADERS = "#chrom\tstart\tend\ntrack name=peaks description=\"x\"\nbrowser position chr1:1-1000\n\n"


@works
def bed_header_track_browser_lines_regions(c):
    bed = c.file("regions.bed", BED_HEADERS + "chr1\t1000\t1300\nchr2\t200\t300\n")
    assert_ok(invoke(c.predict(extra=["--regions", bed])))
    got = read_bw(c.out / "pred.bw")
    for chrom, bins in {"chr1": [7, 8, 9, 10], "chr2": [1, 2], "chr3": []}.items():
        assert [s for s, _, _ in got[chrom]] == [b * 128 for b in bins]
        np.testing.assert_array_equal([v for _, _, v in got[chrom]], c.good.ref_bins[chrom][bins])


@works
def bed_header_track_browser_lines_blacklist(c):
    bed = c.file("regions.bed", BED_HEADERS + "chr1\t0\t100\n")
    assert_ok(invoke(c.prepare(extra=["--blacklist", bed])))
    assert window_starts(c.good.store) == [("chr1", 0), ("chr1", 256), ("chr1", 512)]
    assert window_starts(c.out / "store") == [("chr1", 256), ("chr1", 512)]


@refused(1, "regions.bed", "'chrZ'", "chr1, chr2, chr3", "another assembly")
def bed_unknown_chromosome_regions(c):
    return c.predict(extra=["--regions", c.file("regions.bed", "chr1\t0\t100\nchrZ\t0\t100\n")])


@works
def bed_unknown_chromosome_blacklist(c):
    """A blacklist may list contigs this FASTA lacks: skipped, but said (once), not silently."""
    bed = c.file("black.bed", "chrZ\t0\t100\nchr1\t0\t100\nchrZ\t500\t600\n")
    outcome = invoke(c.prepare(extra=["--blacklist", bed]))
    assert_warned_once(outcome, "black.bed", "chrZ", "skipped")
    assert window_starts(c.out / "store") == [("chr1", 256), ("chr1", 512)]


@refused(1, "black.bed", "scaffold_9", "chr1, chr2, chr3", "assembly")
def bed_no_chromosome_in_common_blacklist(c):
    """Nothing of the blacklist on this genome: a real mismatch, never an empty blacklist."""
    return c.prepare(extra=["--blacklist", c.file("black.bed", "scaffold_9\t0\t100\n")])


# -- VCF (score-variants) ---------------------------------------------------------------------
def _strict_refuses(c: Ctx, vcf: Path, where: str, status: str) -> None:
    before = c.snapshot()
    assert_refused(invoke(c.score(vcf, out=c.out / "strict.tsv", extra=["--strict"])), 1,
                   [vcf.name, where, status, "--strict"])
    assert left_behind(before, c.snapshot()) == []


def flags(row: dict) -> List[str]:
    return [] if row["flags"] == "." else row["flags"].split(",")


def _scored(c: Ctx, vcf: Path, name: str = "scores.tsv", extra=()) -> List[dict]:
    """Score ``vcf``: exit 0, and the status summary is the one warning exactly when some allele was
    not scored (so that `-q` pipelines hear of it)."""
    outcome = invoke(c.score(vcf, out=c.out / name, extra=extra))
    rows = read_tsv(c.out / name)
    not_scored = {(r["chrom"], r["pos"], r["ref"], r["alt"]) for r in rows if r["status"] != "ok"}
    assert_ok(outcome, warnings=1 if not_scored else 0)
    if not_scored:
        assert f"({len(not_scored)} not scored: see the status column" in outcome.stderr, outcome.stderr
    return rows


@refused(1, "headless.vcf", "not a readable VCF", "##fileformat and #CHROM header lines")
def vcf_without_header(c):
    return c.score(c.file("headless.vcf", record("chr1", 6_001, "A", "C")))


@refused(1, "in.vcf", "malformed VCF line after record 1", "fix or remove that line")
def vcf_malformed_record(c):
    return c.score(c.vcf([c.snv(*SNVS[0]), "chr1\tsix-thousand\t.\tA\tC\t.\t.\t.\n"]))


@refused(1, "in.vcf.gz", "truncated", "again", process=True)
def vcf_truncated_bgzip(c):
    import pysam

    plain = c.vcf([c.snv(chrom, pos) for chrom, pos in SNVS] * 50)
    pysam.tabix_compress(str(plain), str(c.inp / "whole.vcf.gz"))
    data = (c.inp / "whole.vcf.gz").read_bytes()
    plain.unlink()
    (c.inp / "whole.vcf.gz").unlink()
    return c.score(c.file("in.vcf.gz", data[: len(data) // 2]))


@works
def vcf_unknown_contig(c):
    vcf = c.vcf([c.snv(*SNVS[0]), record("chrZ", 100, "A", "C")], contigs=[*SIZES, "chrZ"])
    rows = _scored(c, vcf)
    assert [(r["chrom"], r["status"]) for r in rows] == [("chr1", "ok"), ("chrZ", "unknown_chrom")]
    assert rows[1]["diff"] == "NA"
    _strict_refuses(c, vcf, "chrZ:100", "unknown_chrom")


@works
def vcf_ref_mismatch(c):
    chrom, pos = SNVS[0]
    base = c.good.seqs[chrom][pos - 1].upper()
    wrong = other_base(base)
    vcf = c.vcf([c.snv(*SNVS[1]), record(chrom, pos, wrong, other_base(wrong))])
    rows = _scored(c, vcf)
    assert [r["status"] for r in rows] == ["ok", "ref_mismatch"]
    _strict_refuses(c, vcf, f"{chrom}:{pos}", "ref_mismatch")
    before = c.snapshot()
    assert_refused(invoke(c.score(vcf, out=c.out / "error.tsv", extra=["--on-ref-mismatch", "error"])), 1,
                   [vcf.name, f"{chrom}:{pos}", "does not match the FASTA", "genome.fa", "--on-ref-mismatch"])
    assert left_behind(before, c.snapshot()) == []


@works
def vcf_symbolic_alt(c):
    chrom, pos = SNVS[0]
    vcf = c.vcf([record(chrom, pos, c.good.seqs[chrom][pos - 1].upper(), "<DEL>")])
    rows = _scored(c, vcf)
    assert [(r["alt"], r["status"]) for r in rows] == [("<DEL>", "symbolic_allele")]
    _strict_refuses(c, vcf, f"{chrom}:{pos}", "symbolic_allele")


@works
def vcf_star_allele(c):
    chrom, pos = SNVS[0]
    ref = c.good.seqs[chrom][pos - 1].upper()
    vcf = c.vcf([record(chrom, pos, ref, f"{other_base(ref)},*")])
    rows = _scored(c, vcf)
    assert [(r["alt"], r["status"]) for r in rows] == [(other_base(ref), "ok"), ("*", "symbolic_allele")]
    _strict_refuses(c, vcf, f"{chrom}:{pos}", "symbolic_allele")


@works
def vcf_lowercase_alleles(c):
    """Scored like the upper-case alleles, flagged ``lowercase``; not a problem for --strict."""
    upper = _scored(c, c.vcf([c.snv(*SNVS[0])], name="upper.vcf"), "upper.tsv")
    lower_vcf = c.vcf([c.snv(*SNVS[0], lower=True)], name="lower.vcf")
    lower = _scored(c, lower_vcf, "lower.tsv")
    assert lower[0]["status"] == upper[0]["status"] == "ok"
    assert flags(lower[0]) == ["lowercase", *flags(upper[0])] and "lowercase" not in flags(upper[0])
    assert {k: v for k, v in lower[0].items() if k != "flags"} == {k: v for k, v in upper[0].items() if k != "flags"}
    assert_ok(invoke(c.score(lower_vcf, out=c.out / "strict.tsv", extra=["--strict"])))


@works
def vcf_duplicate_records(c):
    vcf = c.vcf([c.snv(*SNVS[0]), c.snv(*SNVS[1]), c.snv(*SNVS[0])])
    rows = _scored(c, vcf)
    assert ["duplicate" in flags(r) for r in rows] == [False, False, True]
    assert flags(rows[2]) == ["duplicate", *flags(rows[0])]
    assert {k: v for k, v in rows[2].items() if k != "flags"} == {k: v for k, v in rows[0].items() if k != "flags"}
    assert_ok(invoke(c.score(vcf, out=c.out / "strict.tsv", extra=["--strict"])))


@works
def vcf_unsorted(c):
    """Rows come in input order with the same values as the sorted file's."""
    ordered = _scored(c, c.vcf([c.snv(*v) for v in SNVS], name="sorted.vcf"), "sorted.tsv")
    shuffled = _scored(c, c.vcf([c.snv(*v) for v in reversed(SNVS)], name="unsorted.vcf"), "unsorted.tsv")
    assert [(r["chrom"], int(r["pos"])) for r in shuffled] == list(reversed(SNVS))
    assert shuffled == list(reversed(ordered))
    assert all(r["status"] == "ok" for r in shuffled)


# -- model files (predict) --------------------------------------------------------------------
@refused(1, "missing.pt", "model file not found", "check the path")
def model_missing(c):
    return c.predict(model=c.inp / "missing.pt")


@refused(1, "locked.pt", "model file is not readable", "permissions")
def model_unreadable(c):
    model = c.file("locked.pt", c.good.model.read_bytes())
    c.deny(model, os.R_OK)
    return c.predict(model=model)


@refused(1, "cut.pt", "truncated or corrupt", "copy or download it again")
def model_truncated(c):
    data = c.good.model.read_bytes()
    return c.predict(model=c.file("cut.pt", data[: len(data) // 2]))


@refused(1, "v2.pt", "format version 2", "re-export")
def model_wrong_format_version(c):
    payload = c.model_payload()
    payload["format_version"] = 2
    torch.save(payload, c.inp / "v2.pt")
    return c.predict(model=c.inp / "v2.pt")


def _nothing_ran(c: Ctx, line: str) -> None:
    assert not (c.inp / "pwned.txt").exists()


@refused(1, "evil.pt", "refusing to load", "not a plain-data", "re-export", then=_nothing_ran)
def model_pickle_with_code(c):
    payload = c.model_payload()
    payload["provenance"] = {"note": _Exploit(c.inp / "pwned.txt")}
    torch.save(payload, c.inp / "evil.pt")
    assert not (c.inp / "pwned.txt").exists()
    return c.predict(model=c.inp / "evil.pt")


@refused(1, "edited.pt", "do not match the model config", "re-export")
def model_config_does_not_match_weights(c):
    payload = c.model_payload()
    payload["config"]["n_layers"] = 1
    torch.save(payload, c.inp / "edited.pt")
    return c.predict(model=c.inp / "edited.pt")


@refused(1, "empty.pt", "no tracks", "at least one track")
def model_zero_tracks(c):
    payload = c.model_payload()
    payload["tracks"] = []
    torch.save(payload, c.inp / "empty.pt")
    return c.predict(model=c.inp / "empty.pt")


# -- options ----------------------------------------------------------------------------------
@refused(2, "--shard 0/0", "between 1 and N")
def option_shard_0_of_0_predict(c):
    return c.predict(extra=["--shard", "0/0"])


@refused(2, "--shard 5/3", "between 1 and N")
def option_shard_5_of_3_predict(c):
    return c.predict(extra=["--shard", "5/3"])


@refused(2, "--shard 0/0", "between 1 and N")
def option_shard_0_of_0_score_variants(c):
    return c.score(c.vcf([c.snv(*SNVS[0])]), extra=["--shard", "0/0"])


@refused(2, "--shard 5/3", "between 1 and N")
def option_shard_5_of_3_score_variants(c):
    return c.score(c.vcf([c.snv(*SNVS[0])]), extra=["--shard", "5/3"])


@refused(2, "--batch-size must be at least 1, got 0")
def option_batch_size_0_predict(c):
    return c.predict(extra=["--batch-size", "0"])


@refused(2, "--batch-size must be at least 1, got 0")
def option_batch_size_0_score_variants(c):
    return c.score(c.vcf([c.snv(*SNVS[0])]), extra=["--batch-size", "0"])


@refused(2, "--batch-size must be at least 1, got 0")
def option_batch_size_0_train(c):
    return c.train(extra=["--batch-size", "0"])


@refused(1, "--device cuda", "no CUDA GPU", "use --device cpu")
def option_device_cuda_without_gpu_predict(c):
    c.no_gpu()
    return c.predict(device="cuda")


@refused(1, "--device cuda", "no CUDA GPU", "use --device cpu")
def option_device_cuda_without_gpu_score_variants(c):
    c.no_gpu()
    return c.score(c.vcf([c.snv(*SNVS[0])]), device="cuda")


@refused(1, "--device cuda", "no CUDA GPU", "use --device cpu")
def option_device_cuda_without_gpu_train(c):
    c.no_gpu()
    return c.train(device="cuda")


@works
def option_device_auto_falls_back_to_cpu(c):
    c.no_gpu()
    outcome = invoke(c.predict(device="auto"))
    assert_ok(outcome)
    notices = [line for line in outcome.stderr.splitlines() if "no GPU found: using the CPU" in line]
    assert len(notices) == 1 and notices[0].startswith("epiformer: ")
    assert_same_prediction(c.out / "pred.bw", c.good)


# -- outputs ----------------------------------------------------------------------------------
# a missing folder is made (mkdir -p) once the checks pass: tests/test_refusal_words.py
@refused(2, "a-file/sub/pred.bw", "a-file is a file, not a folder", "choose another --out")
def output_through_a_file_predict(c):
    c.put(c.out / "a-file", "mine")
    return c.predict(out=c.out / "a-file" / "sub" / "pred.bw")


@refused(2, "a-file/scores.tsv", "a-file is a file, not a folder", "choose another --out")
def output_through_a_file_score_variants(c):
    c.put(c.out / "a-file", "mine")
    return c.score(c.vcf([c.snv(*SNVS[0])]), out=c.out / "a-file" / "scores.tsv")


@refused(2, "a-file/pred.bw", "a-file is a file, not a folder", "choose another --out")
def output_through_a_file_export_bigwig(c):
    c.put(c.out / "a-file", "mine")
    return c.export(out=c.out / "a-file" / "pred.bw")


@refused(2, "locked/pred.bw", "not writable", "choose another --out")
def output_in_an_unwritable_folder_predict(c):
    (c.out / "locked").mkdir()
    c.deny(c.out / "locked", os.W_OK)
    return c.predict(out=c.out / "locked" / "pred.bw")


@refused(2, "locked/scores.tsv", "not writable", "choose another --out")
def output_in_an_unwritable_folder_score_variants(c):
    (c.out / "locked").mkdir()
    c.deny(c.out / "locked", os.W_OK)
    return c.score(c.vcf([c.snv(*SNVS[0])]), out=c.out / "locked" / "scores.tsv")


@refused(2, "locked/pred.bw", "not writable", "choose another --out")
def output_in_an_unwritable_folder_export_bigwig(c):
    (c.out / "locked").mkdir()
    c.deny(c.out / "locked", os.W_OK)
    return c.export(out=c.out / "locked" / "pred.bw")


def _forced_predict(c, line):
    assert_ok(invoke(c.predict(extra=["--force"])))
    assert_same_prediction(c.out / "pred.bw", c.good)


@refused(2, "pred.bw already exists", "--force", then=_forced_predict)
def output_exists_predict(c):
    c.put(c.out / "pred.bw", b"an earlier result")
    return c.predict()


def _forced_score(c, line):
    vcf = c.inp / "in.vcf"
    assert_ok(invoke(c.score(vcf, extra=["--force"])))
    assert [r["status"] for r in read_tsv(c.out / "scores.tsv")] == ["ok"]


@refused(2, "scores.tsv already exists", "--force", then=_forced_score)
def output_exists_score_variants(c):
    c.put(c.out / "scores.tsv", "an earlier result\n")
    return c.score(c.vcf([c.snv(*SNVS[0])]))


def _forced_export(c, line):
    assert_ok(invoke(c.export(extra=["--force"])))
    assert_same_prediction(c.out / "pred.bw", c.good)


@refused(2, "pred.bw already exists", "--force", then=_forced_export)
def output_exists_export_bigwig(c):
    c.put(c.out / "pred.bw", b"an earlier result")
    return c.export()


def _forced_train(c, line):
    from epiformer_cli.model.modelfile import load_model

    assert_ok(invoke(c.train(extra=["--force"])))
    assert load_model(c.out / "run" / "model.pt").tracks == ["A", "B"]
    assert (c.out / "run" / "metrics.tsv").read_text().startswith("split\tepoch")


@refused(2, "already holds a run", "--resume", "--force", then=_forced_train)
def output_exists_train(c):
    c.put(c.out / "run/model.pt", b"an earlier model")
    c.put(c.out / "run/metrics.tsv", "epoch\tstep\n1\t10\n")
    return c.train()


def _foreign_folder_even_with_force(c, line):
    before = c.snapshot()
    assert_refused(invoke(c.prepare(extra=["--force"])), 2, ["is not a prepared store"])
    assert left_behind(before, c.snapshot()) == []


@refused(2, "store exists and is not a prepared store", "choose another --out", then=_foreign_folder_even_with_force)
def output_exists_prepare(c):
    c.put(c.out / "store/notes.txt", "my own files")
    return c.prepare()


@refused(2, "cons.bw is the same file as --cons", "choose another output name")
def output_is_an_input_predict(c):
    return c.predict(out=c.good.cons, extra=["--force"])


@refused(2, "in.vcf is the same file as the VCF", "choose another output name")
def output_is_an_input_score_variants(c):
    return c.score(c.vcf([c.snv(*SNVS[0])]), out=c.inp / "in.vcf", extra=["--force"])


@refused(2, "genome.fa is the same file as --fasta", "choose another")
def output_is_an_input_prepare(c):
    return c.prepare(out=c.good.fasta, extra=["--force"])


@refused(2, "store is the same file as --data", "choose another")
def output_is_an_input_train(c):
    return c.train(out=c.good.store, extra=["--force"])


# ---- the matrix -----------------------------------------------------------------------------
def test_every_row_has_its_own_id():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(case, good, tmp_path, monkeypatch):
    clean_environment(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(good=good, tmp=tmp_path, inp=tmp_path / "in", out=tmp_path / "out", monkeypatch=monkeypatch)
    ctx.inp.mkdir()
    ctx.out.mkdir()
    inputs = snapshot(good.folder)
    try:
        case.run(ctx)
    finally:
        for undo in reversed(ctx.cleanups):
            undo()
    assert snapshot(good.folder) == inputs  # no row touches the shared inputs
