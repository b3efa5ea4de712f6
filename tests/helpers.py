"""Helpers shared by the tests: tiny inputs made in tmp_path (never downloaded), random models,
and the jobs called with flat keyword arguments. Test files import from here, never from each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch

import epiformer_cli
from epiformer_cli.jobs.predict import predict_genome
from epiformer_cli.model.config import preset
from epiformer_cli.model.modelfile import save_model
from epiformer_cli.model.network import Epiformer, build_network
from epiformer_cli.options import PredictOptions


# ---- files ------------------------------------------------------------------------------------
def write_fasta(path: Path, records: dict[str, str], width: int = 60, newline: str = "\n") -> Path:
    """Write ``records`` (name -> sequence) as a FASTA with ``width``-column lines."""
    with open(path, "w", newline="") as handle:
        for name, seq in records.items():
            handle.write(f">{name}{newline}")
            for i in range(0, len(seq), width):
                handle.write(seq[i : i + width] + newline)
    return path


def write_bigwig(path: Path, chrom_sizes: dict[str, int], intervals: dict[str, list[tuple[int, int, float]]]) -> Path:
    """Write a bigWig with explicit (start, end, value) intervals per chromosome."""
    import pyBigWig

    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(chrom_sizes.items()))
    for chrom in chrom_sizes:
        entries = intervals.get(chrom, [])
        if entries:
            bw.addEntries([chrom] * len(entries), [s for s, _, _ in entries], ends=[e for _, e, _ in entries],
                          values=[float(v) for _, _, v in entries])
    bw.close()
    return path

# ---- models -----------------------------------------------------------------------------------
#: overrides of the tiny preset that make it the published family (16,384 bp -> 128 bins).
PUBLISHED_TINY = dict(arch="published", conservation="scale", rel_positions=140, abs_positions=128, head_hidden=128)


def random_model(seed: int = 0, **overrides) -> Epiformer:
    """A tiny Epiformer (or, with PUBLISHED_TINY, published network) with random weights and
    non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    return with_batchnorm_statistics(build_network(preset("tiny", n_tracks=2, **overrides))).eval()


def with_batchnorm_statistics(model):
    """``model`` with non-trivial BatchNorm running statistics (fresh ones are mean 0, var 1, which
    would hide a wrongly folded BatchNorm), drawn from torch's current seed."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def sensitive_model(seed=0, **overrides):
    """A tiny model whose outputs actually move with single bases (random BN stats, larger weights)."""
    torch.manual_seed(seed)
    cfg = preset("tiny", n_tracks=3, **overrides)
    model = build_network(cfg)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_(1.0, 0.3)
                mod.bias.normal_(0, 0.3)
            if isinstance(mod, torch.nn.Conv1d):
                mod.weight.mul_(2.5)
    return model.eval()


# ---- float tolerances ---------------------------------------------------------------------------
#: the unit roundoff of a number printed with 6 significant digits (``%.6g``, as every TSV column and
#: VCF INFO value is written): half a unit in the 6th digit, relative.
PRINTED_6G = 0.5e-5


def float_tolerance(scale, *, terms: int = 1, depth: int = 1, summed: int = 1,
                    dtype=torch.float32) -> "float | np.ndarray":
    """The largest |a - b| to allow between two computations of the same values by DIFFERENT
    arithmetic: another path (fast vs eager, incremental vs full pass, ISM vs plain passes, ours vs
    the published reference, float32 vs float64, a value vs its printed form) or another CPU's
    kernels (AVX2, AVX-512 and AMX block their sums differently and fuse multiply-adds or not). One
    path on one machine is exact: compare those with ``==``, never with this.

    The derivation. Every rounding to ``dtype`` moves a value by at most its unit roundoff u,
    relative (2**-24 float32, 2**-53 float64, 2**-8 bfloat16, for a torch or numpy dtype; half a
    unit in the 6th digit for ``"%.6g"``, :data:`PRINTED_6G`). A sum of ``terms`` products rounds
    each partial sum, so summed in another order it moves by about u * sqrt(terms) of the size of
    its terms: the roundings are independent and of either sign, a random walk (Higham & Mary
    2019, "A new approach to probabilistic rounding error analysis"; the worst case,
    gamma_K = K u / (1 - K u), needs all K to fall the same way). ``depth`` such sums in sequence
    (a network's layers) each add their own, carried to the output at about the same relative
    size (normalisations keep activations O(1)); they are added linearly, the first-order worst
    case, not as a random walk (sqrt(depth)): that is the margin for amplification and for the
    walk's tail. Both computations err: x2 (for float32 vs float64 only one does, so the bound is
    conservative by 2). A compared value that adds ``summed`` such outputs (a prediction summed
    over bins; an effect, alt minus ref) adds their independent errors: x sqrt(summed). So

        |a - b| <= 2 * depth * u * sqrt(terms) * sqrt(summed) * scale,

    ``scale`` being the largest |output| entering the compared values (a number, or an array of
    them for a bound per value): for an effect, the size of the predictions it is a difference of,
    never the (much smaller) effect itself. With the defaults it is one rounding of each side, 2u.

    bfloat16 on a CPU accumulates its products in float32 (u 2**-24: negligible beside 2**-8), so
    for bfloat16 ``terms`` counts the roundings to bfloat16 an output goes through (see
    :func:`network_reductions`), not the length of its sums.
    """
    if isinstance(dtype, str):
        u = {"%.6g": PRINTED_6G}[dtype]
    else:
        u = (torch.finfo(dtype) if isinstance(dtype, torch.dtype) else np.finfo(dtype)).eps / 2
    bound = 2.0 * depth * u * float(np.sqrt(terms * summed))
    return bound * (float(scale) if np.ndim(scale) == 0 else np.asarray(scale, dtype=np.float64))


def network_reductions(cfg, dtype=torch.float32, *, tower: bool = True, trunk: bool = True) -> Dict[str, object]:
    """The ``terms``, ``depth`` and ``dtype`` of :func:`float_tolerance` for one forward pass of the
    network of ``cfg`` (a ModelConfig of either family), through its conv ``tower`` (stem and the six
    blocks) and/or its ``trunk`` (transformer and head); use as ``float_tolerance(scale, **...)``.

    terms: the longest sum: a tower convolution's input channels x kernel, the stem's, the
    feed-forward's and the head's hidden widths, attention over the bins. For bfloat16, the roundings
    to bfloat16 of one output: the k taps of the GEMM tower, each accumulated and rounded on its own
    (oneDNN's bf16 convolution rounds once: k is the worse of the two CPUs' kernels).
    depth: the layers that sum, in sequence: the stem's two convolutions and each block's two; per
    transformer layer q/k/v, the scores, softmax x values, the output projection and the two
    feed-forward layers (6); the head's two. For bfloat16, only the layers that run in it: a family
    whose trunk stays float32 under a bf16 tower (the published one) rounds 2**16 times finer there.
    """
    from epiformer_cli.data.encoding import input_channels
    from epiformer_cli.model.families import family

    sums, depth = [], 0
    if tower:
        widths = (cfg.stem_channels, *cfg.tower_channels[:-1])
        sums += [input_channels(cfg.conservation) * cfg.stem_kernel, *(c * cfg.tower_kernel for c in widths)]
        depth += 2 + 2 * len(cfg.tower_channels)
    if trunk and not (tower and dtype == torch.bfloat16 and family(cfg.arch).trunk_float32):
        sums += [cfg.d_model, cfg.ffn_dim, cfg.head_hidden, cfg.seq_len // 128]
        depth += 6 * cfg.n_layers + 2
    terms = (cfg.tower_kernel if tower else 1) if dtype == torch.bfloat16 else max(sums)
    return {"terms": terms, "depth": depth, "dtype": dtype}


# ---- a training store ---------------------------------------------------------------------------
WINDOW = 4096
CHROMS = {"chr1": 48_000, "chr8": 14_000, "chr9": 14_000}

#: a model config that fits WINDOW and trains fast (2 tracks come from the store).
TEST_CONFIG = {
    "seq_len": WINDOW, "stem_channels": 8, "stem_kernel": 7, "tower_channels": [8, 10, 12, 12, 14, 16],
    "tower_kernel": 3, "d_model": 16, "n_layers": 1, "n_heads": 2, "ffn_dim": 32, "dropout": 0.1,
    "attn_dropout": 0.1, "head_hidden": 16, "head_dropout": 0.1, "crop_bins": 4,
}


def make_tiny_store(root: Path, seed: int = 0) -> Path:
    """Write a FASTA, a conservation bigWig and two target bigWigs whose signal follows the
    sequence (GC-rich bins are open), then prepare a store of 4,096 bp windows, step 2,048."""
    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.options import PrepareOptions

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seqs = {c: "".join(rng.choice(list("ACGT"), size=n, p=[0.3, 0.2, 0.2, 0.3])) for c, n in CHROMS.items()}
    write_fasta(root / "g.fa", seqs)
    cons, a, b = {}, {}, {}
    for chrom, seq in seqs.items():
        codes = np.frombuffer(seq.encode(), dtype=np.uint8)
        gc = np.isin(codes, [ord("C"), ord("G")]).astype(float)
        cons[chrom] = [(s, s + 100, float(rng.random())) for s in range(0, len(seq) - 100, 100)]
        a[chrom] = [(s, s + 64, float(gc[s:s + 64].mean() * 4)) for s in range(0, len(seq) - 64, 64)]
        b[chrom] = [(s, s + 64, float(rng.exponential())) for s in range(0, len(seq) - 64, 64)]
    write_bigwig(root / "cons.bw", CHROMS, cons)
    write_bigwig(root / "a.bw", CHROMS, a)
    write_bigwig(root / "b.bw", CHROMS, b)
    (root / "targets.tsv").write_text("name\tpath\nA\ta.bw\nB\tb.bw\n")
    prepare_store(root / "g.fa", root / "cons.bw", root / "targets.tsv", root / "store",
                  options=PrepareOptions(window_bp=WINDOW, step_bp=WINDOW // 2))
    (root / "model.json").write_text(json.dumps(TEST_CONFIG))
    return root / "store"


# ---- predict --------------------------------------------------------------------------------------
# tiny preset: 16,384 bp windows, 96 output bins of 128 bp = 12,288 bp per window.
# chr1 -> 5 windows, chr2 -> 4, chrM (shorter than one bin) -> 1; chunks of 2 windows -> 6 chunks.
SIZES = {"chr1": 60_000, "chr2": 40_000, "chrM": 100}
TRACKS = ["ASCT", "OPC"]
FAST = dict(chunk_windows=2, batch_size=3, device="cpu", rc_average=False)
_PREDICT_ARGS = ("fasta", "cons", "model", "out", "store", "regions", "progress", "environ")


def predict(**kw):
    """``predict_genome`` with flat keyword arguments: inputs as they are, the rest as options."""
    job = {k: kw.pop(k) for k in _PREDICT_ARGS if k in kw}
    return predict_genome(**job, options=PredictOptions.of(**kw))


def predict_inputs(folder: Path) -> dict:
    """FASTA (with an N run), conservation bigWig (Ensembl names, chrM missing), 2-track model."""
    rng = np.random.default_rng(11)
    seqs = {c: "".join(rng.choice(list("ACGTacgt"), n)) for c, n in SIZES.items()}
    seqs["chr1"] = seqs["chr1"][:20_000] + "N" * 3_000 + seqs["chr1"][23_000:]
    fasta = write_fasta(folder / "genome.fa", seqs)
    ens = {"1": SIZES["chr1"], "2": SIZES["chr2"]}
    cons = write_bigwig(folder / "cons.bw", ens, {c: [(s, s + 40, float(rng.random())) for s in range(0, n - 40, 97)]
                                                  for c, n in ens.items()})
    model = random_model(seed=5)
    model_file = save_model(folder / "model.pt", model, model.config, TRACKS)
    return {"fasta": fasta, "cons": cons, "model": model_file}


def read_bw(path: Path) -> dict:
    """chrom -> (starts, ends, values) of every interval of a bigWig."""
    import pyBigWig

    bw = pyBigWig.open(str(path))
    out = {}
    for chrom in bw.chroms():
        ivals = bw.intervals(chrom) or ()
        out[chrom] = tuple(np.array([iv[k] for iv in ivals]) for k in range(3))
    header = list(bw.chroms().items())
    bw.close()
    return {"header": header, **out}


# ---- score-variants -----------------------------------------------------------------------------
HEADER = "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=40000>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def score_files(folder, **model_overrides):
    rng = np.random.default_rng(0)
    seqs = {"chr1": "".join(rng.choice(list("ACGT"), 40_000)), "chr2": "".join(rng.choice(list("ACGT"), 20_000))}
    fasta = write_fasta(folder / "g.fa", seqs)
    cons = write_bigwig(folder / "c.bw", {k: len(v) for k, v in seqs.items()},
                        {k: [(i, i + 50, float(rng.random())) for i in range(0, len(v), 50)] for k, v in seqs.items()})
    model = sensitive_model(seed=4, **model_overrides)
    path = save_model(folder / "m.pt", model, model.config, ["neuron", "glia", "astro"])
    return {"fasta": fasta, "cons": cons, "model": path, "seqs": seqs, "folder": folder}


def score_bounds(model_path, *runs, score_bins: int = 5) -> Dict[str, float]:
    """{effect: |a - b| allowed} between the numbers two scoring paths give (fast vs plain, other
    batches, swapped alleles) in ``runs`` (rows of dicts: TSV rows, or records of a DataFrame):
    float32 rounding through the network (:func:`float_tolerance`) at the size of the predictions
    (the largest ref_sum or alt_sum, a sum of non-negative outputs), for a sum of the score bins
    (ref_sum, alt_sum), a difference of two (diff), or of 2 x out_bins values (sad, max_abs, l2).
    log2fc: 2 x the ref_sum bound over 1 + the smaller sum, over ln 2 (the slope of log2)."""
    from epiformer_cli.model.modelfile import load_model

    cfg = load_model(model_path).config
    net = network_reductions(cfg)
    scale = max(abs(float(r[e])) for rows in runs for r in rows if r["status"] == "ok" for e in ("ref_sum", "alt_sum"))
    bounds = {e: float_tolerance(scale, summed=2 * cfg.out_bins, **net) for e in ("sad", "max_abs", "l2")}
    sums = float_tolerance(scale, summed=score_bins, **net)
    return dict(bounds, ref_sum=sums, alt_sum=sums, diff=float_tolerance(scale, summed=2 * score_bins, **net))


def printed_close(a, b, tol: float) -> bool:
    """Two printed (%.6g) numbers within ``tol`` of each other before each was rounded to 6 digits."""
    a, b = float(a), float(b)
    return abs(a - b) <= tol + float_tolerance(max(abs(a), abs(b)), dtype="%.6g")


def other(base, k=1):
    return "ACGT"[("ACGT".index(base) + k) % 4]


_SCORE_ARGS = ("vcf", "fasta", "cons", "model", "out", "progress", "stdout", "environ", "null_progress")


def score(**kw):
    """``score_variants`` with flat keyword arguments: inputs as they are, the rest as options
    (``force`` on unless said, as a notebook re-running a cell would want)."""
    from epiformer_cli.jobs.score_variants import score_variants
    from epiformer_cli.options import ScoreOptions

    job = {k: kw.pop(k) for k in _SCORE_ARGS if k in kw}
    kw.setdefault("force", True)
    kw.setdefault("null_size", 0)  # no calibration unless a test asks for it (tests/test_calibration.py)
    return score_variants(**job, options=ScoreOptions.of(**kw))


def run_job(files, vcf, **kw):
    out = kw.pop("out", files["folder"] / "out.tsv")
    summary = score(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=out, device="cpu",
                    **kw)
    return summary, read_tsv(out) if kw.get("out_format", "tsv") == "tsv" else None


def read_tsv(path):
    lines = open(path).read().splitlines()
    cols = lines[0].split("\t")
    return [dict(zip(cols, line.split("\t"))) for line in lines[1:]]


def status_vcf(path, seqs):
    s = seqs["chr1"]
    rows = [
        ("1", 101, "snv", s[100], other(s[100])),                      # ok + alias + edge_padded
        ("chr1", 20001, "multi", s[20000], f"{other(s[20000])},{other(s[20000], 2)}"),
        ("chr1", 30001, "del", s[30000:30003], s[30000]),
        ("chr1", 30101, "ins", s[30100], s[30100] + "GGT"),
        ("chr1", 501, "mismatch", other(s[500]), "A" if s[500] != "A" else "C"),
        ("chrUn", 10, "unknown", "A", "C"),
        ("chr1", 600, "sym", s[599], "<DEL>"),
        ("chr1", 700, "star", s[699], "*"),
        ("chr1", 800, "long", s[799], s[799] + "A" * 3000),
        ("chr2", 19990, "edge", seqs["chr2"][19989].lower(), "t"),
        ("chr1", 900, "iupac", s[899], "R"),
        ("chr1", 901, "noalt", s[900], "."),
        ("1", 101, "dup", s[100], other(s[100])),
    ]
    path.write_text(HEADER + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows))
    return path


# ---- a sandbox for the installed command (see tests/test_sandbox.py) -------------------------------
PACKAGE_DIR = Path(epiformer_cli.__file__).resolve().parent
REPO_DIR = Path(__file__).resolve().parent.parent

#: Names never compared in the repository snapshot: written by the test harness and by other
#: processes in a shared checkout (git, pytest, hypothesis, coverage of this very run), never by
#: the tool. Bytecode is not written at all in the sandbox (PYTHONDONTWRITEBYTECODE).
HARNESS_NAMES = (".git", ".pytest_cache", ".hypothesis", "__pycache__")
HARNESS_PREFIXES = (".coverage",)

#: Environment variables that move caches or configuration away from HOME: removed, so a cache the
#: tool (or matplotlib, torch, ...) writes lands under the watched HOME and is caught.
CACHE_VARIABLES = ("MPLCONFIGDIR", "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "HF_HOME",
                   "PYTHONPYCACHEPREFIX", "PYTHONUSERBASE", "PYTHONSTARTUP", "CUDA_CACHE_PATH", "NUMBA_CACHE_DIR")

# AF_UNIX is allowed: it is local inter-process communication, not network (multiprocessing and
# torch DataLoader workers pass file descriptors over AF_UNIX sockets). Allowed calls are recorded
# too (``"allowed": true``, once per process and address). Everything else -- AF_INET/AF_INET6 even
# to localhost, name resolution -- raises and is recorded.
#
# The guard also records, through an audit hook (PEP 578), every Python-level write: open() or
# os.open() for writing, mkdir, rename/replace, remove, rmtree, symlink. That sees what a snapshot
# cannot (a temp file made and removed again, anywhere on the machine) and is not fooled by other
# processes; the snapshots in turn see writes made from C (htslib, libBigWig) with no Python call.
SITECUSTOMIZE = r'''
"""Test guard (tests/test_sandbox.py): block and record network access; record file writes."""
import json as _json
import os as _os
import socket as _socket
import sys as _sys

_NET_LOG = _os.environ.get("EPIFORMER_TEST_NET_LOG")
_WRITE_LOG = _os.environ.get("EPIFORMER_TEST_WRITE_LOG")
# opened once, before the audit hook exists; os.write is not audited, so logging cannot recurse
_net_fd = _os.open(_NET_LOG, _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644) if _NET_LOG else None
_write_fd = _os.open(_WRITE_LOG, _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644) if _WRITE_LOG else None
_seen = set()


def _line(fd, **fields):
    if fd is not None:
        _os.write(fd, (_json.dumps(dict(pid=_os.getpid(), **fields)) + "\n").encode())


def _record(call, target, allowed=False):
    if allowed:
        key = (_os.getpid(), call, repr(target))
        if key in _seen:
            return
        _seen.add(key)
    _line(_net_fd, call=call, target=repr(target), allowed=allowed)


class NetworkBlockedError(ConnectionRefusedError):
    """Raised instead of any network access in the test sandbox."""


def _blocked(call, target):
    _record(call, target)
    raise NetworkBlockedError(f"network access blocked by the test sandbox: {call}({target!r})")


def _is_unix(sock):
    return getattr(_socket, "AF_UNIX", None) is not None and sock.family == _socket.AF_UNIX


_connect, _connect_ex, _sendto = _socket.socket.connect, _socket.socket.connect_ex, _socket.socket.sendto


def connect(self, address):
    if _is_unix(self):
        _record("connect", address, allowed=True)
        return _connect(self, address)
    _blocked("connect", address)


def connect_ex(self, address):
    if _is_unix(self):
        _record("connect_ex", address, allowed=True)
        return _connect_ex(self, address)
    _blocked("connect_ex", address)


def sendto(self, *args):
    if _is_unix(self):
        return _sendto(self, *args)
    _blocked("sendto", args[-1])


def _module_blocker(name):
    def blocked(*args, **kwargs):
        _blocked(name, args[:2])
    blocked.__name__ = name
    return blocked


_socket.socket.connect = connect
_socket.socket.connect_ex = connect_ex
_socket.socket.sendto = sendto
for _name in ("getaddrinfo", "create_connection", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
    setattr(_socket, _name, _module_blocker(_name))
_record("guard-installed", _os.getpid(), allowed=True)

_WRITE_FLAGS = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_APPEND | _os.O_TRUNC
#: audit events that write: (argument holding a path written, argument holding its dir_fd or None)
_PATH_EVENTS = {"os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)), "os.remove": ((0, 1),),
                "os.rmdir": ((0, 1),), "shutil.rmtree": ((0, 1),), "os.symlink": ((1, 2),),
                "os.link": ((1, 3),), "os.truncate": ((0, None),), "shutil.copyfile": ((1, None),),
                "shutil.move": ((0, None), (1, None))}


def _path(value, dir_fd=None):
    if isinstance(value, int):
        return None  # a file descriptor: its opening was recorded
    try:
        path = _os.fsdecode(value)
        # relative to an open folder (rmtree); no dir_fd is None or AT_FDCWD (-100)
        if isinstance(dir_fd, int) and dir_fd >= 0 and not _os.path.isabs(path):
            path = _os.path.join(_os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        return _os.path.abspath(path)
    except (TypeError, ValueError, OSError):
        return None


def _audit(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
        if not writes:
            return
        paths = [_path(path)]
    elif event in _PATH_EVENTS:
        paths = [_path(args[i], args[d] if d is not None and d < len(args) else None)
                 for i, d in _PATH_EVENTS[event] if i < len(args)]
    else:
        return
    for p in paths:
        if p is not None:
            _line(_write_fd, event=event, path=p)


if _write_fd is not None:
    _sys.addaudithook(_audit)
'''

Snapshot = Dict[str, Tuple[str, int, int]]


def _measuring_coverage() -> bool:
    coverage = sys.modules.get("coverage")
    return coverage is not None and coverage.Coverage.current() is not None


def snapshot(root: Path, skip_names: Sequence[str] = (), skip_prefixes: Sequence[str] = (),
             skip_paths: Sequence[Path] = (), root_mtime: bool = True) -> Snapshot:
    """Every entry under ``root``: relative path -> (kind, size, mtime_ns); symlinks not followed.

    A folder's mtime changes when an entry is created or deleted in it, so a file made and removed
    again between two snapshots still shows. ``root_mtime=False`` leaves out the root's own mtime
    (for a root the command legitimately adds its output folder to).
    """
    root = Path(root)
    skipped = {Path(p).resolve() for p in skip_paths}
    out: Snapshot = {}
    st = root.lstat()
    out["."] = ("dir", 0, st.st_mtime_ns if root_mtime else 0)
    for folder, dirs, files in os.walk(root):
        keep = []
        for name in dirs:
            path = Path(folder, name)
            if name in skip_names or name.startswith(tuple(skip_prefixes)) or path.resolve() in skipped:
                continue
            keep.append(name)
        dirs[:] = keep
        for name in keep + files:
            if name in skip_names or name.startswith(tuple(skip_prefixes)):
                continue
            path = Path(folder, name)
            try:
                st = path.lstat()
            except FileNotFoundError:  # vanished while we looked: will show as a difference
                continue
            kind = "dir" if path.is_dir() and not path.is_symlink() else "link" if path.is_symlink() else "file"
            out[str(path.relative_to(root))] = (kind, 0 if kind == "dir" else st.st_size, st.st_mtime_ns)
    return out


def differences(before: Snapshot, after: Snapshot) -> List[str]:
    """``created X``, ``deleted X``, ``modified X`` lines, sorted."""
    lines = [f"created {p}" for p in after.keys() - before.keys()]
    lines += [f"deleted {p}" for p in before.keys() - after.keys()]
    lines += [f"modified {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(lines)


class Sandbox:
    """A fresh HOME, TMPDIR and working directory under ``base``, and a network guard.

    Args:
        base: an empty folder (``tmp_path``).
        output: the folder the command may write: by default ``base/out``, beside the working
            directory, which must then stay untouched down to its own mtime; a relative name is a
            folder inside the working directory (e.g. a command's default output folder), and then
            only the working directory's other entries are compared.
    """

    def __init__(self, base: Path, output: Optional[str] = None) -> None:
        self.base = Path(base)
        self.home = self.base / "home"
        self.tmp = self.base / "tmp"
        if len(str(self.tmp)) > 60:
            # multiprocessing's AF_UNIX listeners (DataLoader workers pass tensors through them) live
            # in TMPDIR, and a socket path holds at most 107 bytes: a deep tmp_path (an xdist
            # worker's adds popen-gwN/) made training hang; a short temp folder instead
            import shutil
            import tempfile
            import weakref

            self.tmp = Path(tempfile.mkdtemp(prefix="epiformer-sandbox-"))
            weakref.finalize(self, shutil.rmtree, self.tmp, True)
        self.cwd = self.base / "cwd"
        self.guard = self.base / "guard"
        for folder in (self.home, self.tmp, self.cwd, self.guard):
            folder.mkdir(parents=True, exist_ok=folder == self.tmp)
        (self.guard / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.net_log = self.base / "network.jsonl"
        self.write_log = self.base / "writes.jsonl"
        self.output = self.base / "out" if output is None else self.cwd / output
        self._output_in_cwd = output is not None
        self._before: Dict[str, Snapshot] = {}

    def env(self) -> Dict[str, str]:
        # EPIFORMER_THREADS stays: it only sets how many threads compute (test workers share the cores)
        env = {k: v for k, v in os.environ.items()
               if (not k.startswith(("XDG_", "EPIFORMER_")) or k == "EPIFORMER_THREADS") and k not in CACHE_VARIABLES}
        # no bytecode: a stale .pyc rewritten in the checkout is the interpreter's doing, not the tool's
        env.update(HOME=str(self.home), TMPDIR=str(self.tmp), TMP=str(self.tmp), TEMP=str(self.tmp),
                   PYTHONDONTWRITEBYTECODE="1", EPIFORMER_TEST_NET_LOG=str(self.net_log),
                   EPIFORMER_TEST_WRITE_LOG=str(self.write_log),
                   PYTHONPATH=os.pathsep.join([str(self.guard)] + ([os.environ["PYTHONPATH"]]
                                                                  if os.environ.get("PYTHONPATH") else [])))
        return env

    def _snapshots(self) -> Dict[str, Snapshot]:
        harness = dict(skip_names=HARNESS_NAMES, skip_prefixes=HARNESS_PREFIXES)
        snaps = {
            "HOME": snapshot(self.home),
            "working directory": snapshot(self.cwd, skip_paths=[self.output], root_mtime=not self._output_in_cwd),
            # coverage (CI runs --cov, and measures subprocesses) writes the subprocesses' data
            # files into the repository root: its own mtime then changes; new entries still show
            "repository": snapshot(REPO_DIR, root_mtime=not _measuring_coverage(), **harness),
        }
        if REPO_DIR not in PACKAGE_DIR.parents:  # a non-editable install: watch the package too
            snaps["package"] = snapshot(PACKAGE_DIR, **harness)
        return snaps

    def run(self, args: Sequence[str], timeout: float = 600, env: Optional[Dict[str, str]] = None,
            **kwargs) -> subprocess.CompletedProcess:
        """Run ``args`` in the sandbox (snapshots taken just before); ``env`` replaces :meth:`env`."""
        self._before = self._snapshots()
        return subprocess.run(list(args), cwd=self.cwd, env=self.env() if env is None else env,
                              capture_output=True, text=True, timeout=timeout, **kwargs)

    def changes_outside(self) -> List[str]:
        """What changed since :meth:`run` outside the output folder and the temp dir.

        A repository change no sandboxed process was seen writing (see :meth:`writes_outside`) is
        marked: in a checkout shared with people editing it, that is most likely one of them (a
        write from C code is the other possibility, so it still counts).
        """
        after = self._snapshots()
        written = {Path(e["path"]) for e in self._write_entries()}
        out = []
        for label, before in self._before.items():
            for line in differences(before, after[label]):
                if label == "repository":
                    path = (REPO_DIR / line.split(" ", 1)[1]).resolve()
                    if not any(w == path or path in w.parents for w in written):
                        line += " (no write seen from the sandboxed command: someone editing the checkout?)"
                out.append(f"{label}: {line}")
        return out

    def writes_outside(self) -> List[str]:
        """Python-level writes (audit hook) of any sandboxed process outside the output folder and
        the temp dir, anywhere on the machine; ``/dev`` and ``/proc`` (``/dev/null``, shared
        memory) are left out."""
        out = []
        for entry in self._write_entries():
            path = Path(entry["path"])
            if path.parts[1:2] in (("dev",), ("proc",)):
                continue
            if path.name.startswith(HARNESS_PREFIXES) and REPO_DIR in path.parents:
                continue  # coverage data of the measured subprocess itself (pytest --cov)
            if any(path == root or root in path.parents for root in (self.output, self.tmp)):
                continue
            out.append(f"{entry['event']} {path}")
        return sorted(set(out))

    def _write_entries(self) -> List[dict]:
        if not self.write_log.exists():
            return []
        return [json.loads(line) for line in self.write_log.read_text().splitlines()]

    def network_attempts(self, allowed: Optional[bool] = False) -> List[dict]:
        """Recorded socket calls: blocked ones (default), allowed ones (True), or all (None)."""
        if not self.net_log.exists():
            return []
        calls = [json.loads(line) for line in self.net_log.read_text().splitlines()]
        calls = [c for c in calls if c["call"] != "guard-installed"]
        return calls if allowed is None else [c for c in calls if c["allowed"] is allowed]

    def guarded_pids(self) -> List[int]:
        """Processes in which the guard was installed."""
        if not self.net_log.exists():
            return []
        return [json.loads(line)["pid"] for line in self.net_log.read_text().splitlines()
                if json.loads(line)["call"] == "guard-installed"]


def epiformer_command() -> List[str]:
    """The installed ``epiformer`` console script of this interpreter (else ``python -m``)."""
    script = Path(sys.executable).with_name("epiformer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "epiformer_cli"]


def unmeasured(env: Dict[str, str]) -> Dict[str, str]:
    """``env`` without the variables that start coverage in a child process: a child under a
    file-size limit (``RLIMIT_FSIZE``) could not save its coverage data, and coverage would print
    a traceback at its exit, over the one stderr line the test checks."""
    return {k: v for k, v in env.items() if k not in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")}


def clear_launcher_environment(monkeypatch) -> None:
    """No EPIFORMER_* defaults and no SLURM array or torchrun rank from the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.startswith(("EPIFORMER_", "SLURM_", "TORCHELASTIC_")) or name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            monkeypatch.delenv(name)


def fifo(path: Path, data: bytes) -> Path:
    """A named pipe at ``path`` that a thread fills with ``data`` once (as ``<(zcat x.vcf.gz)`` would)."""
    import os
    import threading

    os.mkfifo(path)

    def feed():
        with open(path, "wb") as handle:
            handle.write(data)

    threading.Thread(target=feed, daemon=True).start()
    return path


def bgzip_text(text: str, path: Path) -> Path:
    """``text`` written to ``path`` BGZF-compressed (through a plain file htslib compresses)."""
    import pysam

    plain = path.with_name(path.name + ".txt")
    plain.write_text(text)
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    return path


# ---- read-only folders ------------------------------------------------------------------------
def make_read_only(folder: Path) -> Optional[str]:
    """Make ``folder`` refuse new files, as root too (``chattr +i``); returns how, None if impossible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return "chmod"
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return "chattr"
    return None


def make_writable(folder: Path, how: str) -> None:
    if how == "chmod":
        folder.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextmanager
def read_only_folder(folder: Path):
    """``folder`` refusing new files for the block (as root too, with ``chattr +i``); skips the
    test where that cannot be done."""
    how = make_read_only(folder)
    if how is None:
        pytest.skip("no way to make a folder read-only here (not root, no chattr)")
    try:
        yield folder
    finally:
        make_writable(folder, how)



# ---- explain folders, made without a model --------------------------------------------------------
#: a SPI1-like consensus planted by :func:`planted_explain_folder`
PLANTED = "AAAAAGAGGAAGTG"


def write_explain_folder(folder: Path, regions: Sequence[Tuple[str, int, str]], matrix: np.ndarray,
                         tracks: Sequence[str], *, method: str = "gradient", model: str = "m" * 64,
                         fasta: str = "f" * 64) -> Path:
    """An explain output folder as ``explain`` writes it (``contrib.npz``, ``explain.json``) from
    ``regions`` ``(chrom, start, sequence)`` and their (tracks, 4, total bases) ``matrix``, with
    the model and FASTA identities given (SHA-256 text)."""
    from epiformer_cli.data.encoding import encode_sequence

    folder.mkdir(parents=True, exist_ok=True)
    lengths = [len(seq) for _, _, seq in regions]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    codes = np.concatenate([encode_sequence(seq) for _, _, seq in regions]).astype(np.uint8)
    n = len(regions)
    contrib = np.take_along_axis(matrix, np.minimum(codes, 3)[None, None, :].repeat(len(tracks), 0), axis=1)[:, 0]
    np.savez(folder / "contrib.npz", tracks=np.array(list(tracks), dtype=str), method=np.array(method),
             offsets=offsets, region_index=np.arange(n, dtype=np.int64),
             region_name=np.array([f"r{i}" for i in range(n)], dtype=str),
             chrom=np.array([c for c, _, _ in regions], dtype=str),
             start=np.array([s for _, s, _ in regions], dtype=np.int64),
             end=np.array([s + len(q) for _, s, q in regions], dtype=np.int64),
             variant=np.array(["."] * n, dtype=str), allele=np.array(["."] * n, dtype=str),
             pred_sum=np.zeros((n, len(tracks))), codes=codes,
             matrix=np.asfortranarray(matrix.astype(np.float32)), contrib=contrib.astype(np.float32))
    record = {"epiformer_version": epiformer_cli.__version__,
              "inputs": {"fasta": "genome.fa", "cons": None, "model": "model.pt"},
              "identities": {"model_sha256": model, "model_tracks": list(tracks),
                             "fasta": {"size": 1, "sha256": fasta}, "cons": None, "conservation_mode": "zero"},
              "options": {"method": method}, "tracks": list(tracks), "regions": n, "skipped": {},
              "files": ["contrib.npz"]}
    (folder / "explain.json").write_text(json.dumps(record, indent=1) + "\n")
    return folder


def planted_explain_folder(folder: Path, n_regions: int = 300, length: int = 200, seed: int = 0,
                           tracks: Sequence[str] = ("microglia", "neuron"), **kw):
    """An explain folder whose contributions point at :data:`PLANTED` (on either strand, once in
    each region, at a random place) in the first track: hypothetical contributions 1 for every
    base of a planted site (gradient-like: the mean over bases is removed), small noise elsewhere;
    the other tracks see only noise. Returns (folder, planted sites as (chrom, start, end))."""
    rng = np.random.default_rng(seed)
    revcomp = PLANTED[::-1].translate(str.maketrans("ACGT", "TGCA"))
    regions, sites, blocks = [], [], []
    for i in range(n_regions):
        seq = list(rng.choice(list("ACGT"), size=length))
        at = int(rng.integers(20, length - 20 - len(PLANTED)))
        site = PLANTED if rng.random() < 0.5 else revcomp
        seq[at:at + len(site)] = site
        seq = "".join(seq)
        start = 1000 + i * 1000
        regions.append(("chr1", start, seq))
        sites.append(("chr1", start + at, start + at + len(site)))
        m = rng.normal(0, 0.02, size=(len(tracks), 4, length))
        for j, base in enumerate(site):
            m[0, "ACGT".index(base), at + j] += 1.0
        blocks.append(m - m.mean(axis=1, keepdims=True))
    return write_explain_folder(folder, regions, np.concatenate(blocks, axis=2), tracks, **kw), sites


def assert_imports_none_of(modules: Sequence[str], heavy: Sequence[str]) -> None:
    """Importing ``modules`` in a fresh interpreter loads none of ``heavy`` (plotting stays lazy)."""
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"loaded = [m for m in {tuple(heavy)!r} if m in sys.modules]\nassert not loaded, loaded\n")
    root = Path(epiformer_cli.__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
