"""Fuzzing the command line: random bytes and random edits of valid inputs (BED, VCF, targets
sheets, stores, model files and checkpoints) and random option values, through every command.
Whatever comes in, a command ends in one of its documented ways.

For every example: exit 0, 1 or 2; without -v at most one ``epiformer: error:`` line, and no
"Traceback" nor "internal error" on stderr (nor an exception escaping the command); every input
byte-identical; no temporary file (``.NAME.HOST-PID.RANDOM.tmp``, see io/files.py) left anywhere;
after a failure no output under its real name, after exit 0 a complete one (read back).

The valid inputs are a tiny genome (3 chromosomes, 36 kb) and a tiny 2-track model, made once per
module. Each example runs in-process (Typer's CliRunner) in a fresh folder holding its own copies of
the inputs it edits; the shared inputs are hashed before and after every example too. Examples are
derandomized, so CI sees the same ones on every run. An example that runs longer than
:data:`EXAMPLE_SECONDS` fails as a hang (a huge number taken for a size). The smallest input of each
failure the fuzz tests met is kept as a plain case (:data:`FOUND`), and the checks themselves are
shown to catch each broken promise (``test_the_checks_catch_what_they_look_for``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import tempfile
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.model.config import preset
from epiformer_cli.model.modelfile import save_model
from tests.helpers import random_model, write_bigwig, write_fasta

pytestmark = pytest.mark.slow

#: an example running longer than this is a hang (the valid ones take well under a second)
EXAMPLE_SECONDS = 60

# ---- the valid inputs (tiny preset: 16,384 bp windows, 96 output bins of 128 bp) ----------------
SIZES = {"chr1": 17_000, "chr2": 16_500, "chr3": 3_000}
TRACKS = ["ASCT", "OPC"]
VCF_HEADER = ("##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c},length={n}>\n" for c, n in SIZES.items())
              + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
#: explain: two short regions (ISM of 18 bases); predict: the bins around them
REGIONS = b"chr1\t6000\t6010\tr1\nchr2\t3000\t3008\tr2\n"
#: prepare: drops the last chr1 window (starts 0, 256, 512 with --step 256)
BLACKLIST = b"chr1\t16800\t16900\tgap\n"
TARGETS = b"name\tpath\tscale\tclip\tstat\nA\ta.bw\t1.0\t128\tmean\nB\tb.bw\t2\t\tsum\n"


def _record(seqs: Dict[str, str], chrom: str, pos: int, ident: str = ".", ref_len: int = 1) -> str:
    """A VCF record at 1-based ``pos`` whose REF matches the genome: an SNV, or with ``ref_len`` > 1
    a deletion down to its first base."""
    ref = seqs[chrom][pos - 1:pos - 1 + ref_len].upper()
    alt = "ACGT"[("ACGT".index(ref[0]) + 1) % 4] if ref_len == 1 else ref[0]
    return f"{chrom}\t{pos}\t{ident}\t{ref}\t{alt}\t50\tPASS\tDP=10\n"


@pytest.fixture(scope="module", autouse=True)
def quiet_machine(tmp_path_factory):
    """One torch thread (tiny tensors; the machine is shared), and no EPIFORMER_* defaults, SLURM
    array or torchrun rank from the machine running the tests; HOME, the cache (XDG_CACHE_HOME, where
    epiformer keeps FASTA indexes it cannot write beside the FASTA) and the temp dir in tmp."""
    root = tmp_path_factory.mktemp("machine")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("EPIFORMER_", "SLURM_", "TORCHELASTIC_")) or name in (
                    "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"):
                mp.delenv(name)
        for name in ("home", "cache", "tmp"):
            (root / name).mkdir()
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.setenv("TMPDIR", str(root / "tmp"))
        mp.setattr(tempfile, "tempdir", str(root / "tmp"))
        yield root
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def valid(tmp_path_factory, quiet_machine):
    """The valid inputs, each also as bytes for the edits: FASTA (indexed), conservation, two target
    bigWigs and their sheet, a 2-track model, a published checkpoint, BED and VCF files, a
    prediction store and a prepared store (both made through the CLI), and a tiny model config."""
    from tests.published_reference import published_checkpoint, published_param, published_state_dict

    folder = tmp_path_factory.mktemp("valid")
    v = SimpleNamespace(folder=folder, tmp=quiet_machine / "tmp")
    rng = np.random.default_rng(5)
    seqs = {c: "".join(rng.choice(list("ACGTacgt"), n)) for c, n in SIZES.items()}

    def intervals(seed: int, step: int) -> dict:
        r = np.random.default_rng(seed)
        return {c: [(s, min(s + step, n), float(r.uniform(0.05, 0.95))) for s in range(0, n, step)]
                for c, n in SIZES.items()}

    v.fasta = write_fasta(folder / "genome.fa", seqs)
    v.cons = write_bigwig(folder / "cons.bw", SIZES, intervals(1, 50))
    write_bigwig(folder / "a.bw", SIZES, intervals(2, 64))
    write_bigwig(folder / "b.bw", SIZES, intervals(3, 64))
    v.bigwigs = [folder / "a.bw", folder / "b.bw"]
    (folder / "targets.tsv").write_bytes(TARGETS)
    v.targets = folder / "targets.tsv"
    model = random_model(seed=3)
    v.model = save_model(folder / "model.pt", model, model.config, TRACKS)
    v.model_bytes = v.model.read_bytes()
    v.config_bytes = json.dumps({k: val for k, val in asdict(preset("tiny")).items() if k != "arch"},
                                indent=1).encode()
    param = published_param(seq_len=16_384, max_len=160, embed_size=140, num_heads=8, num_encoder_layers=1,
                            multiout_dim=2, crop_size=16, dim_feedforward=256)
    v.checkpoint = folder / "brain.best_corr.pth.tar"
    torch.save(published_checkpoint(param, published_state_dict(param, stem_channels=64, width=128)), v.checkpoint)
    v.checkpoint_bytes = v.checkpoint.read_bytes()
    v.vcf_bytes = (VCF_HEADER + _record(seqs, "chr1", 6_001) + _record(seqs, "chr1", 9_001, "rs9")
                   + _record(seqs, "chr2", 3_001, ref_len=3) + _record(seqs, "chr3", 1_500)).encode()
    base = ["--fasta", v.fasta, "--cons", v.cons, "--model", v.model, "--device", "cpu"]
    v.genome_args = [str(a) for a in base]
    (folder / "ref").mkdir()
    v.pred_store = folder / "ref" / ".pred.bw.store"
    v.prep_store = folder / "store"
    with _chdir(folder):
        for args in (["predict", *base, "--no-rc-average", "--out", folder / "ref" / "pred.bw"],
                     ["prepare", "--fasta", v.fasta, "--cons", v.cons, "--targets", v.targets, "--preset", "tiny",
                      "--step", "256", "--valid-chroms", "chr2", "--test-chroms", "chr3", "--out", v.prep_store]):
            result = CliRunner().invoke(app, [str(a) for a in args])
            assert result.exit_code == 0, result.stderr
    v.pred_files = _files(v.pred_store)
    return v


# ---- edits of a valid input ---------------------------------------------------------------------
#: what edits insert or put in a field: separators, NUL, non-UTF-8 bytes, huge, negative and odd
#: numbers, names
TOKENS = [b"\t", b"\n", b"\r\n", b"\r", b"\x00", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf",
          b" ", b"", b",", b";", b"#", b">", b".", b"*", b"<DEL>", b"N", b"acgt", b"chrZ", b"chr1", b"1",
          b"0", b"-1", b"-17000", b"17000", b"16999", b"2147483648", b"9223372036854775807",
          b"9223372036854775808", b"-9223372036854775809", b"99999999999999999999999999", b"1e308", b"1e400",
          b"1.5", b"nan", b"inf", b"-inf", b"0x10", b"+3", b"1_000", "\u0663".encode(), "\u00e9".encode()]
POSITION = st.integers(0, 2**20)  # taken modulo the length: shrinks towards the start

EDIT = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(1, 255)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("insert"), POSITION, st.sampled_from(TOKENS)),
    st.tuples(st.just("field"), POSITION, POSITION, st.sampled_from(TOKENS)),
    st.tuples(st.just("duplicate line"), POSITION),
    st.tuples(st.just("remove line"), POSITION),
    st.tuples(st.just("shuffle lines"), st.integers(0, 2**16)),
)
#: a plan for an input's bytes: edits of the valid bytes (none: the valid input; a second list of one
#: or two edits makes two thirds of the plans edits), or random bytes
CONTENT = st.one_of(
    st.lists(EDIT, max_size=4).map(lambda edits: ("edits", tuple(edits))),
    st.lists(EDIT, min_size=1, max_size=2).map(lambda edits: ("edits", tuple(edits))),
    st.binary(max_size=200).map(lambda data: ("random bytes", data)),
)


def _edited(data: bytes, edit: tuple) -> bytes:
    kind, *args = edit
    if kind == "flip" and data:
        at = args[0] % len(data)
        return data[:at] + bytes([data[at] ^ args[1]]) + data[at + 1:]
    if kind == "truncate":
        return data[:args[0] % (len(data) + 1)]
    if kind == "insert":
        at = args[0] % (len(data) + 1)
        return data[:at] + args[1] + data[at:]
    lines = data.split(b"\n")
    at = args[0] % len(lines)
    if kind == "field":
        fields = lines[at].split(b"\t")
        fields[args[1] % len(fields)] = args[2]
        lines[at] = b"\t".join(fields)
    elif kind == "duplicate line":
        lines.insert(at, lines[at])
    elif kind == "remove line":
        del lines[at]
    elif kind == "shuffle lines":
        random.Random(args[0]).shuffle(lines)
    return b"\n".join(lines)


def content(valid_bytes: bytes, plan: tuple) -> bytes:
    """The bytes ``plan`` (drawn from :data:`CONTENT`) makes of ``valid_bytes``."""
    kind, value = plan
    if kind == "random bytes":
        return value
    for edit in value:
        valid_bytes = _edited(valid_bytes, edit)
    return valid_bytes


def compressed(data: bytes, how: Optional[str]) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "bgzip":
        import pysam

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "x.gz")
            with pysam.BGZFile(path, "wb") as handle:
                handle.write(data)
            return Path(path).read_bytes()
    return data


def draw_input(data, name: str, valid_bytes: bytes, compressions: Sequence[Optional[str]] = (None,)) -> bytes:
    """Draw an edited copy of ``valid_bytes`` (maybe compressed), noted for the reproducer."""
    raw = content(valid_bytes, data.draw(CONTENT, label=f"{name} plan"))
    how = data.draw(st.sampled_from(compressions), label=f"{name} compression") if len(compressions) > 1 else None
    note(f"{name} bytes{f' ({how}ped)' if how else ''}: {raw[:600]!r}{' ...' if len(raw) > 600 else ''}")
    return compressed(raw, how)


# ---- option values ------------------------------------------------------------------------------
def values(*texts: str) -> st.SearchStrategy[str]:
    return st.sampled_from(texts)


ODD = ("", " ", "abc", "\t", "1\n2", "\u00e9", ",", "-", "nan", "inf", "1e9", "1.5", "0x10", "+2", " 2", "\u0663")
#: counts where a huge value is only big (never a loop of that many steps or processes)
COUNTS = values("0", "1", "2", "3", "-1", "-7", "2147483648", "9223372036854775808", "99999999999999999999", *ODD)
#: counts where a huge value would run for ever (training steps, worker processes): none
SMALL_COUNTS = values("0", "1", "2", "-1", "-7", *ODD)
FLOATS = values("0", "1", "0.5", "-1", "-0.0", "1e308", "1e-320", "nan", "inf", "-inf", "99999999999999999999",
                "abc", "", "1,5")
SHARDS = values("1/1", "1/2", "2/2", "2/3", "0/0", "0/2", "3/2", "1/0", "-1/2", "1/-2", "a/b", "1", "1/", "/2",
                "1/2/3", "1/99999999999999999999", "99999999999999999999/99999999999999999999", " 1/2", "")
PRECISIONS = values("fp32", "bf16", "fp16", "FP32", "fp64", "int8", "")
DEVICES = values("cpu", "auto", "cuda", "cuda:7", "mps", "tpu", "")
TRACK_LISTS = values("ASCT", "OPC", "ASCT,OPC", "OPC,ASCT", "ASCT,ASCT", "asct", "NOPE", "ASCT,NOPE", "", ",",
                     "ASCT,", " ASCT", "ASCT\tOPC", "ASCT\nOPC", "\u00e9")
CHROM_LISTS = values("chr1", "chr2", "chr3", "chr1,chr2", "1", "chrZ", "chr1,chrZ", "", ",", "chr1,chr1",
                     "chr1 ", "CHR1", "chrM")
FLAG = st.none()


def draw_options(data, choices: Dict[str, st.SearchStrategy], max_size: int = 4) -> List[str]:
    """Up to ``max_size`` of ``choices``' options, each with a drawn value (``None``: a flag)."""
    names = data.draw(st.lists(st.sampled_from(sorted(choices)), unique=True, max_size=max_size), label="options")
    out: List[str] = []
    for name in names:
        value = data.draw(choices[name], label=name)
        out += [name] if value is None else [name, value]
    return out


# ---- one example: its folder, its run, the checks -----------------------------------------------
@contextmanager
def _chdir(folder: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so neither the command's error handler nor the
    runner take it for the command's own failure."""


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def ring(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Work:
    """One example's folder (the working directory while it runs): ``inp`` holds the inputs it
    made or edited, ``out`` is where outputs go."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inp = root / "in"
        self.out = root / "out"
        self.inp.mkdir()
        self.out.mkdir()

    def file(self, name: str, data: bytes) -> Path:
        path = self.inp / name
        path.write_bytes(data)
        return path


@contextmanager
def example_folder(valid) -> Iterator[Work]:
    root = Path(tempfile.mkdtemp(prefix="example-", dir=valid.folder.parent))
    try:
        with _chdir(root):
            yield Work(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def out_path(data, work: Work, name: str, *, inputs: Sequence[Path] = ()) -> Path:
    """Where the command is told to write: mostly a fresh name, else a relative or odd name, a
    missing folder, an existing folder, or one of the example's own inputs."""
    choices = {"fresh": work.out / name, "relative": Path(name),
               "spaces and accents": work.out / f"r\u00e9sultat 1 {name}",
               "newline in the name": work.out / f"a\nb{name}", "missing folder": work.out / "missing" / name,
               "existing folder": work.out, **{f"input {p.name}": p for p in inputs}}
    weights = ["fresh"] * 6 + sorted(choices)
    return choices[data.draw(st.sampled_from(weights), label="--out")]


@dataclass
class Case:
    """A command line and what it must leave: ``results()`` lists its outputs under their real names
    as they exist now (absent after a failure); ``complete(stdout)`` reads them back after exit 0
    (raising if one is missing or incomplete)."""

    args: List[object]
    results: Callable[[], List[Path]]
    complete: Callable[[str], None]
    stdin: Optional[bytes] = None
    shared_inputs: List[Path] = field(default_factory=list)


TEMPORARY = re.compile(r"^\..+\.[^./]+-\d+\.[0-9a-f]{8}\.tmp$")


def _files(root: Path) -> Dict[str, str]:
    """Every file under ``root`` (relative path -> sha256); lock files (advisory, not data) left out."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _temporaries(*roots: Path) -> List[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if TEMPORARY.match(path.name) or path.name.startswith("epiformer-stdin-"):
                found.append(str(path))
    return sorted(found)


def check(case: Case, valid, work: Work, command_app=app) -> None:
    """Run ``case`` (through ``command_app``: the epiformer app) and assert everything the module
    docstring promises."""
    args = [str(a) for a in case.args]
    shown = "epiformer " + " ".join(a if re.fullmatch(r"[-\w./:,]+", a) else repr(a) for a in args)
    shared = _files(valid.folder)
    inputs = _files(work.inp)
    existed = set(case.results())
    temporaries = set(_temporaries(work.root, valid.folder, valid.tmp))  # an earlier example's are its own finding
    with _time_limit(EXAMPLE_SECONDS):
        result = CliRunner().invoke(command_app, args, input=case.stdin)
    stderr = result.stderr
    problems = []
    if result.exit_code not in (0, 1, 2):
        problems.append(f"exit code {result.exit_code}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        last = traceback.format_exception(result.exception)[-1].strip()
        problems.append(f"exception escaped the command: {last}")
    errors = [line for line in stderr.splitlines() if line.startswith("epiformer: error:")]
    if len(errors) > 1:
        problems.append(f"{len(errors)} error lines")
    for word in ("Traceback", "internal error"):
        if word in stderr:
            problems.append(f"{word!r} on stderr")
    shared_after, inputs_after = _files(valid.folder), _files(work.inp)
    changed = sorted(p for p, h in shared.items() if shared_after.get(p) != h)
    changed += sorted(f"in/{p}" for p, h in inputs.items() if inputs_after.get(p) != h)
    if changed:
        problems.append(f"inputs changed: {changed}")
    left = sorted(set(_temporaries(work.root, valid.folder, valid.tmp)) - temporaries)
    if left:
        problems.append(f"temporary files left: {left}")
    if result.exit_code != 0:
        partial = sorted(str(p) for p in set(case.results()) - existed)
        if partial:
            problems.append(f"exit {result.exit_code} left output(s) {partial}")
    elif not problems:
        try:
            case.complete(result.stdout)
        except Exception as exc:  # noqa: BLE001 - any failure to read an output back is the finding
            problems.append(f"exit 0 but incomplete output: {type(exc).__name__}: {exc}")
    assert not problems, "; ".join(problems) + f"\n{shown}\nexit {result.exit_code}, stderr:\n{stderr[-1500:]}"


# ---- reading outputs back -----------------------------------------------------------------------
def assert_bigwig(path: Path) -> None:
    import pyBigWig

    bw = pyBigWig.open(str(path))
    assert bw is not None, f"{path}: not a bigWig"
    try:
        chroms = bw.chroms()
        assert chroms and set(chroms) <= set(SIZES) and all(chroms[c] == SIZES[c] for c in chroms), chroms
        for chrom in chroms:
            bw.intervals(chrom)
    finally:
        bw.close()


def assert_table(text: str, first: str) -> None:
    """A TSV with a header starting ``first`` and the header's number of fields on every line."""
    lines = text.splitlines()
    assert lines and lines[0].startswith(first), lines[:1]
    width = len(lines[0].split("\t"))
    assert all(len(line.split("\t")) == width for line in lines), "ragged table"


def bigwigs(out: Path) -> List[Path]:
    """A bigWig output: ``out`` itself, or one file per track beside it (pred.bw -> pred.<track>.bw)."""
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        return []
    beside = [p for p in folder.glob(f"{glob_escape(out.stem)}.*{glob_escape(out.suffix)}") if p != out]
    return sorted(([out] if out.is_file() else []) + beside)


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def bigwig_case(args: List[object], out: Path, optional: bool, **kw) -> Case:
    """A command writing bigWig(s) at ``out``; with ``optional`` (a --shard run) exit 0 may leave none."""
    def complete(stdout: str) -> None:
        written = bigwigs(out)
        assert written or optional, f"no bigWig at {out}"
        for path in written:
            assert_bigwig(path)

    return Case(args, results=lambda: bigwigs(out), complete=complete, **kw)


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---- the commands: what each is told and what it must leave --------------------------------------
def score_variants_case(valid, vcf: object, out: Path, options: List[str], stdin: Optional[bytes] = None) -> Case:
    """``score-variants`` (no calibration null: --null-size 0) on the valid genome and model."""
    vcf_format = ("--format" in options and options[options.index("--format") + 1] == "vcf") or (
        "--format" not in options and out.name.endswith((".vcf", ".vcf.gz", ".bcf")))

    def results() -> List[Path]:
        return [out] if out.name != "-" and out.is_file() else []

    def complete(stdout: str) -> None:
        if out.name == "-":
            text = stdout
        elif "--shard" in options and not out.exists():
            return  # the last shard to finish assembles it
        elif vcf_format:
            import pysam

            with pysam.VariantFile(str(out)) as reader:
                list(reader)
            return
        else:
            raw = out.read_bytes()
            text = (gzip.decompress(raw) if out.name.endswith(".gz") else raw).decode()
        if vcf_format:
            assert text.startswith("##fileformat=VCF"), text[:80]
        else:
            assert_table(text, "chrom\tpos\tid\tref\talt\ttrack")

    args = ["score-variants", vcf, *valid.genome_args, "--null-size", "0", "--no-rc-average", "--out", out, *options]
    return Case(args, results, complete, stdin=stdin)


EXPLAIN_RESULTS = ("regions.tsv", "contrib.npz", "plots")


def explain_case(valid, what: List[object], out: Path, options: List[str]) -> Case:
    """``explain`` of ``what`` (``--regions BED`` or ``--variants VCF --flank N``), no plots, ISM of
    at most 400 mutants (a huge region is refused, never run)."""
    def results() -> List[Path]:
        if not out.is_dir():
            return [out] if out.exists() else []
        return sorted(p for p in out.iterdir() if p.name in EXPLAIN_RESULTS or p.name.startswith("contrib."))

    def complete(stdout: str) -> None:
        if "--shard" in options and not (out / "regions.tsv").exists():
            return  # the last shard to finish writes the outputs
        assert_table((out / "regions.tsv").read_text(), "index\tname\tchrom\tstart\tend")
        with np.load(out / "contrib.npz") as npz:
            for key in npz.files:
                npz[key]
        tracks = sorted(out.glob("contrib.*.bw"))
        assert tracks, "no contrib.<track>.bw"
        for path in tracks:
            assert_bigwig(path)
        json.loads((out / "explain.json").read_text())

    args = ["explain", *what, *valid.genome_args, "--plot", "0", "--max-mutants", "400", "--no-rc-average",
            "--out", out, *options]
    return Case(args, results, complete)


def predict_case(valid, out: Path, options: List[object]) -> Case:
    args = ["predict", *valid.genome_args, "--no-rc-average", "--out", out, *options]
    return bigwig_case(args, out, optional="--shard" in options)


def export_case(store: Path, out: Path, options: List[str]) -> Case:
    return bigwig_case(["export-bigwig", store, "--out", out, *options], out, optional=False)


def prepare_case(valid, sheet: Path, out: Path, options: List[object]) -> Case:
    """``prepare`` (tiny windows, step 256: 4 windows) from ``sheet`` on the valid genome."""
    def results() -> List[Path]:
        return [out] if out.exists() else []

    def complete(stdout: str) -> None:
        from epiformer_cli.data.training_store import TrainingStore

        TrainingStore(out).verify()

    args = ["prepare", "--fasta", valid.fasta, "--cons", valid.cons, "--targets", sheet, "--preset", "tiny",
            "--step", "256", "--valid-chroms", "chr2", "--test-chroms", "chr3", "--out", out, *options]
    return Case(args, results, complete)


def train_case(valid, source: List[object], out: Path, options: List[str]) -> Case:
    """``train`` on the valid prepared store for one step (``source``: --preset, --config or --init)."""
    def results() -> List[Path]:
        return [out / "model.pt"] if (out / "model.pt").exists() else []

    def complete(stdout: str) -> None:
        from epiformer_cli.model.modelfile import load_model

        load_model(out / "model.pt")
        assert_table((out / "metrics.tsv").read_text(), "split\tepoch")

    args = ["train", "--data", valid.prep_store, *source, "--workers", "0", "--device", "cpu", "--max-steps", "1",
            "--batch-size", "2", "--out", out, *options]
    return Case(args, results, complete)


def info_case(model: Optional[Path], flags: List[str]) -> Case:
    def complete(stdout: str) -> None:
        if flags:
            json.loads(stdout)
        else:
            assert stdout.strip(), "nothing printed"

    return Case(["info", *([model] if model is not None else []), *flags], results=lambda: [], complete=complete)


def import_case(checkpoint: Path, tracks: List[object], out: Path, options: List[str]) -> Case:
    def results() -> List[Path]:
        return [out] if out.is_file() else []

    def complete(stdout: str) -> None:
        from epiformer_cli.model.modelfile import load_model

        assert len(load_model(out).tracks) == 2

    return Case(["import-model", checkpoint, *tracks, "--out", out, *options], results, complete)


# ---- the fuzz tests: one per command ------------------------------------------------------------
@fuzz(examples=160)
@given(data=st.data())
def test_score_variants(valid, data):
    with example_folder(valid) as work:
        name = data.draw(st.sampled_from(["in.vcf"] * 4 + ["in.vcf.gz", "in.bcf", "in.txt", "-"]), label="VCF name")
        vcf_bytes = draw_input(data, "VCF", valid.vcf_bytes, (None, None, None, "gzip", "bgzip"))
        vcf: object = "-" if name == "-" else work.file(name, vcf_bytes)
        out_name = data.draw(st.sampled_from(["scores.tsv"] * 3 + ["scores.vcf", "scores.vcf.gz", "scores.bcf",
                                                                  "scores.tsv.gz", "-"]), label="output name")
        out = Path("-") if out_name == "-" else out_path(data, work, out_name, inputs=[vcf] if name != "-" else [])
        options = draw_options(data, {
            "--tracks": TRACK_LISTS, "--score-bins": COUNTS, "--window-mode": values("grid", "centered", "centred", ""),
            "--on-ref-mismatch": values("skip", "error", "use-vcf-ref", "ignore", ""), "--batch-size": COUNTS,
            "--precision": PRECISIONS, "--shard": SHARDS, "--chunk-size": COUNTS,
            "--format": values("tsv", "vcf", "bcf", "csv", ""), "--strict": FLAG, "--force": FLAG,
            "--rc-average": FLAG, "--seed": COUNTS, "--device": DEVICES,
            "--null-size": values("0", "-1", "abc", ""), "--no-cons": FLAG,
        })
        check(score_variants_case(valid, vcf, out, options, stdin=vcf_bytes if name == "-" else None), valid, work)


EXPLAIN_OPTIONS = {
    "--method": values("ism", "gradient", "ISM", "deeplift", ""), "--tracks": TRACK_LISTS,
    "--plot": values("0", "1", "-1", "abc"), "--max-mutants": values("0", "1", "50", "-1", "abc"),
    "--precision": PRECISIONS, "--shard": SHARDS, "--force": FLAG, "--rc-average": FLAG, "--device": DEVICES,
}


@fuzz(examples=100)
@given(data=st.data())
def test_explain_regions(valid, data):
    with example_folder(valid) as work:
        bed = work.file("regions.bed", draw_input(data, "BED", REGIONS, (None, None, "gzip", "bgzip")))
        out = out_path(data, work, "explained", inputs=[bed])
        check(explain_case(valid, ["--regions", bed], out, draw_options(data, EXPLAIN_OPTIONS, max_size=3)),
              valid, work)


@fuzz(examples=100)
@given(data=st.data())
def test_explain_variants(valid, data):
    with example_folder(valid) as work:
        vcf = work.file("in.vcf", draw_input(data, "VCF", valid.vcf_bytes, (None, None, "gzip", "bgzip")))
        flank = data.draw(values("5", "5", "0", "1", "-1", "abc", "99999999999999999999"), label="--flank")
        out = out_path(data, work, "explained", inputs=[vcf])
        check(explain_case(valid, ["--variants", vcf, "--flank", flank], out,
                           draw_options(data, EXPLAIN_OPTIONS, max_size=3)), valid, work)


@fuzz(examples=160)
@given(data=st.data())
def test_predict(valid, data):
    with example_folder(valid) as work:
        regions: List[object] = []
        if data.draw(st.booleans(), label="--regions"):
            regions = ["--regions", work.file("regions.bed", draw_input(data, "BED", REGIONS, (None, None, "gzip")))]
        out = out_path(data, work, "pred.bw", inputs=regions[1:])
        options = draw_options(data, {
            "--chroms": CHROM_LISTS, "--tracks": TRACK_LISTS, "--batch-size": COUNTS, "--precision": PRECISIONS,
            "--shifts": values("0", "0,-3,3", "64", "-64", "0,0", "a", "", "99999999999999999999"),
            "--shard": SHARDS, "--chunk-windows": COUNTS, "--store-dtype": values("float32", "float16", "int8", ""),
            "--window": values("16384", "4096", "0", "-1", "99999999999999999999", "abc"),
            "--store": values("store", "", "out", "in"), "--force": FLAG, "--rc-average": FLAG, "--no-cons": FLAG,
            "--device": DEVICES,
        })
        check(predict_case(valid, out, [*regions, *options]), valid, work)


@fuzz(examples=130)
@given(data=st.data())
def test_export_bigwig(valid, data):
    with example_folder(valid) as work:
        kind = data.draw(st.sampled_from(["prediction store"] * 4 + ["prepared store", "missing", "a file",
                                                                     "empty folder"]), label="store")
        store: Path = work.inp / "pred.store"
        if kind == "prediction store":  # a copy, with up to two of its files edited or removed
            shutil.copytree(valid.pred_store, store)
            edits = st.lists(st.tuples(st.sampled_from(sorted(valid.pred_files)), CONTENT | st.just(("remove", None))),
                             max_size=2)
            for name, plan in data.draw(edits, label="store edits"):
                target = store / name
                if plan[0] == "remove":
                    target.unlink(missing_ok=True)
                elif target.exists():
                    target.write_bytes(content(target.read_bytes(), plan))
        elif kind == "prepared store":
            store = valid.prep_store
        elif kind == "a file":
            store = work.file("model.pt", valid.model_bytes)
        elif kind == "empty folder":
            store.mkdir()
        out = out_path(data, work, "exported.bw", inputs=[store] if kind == "a file" else [])
        options = draw_options(data, {"--tracks": TRACK_LISTS | values("A", "B", "A,B"), "--allow-missing": FLAG,
                                      "--force": FLAG})
        check(export_case(store, out, options), valid, work)


@fuzz(examples=160)
@given(data=st.data())
def test_prepare(valid, data):
    with example_folder(valid) as work:
        for bw in valid.bigwigs:  # the sheet's relative paths name the bigWigs beside it
            shutil.copy(bw, work.inp / bw.name)
        sheet = work.file("targets.tsv", draw_input(data, "targets sheet", TARGETS, (None, None, "gzip", "bgzip")))
        blacklist: List[object] = []
        if data.draw(st.booleans(), label="--blacklist"):
            bed = work.file("black.bed", draw_input(data, "BED", BLACKLIST, (None, None, "gzip")))
            blacklist = ["--blacklist", bed]
        out = out_path(data, work, "store", inputs=[sheet])
        options = draw_options(data, {
            "--chroms": CHROM_LISTS, "--valid-chroms": CHROM_LISTS, "--test-chroms": CHROM_LISTS,
            "--preset": values("tiny", "small", "published", "huge", ""),
            "--window": values("16384", "4096", "128", "100", "0", "-128", "99999999999999999999", "abc"),
            "--step": COUNTS, "--max-n-fraction": FLOATS, "--no-cons": FLAG, "--force": FLAG,
        })
        check(prepare_case(valid, sheet, out, [*blacklist, *options]), valid, work)


@fuzz(examples=80)
@given(data=st.data())
def test_train(valid, data):
    with example_folder(valid) as work:
        model_from = data.draw(st.sampled_from(["--preset"] * 3 + ["--config", "--init"]), label="model from")
        if model_from == "--config":
            source: List[object] = ["--config", work.file("model.json", draw_input(data, "config", valid.config_bytes))]
        elif model_from == "--init":
            source = ["--init", work.file("init.pt", draw_input(data, "model file", valid.model_bytes))]
        else:
            source = ["--preset", data.draw(values("tiny", "tiny", "small", "nope", ""), label="--preset")]
        out = out_path(data, work, "run", inputs=source[1:] if model_from != "--preset" else [])
        options = draw_options(data, {
            "--epochs": COUNTS, "--max-steps": SMALL_COUNTS, "--batch-size": COUNTS, "--accumulate": SMALL_COUNTS,
            "--lr": FLOATS, "--weight-decay": FLOATS, "--warmup-steps": COUNTS,
            "--loss": values("poisson", "poisson-multinomial", "mse", ""), "--seed": COUNTS,
            "--workers": values("0", "-1", "abc", ""), "--checkpoint-every": COUNTS, "--precision": PRECISIONS,
            "--resume": FLAG, "--force": FLAG, "--device": values("cpu", "cuda", "tpu", ""),
        })
        check(train_case(valid, source, out, options), valid, work)


@fuzz(examples=100)
@given(data=st.data())
def test_info(valid, data):
    with example_folder(valid) as work:
        kind = data.draw(st.sampled_from(["edited"] * 4 + ["missing", "a folder", "a text file", "none"]),
                         label="model")
        model = {"edited": lambda: work.file("model.pt", draw_input(data, "model file", valid.model_bytes)),
                 "missing": lambda: work.inp / "missing.pt", "a folder": lambda: work.inp,
                 "a text file": lambda: valid.targets, "none": lambda: None}[kind]()
        check(info_case(model, data.draw(st.sampled_from([[], ["--json"]]), label="flags")), valid, work)


@fuzz(examples=100)
@given(data=st.data())
def test_import_model(valid, data):
    with example_folder(valid) as work:
        checkpoint = work.file("brain.pth.tar", draw_input(data, "checkpoint", valid.checkpoint_bytes))
        tracks = data.draw(st.sampled_from(["a,b", "a,b", "none", "a", "a,a", "a,b,c", "", ",", "a,", "\u00e9,\u00fc",
                                            "a\tb,c", "a\nb,c", "file"]), label="--tracks")
        track_args: List[object] = [] if tracks == "none" else ["--tracks", tracks]
        if tracks == "file":
            names = work.file("names.txt", draw_input(data, "names", b"# cell types\nASCT\tastrocytes\n\nOPC\n"))
            track_args = ["--tracks", names]
        out = out_path(data, work, "brain.pt", inputs=[checkpoint])
        check(import_case(checkpoint, track_args, out, draw_options(data, {"--force": FLAG})), valid, work)


# ---- what the fuzz tests found, kept as plain cases ---------------------------------------------
def _store_without_fingerprint(valid, work: Work) -> Case:
    store = work.inp / "pred.store"
    shutil.copytree(valid.pred_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    del manifest["fingerprint"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    return export_case(store, work.out / "exported.bw", [])


def _store_with_a_bad_byte(valid, work: Work) -> Case:
    store = work.inp / "pred.store"
    shutil.copytree(valid.pred_store, store)
    (store / "manifest.json").write_bytes(b"{\xff" + (store / "manifest.json").read_bytes()[2:])
    return export_case(store, work.out / "exported.bw", [])


NOT_A_VCF = gzip.compress(b"\x00")
BAD_ALT = VCF_HEADER.encode() + b"chr1\t6001\t.\tG\t\xb4\t.\t.\t.\n"
BAD_CHROM = VCF_HEADER.encode() + b"\xff\xfechr1\t6001\t.\tG\tT\t.\t.\t.\n"

#: the smallest input of each distinct failure the fuzz tests met (each once found by them)
FOUND: Dict[str, Callable[..., Case]] = {
    "score-variants: a plain-gzip file that is not a VCF": lambda v, w: score_variants_case(
        v, w.file("in.vcf.gz", NOT_A_VCF), w.out / "scores.tsv", []),
    "score-variants: the same on standard input": lambda v, w: score_variants_case(
        v, "-", w.out / "scores.tsv", [], stdin=NOT_A_VCF),
    "score-variants: a non-UTF-8 ALT": lambda v, w: score_variants_case(
        v, w.file("in.vcf", BAD_ALT), w.out / "scores.tsv", []),
    "explain: a plain-gzip file that is not a VCF": lambda v, w: explain_case(
        v, ["--variants", w.file("in.vcf.gz", NOT_A_VCF), "--flank", "5"], w.out / "explained", []),
    "explain: a non-UTF-8 CHROM": lambda v, w: explain_case(
        v, ["--variants", w.file("in.vcf", BAD_CHROM), "--flank", "5"], w.out / "explained", []),
    "export-bigwig: a store manifest without its fingerprint": _store_without_fingerprint,
    "export-bigwig: a non-UTF-8 byte in a store manifest": _store_with_a_bad_byte,
    "train: a non-UTF-8 --config": lambda v, w: train_case(
        v, ["--config", w.file("model.json", b"\x80")], w.out / "run", []),
    "prepare: a NUL in a targets sheet path": lambda v, w: prepare_case(
        v, w.file("targets.tsv", b"name\tpath\nA\ta.\x00bw\n"), w.out / "store", []),
    "info: a file of random bytes": lambda v, w: info_case(w.file("model.pt", b"acgt"), []),
    "import-model: a checkpoint with its first byte flipped": lambda v, w: import_case(
        w.file("brain.pth.tar", b"Q" + v.checkpoint_bytes[1:]), ["--tracks", "a,b"], w.out / "brain.pt", []),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_found_by_fuzzing(valid, name):
    with example_folder(valid) as work:
        check(FOUND[name](valid, work), valid, work)


# ---- the checks themselves ----------------------------------------------------------------------
def _misbehaving_app():
    """A one-command app that breaks each promise on demand (and keeps them all with "keeps them")."""
    import typer

    fake = typer.Typer()

    @fake.command()
    def run(mode: str, source: Path, out: Path) -> None:
        if mode == "exits 3":
            raise typer.Exit(3)
        if mode == "says two errors":
            typer.echo("epiformer: error: one\nepiformer: error: two", err=True)
            raise typer.Exit(1)
        if mode == "prints a traceback":
            typer.echo("Traceback (most recent call last):", err=True)
            raise typer.Exit(1)
        if mode == "lets an exception escape":
            raise ValueError("a bug")
        if mode == "leaves a temporary":
            (out.parent / f".{out.name}.host-1.0123abcd.tmp").write_bytes(b"")
            raise typer.Exit(1)
        if mode == "fails leaving its output":
            out.write_bytes(b"half")
            raise typer.Exit(1)
        if mode == "exits 0 with half an output":
            out.write_bytes(b"half")
            return
        if mode == "edits its input":
            source.write_bytes(b"changed")
        out.write_text("chrom\tpos\tid\tref\talt\ttrack\n")

    return fake


@pytest.mark.parametrize("mode, finding", [
    ("keeps them", None),
    ("exits 3", "exit code 3"),
    ("says two errors", "2 error lines"),
    ("prints a traceback", "'Traceback' on stderr"),
    ("lets an exception escape", "exception escaped the command: ValueError: a bug"),
    ("leaves a temporary", "temporary files left: .*0123abcd.tmp"),
    ("fails leaving its output", "exit 1 left output"),
    ("exits 0 with half an output", "exit 0 but incomplete output"),
    ("edits its input", r"inputs changed: \['in/in.vcf'\]"),
])
def test_the_checks_catch_what_they_look_for(valid, mode, finding):
    @settings(max_examples=1, database=None)
    @given(st.none())
    def run(_):
        with example_folder(valid) as work:
            source, out = work.file("in.vcf", valid.vcf_bytes), work.out / "scores.tsv"
            case = Case([mode, source, out], results=lambda: [out] if out.exists() else [],
                        complete=lambda stdout: assert_table(out.read_text(), "chrom\tpos\tid\tref\talt\ttrack"))
            if finding is None:
                check(case, valid, work, command_app=_misbehaving_app())
            else:
                with pytest.raises(AssertionError, match=finding):
                    check(case, valid, work, command_app=_misbehaving_app())

    run()
