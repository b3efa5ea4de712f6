"""How many threads a command computes with, and how idle threads wait: the CPUs this process may
use (its affinity and its cgroup's CPU quota), overridden by ``--threads`` / ``EPIFORMER_THREADS``.

Why each part (benchmarks/README.md has the measurements):

- torch starts one OpenMP thread per CPU of the affinity mask; a container limited by a cgroup CPU
  quota (``docker --cpus 2``, Kubernetes limits, SLURM with cgroups) sees every host core, so 64
  threads time-slice 2 CPUs' worth of quota. The quota is read here and wins when it is smaller.
- OpenMP's threads spin after each parallel region waiting for the next one (libgomp: 300,000
  spins). When another busy process shares a core, the spinning threads take CPU time from the
  thread that has real work (and from predict's own reader and writer threads), and every region
  waits for the slowest thread: on a loaded 2-core node predict ran ~10x slower. Sleeping at once
  (``OMP_WAIT_POLICY=PASSIVE``) fixes that but costs the wake-ups: on an idle machine the tiny
  preset's predict, many small parallel regions, ran ~25% slower. So :func:`set_wait_policy` looks
  at this process's CPUs at start (:func:`busy_cpus`, 50 ms of ``/proc/stat``) and sets PASSIVE only
  when another process keeps one of them busy; the OpenMP runtime reads it only when it is loaded:
  before torch's first import.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, MutableMapping, Optional, Tuple, Union

from epiformer_cli.errors import UsageError
from epiformer_cli.runs.space import cgroup_folders_up  # one walk up a cgroup hierarchy, for memory and CPU limits

log = logging.getLogger(__name__)

#: the variable ``--threads`` falls back on
THREADS_ENV = "EPIFORMER_THREADS"
#: what the command line sets before torch is imported, unless the user chose a wait policy: idle
#: threads sleep at once instead of spinning (read by libgomp, LLVM's libomp and Intel's libiomp).
#: Measured against GOMP_SPINCOUNT=10000 and one thread: benchmarks/bench_threads.py
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
#: variables that already choose how OpenMP threads wait: a user who set one keeps it
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: a CPU counts as busy when more than this share of its time is not idle while this process sleeps
BUSY_SHARE = 0.5
#: seconds the CPUs are watched at start (this process sleeps meanwhile: its own start is not counted)
SAMPLE_SECONDS = 0.05
_SAMPLED: list = []  # what this process found at start, once it looked


@dataclass(frozen=True)
class UsableCpus:
    """The CPUs this process may use.

    Attributes:
        cpus: whole CPUs, at least 1: the smaller of ``affinity`` and ``quota`` rounded up.
        affinity: CPUs in the affinity mask (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere).
        quota: CPUs' worth of the smallest cgroup CPU quota above this process (1.5 for
            ``cpu.max`` "150000 100000"); None when no cgroup sets one.
        source: what decided ``cpus``: ``"affinity"`` or ``"cgroup quota"``.
        quota_file: the file the quota was read from (None without a quota).
    """

    cpus: int
    affinity: int
    quota: Optional[float]
    source: str
    quota_file: Optional[str] = None

    def describe(self) -> str:
        """``2 (cgroup quota 1.5 CPUs; affinity 64)``: one phrase for logs and ``epiformer info``."""
        quota = f"cgroup quota {self.quota:g} CPUs" if self.quota is not None else "no cgroup quota"
        if self.source == "cgroup quota":
            return f"{self.cpus} ({quota}; affinity {self.affinity})"
        return f"{self.cpus} (affinity; {quota})"


def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(folder: Path) -> Optional[float]:
    """CPUs of ``cpu.max`` ("150000 100000" -> 1.5; "max 100000" -> None)."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    parts = text.split()
    try:
        quota, period = (parts[0], int(parts[1]) if len(parts) > 1 else 100_000)
        return None if quota == "max" or period <= 0 else int(quota) / period
    except ValueError:
        return None


def _v1_quota(folder: Path) -> Optional[float]:
    """CPUs of ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (a quota of -1: none)."""
    try:
        quota = int(_read(folder / "cpu.cfs_quota_us") or "-1")
        period = int(_read(folder / "cpu.cfs_period_us") or "0")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _smallest_quota(base: Path, cgroup: str, read) -> tuple[Optional[float], Optional[Path]]:
    """The smallest quota from this process's cgroup folder up to the hierarchy's mount ``base``
    (the walk memory limits take too: ``base`` alone inside a container whose mount is its own cgroup)."""
    if not base.is_dir():
        return None, None
    found = [(quota, folder) for folder in cgroup_folders_up(base, cgroup) if (quota := read(folder)) is not None]
    return min(found, key=lambda item: item[0]) if found else (None, None)


def cgroup_quota(root: Union[str, os.PathLike] = "/") -> tuple[Optional[float], Optional[Path]]:
    """CPUs' worth of the smallest cgroup CPU quota over this process (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``), and the file's folder; (None, None) when there is none.

    Args:
        root: the file system root holding ``proc/self/cgroup`` and ``sys/fs/cgroup`` (a fake
            folder in tests).
    """
    root = Path(root)
    text = _read(root / "proc/self/cgroup") or ""
    found: list[tuple[float, Path]] = []
    mounts = root / "sys/fs/cgroup"
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2 (unified; "unified/" on hybrid systems)
            candidates = [(mounts, _v2_quota), (mounts / "unified", _v2_quota)]
        elif "cpu" in controllers.split(","):
            candidates = [(mounts / name, _v1_quota) for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
        else:
            continue
        for base, read in candidates:
            quota, folder = _smallest_quota(base, path, read)
            if quota is not None:
                found.append((quota, folder))
    if not found:
        return None, None
    return min(found, key=lambda item: item[0])


def usable_cpus(root: Union[str, os.PathLike] = "/", affinity: Optional[int] = None) -> UsableCpus:
    """The CPUs this process may use: its affinity mask, limited by its cgroup's CPU quota
    (rounded up: 1.5 CPUs of quota keep 2 threads busy half the time).

    Args:
        root: where ``proc/self/cgroup`` and ``sys/fs/cgroup`` are (tests pass a fake folder).
        affinity: CPUs of the affinity mask (default: this process's).
    """
    affinity = _affinity() if affinity is None else max(1, int(affinity))
    quota, folder = cgroup_quota(root)
    if quota is not None and math.ceil(quota) < affinity:
        return UsableCpus(max(1, math.ceil(quota)), affinity, quota, "cgroup quota", str(folder))
    return UsableCpus(affinity, affinity, quota, "affinity", str(folder) if folder else None)


def _positive(value: object, where: str) -> int:
    """``value`` as a whole number of threads >= 1, or a UsageError naming ``where`` it came from
    (``--threads 0``, ``EPIFORMER_THREADS=abc``)."""
    text = str(value).strip()
    said = f"{where}={text}" if where == THREADS_ENV else f"{where} {text}"
    fix = "give a whole number of threads, at least 1" + (", or unset it" if where == THREADS_ENV else "")
    try:
        number = int(text)
    except ValueError:
        raise UsageError(f"{said}: not a whole number ({fix})") from None
    if number < 1:
        raise UsageError(f"{said}: too few threads ({fix})")
    return number


def thread_count(requested: Optional[Union[int, str]] = None, environ: Optional[Mapping[str, str]] = None,
                 cpus: Optional[UsableCpus] = None) -> int:
    """The threads a command computes with: ``requested`` (``--threads``), else ``EPIFORMER_THREADS``,
    else the usable CPUs (:func:`usable_cpus`), shared among torchrun's processes on this node
    (divided by ``LOCAL_WORLD_SIZE``, at least 1).

    Raises:
        UsageError: a value that is not a whole number >= 1, naming ``--threads`` or the variable.
    """
    environ = os.environ if environ is None else environ
    if requested is not None:
        return _positive(requested, "--threads")
    if environ.get(THREADS_ENV, "").strip():
        return _positive(environ[THREADS_ENV], THREADS_ENV)
    cpus = usable_cpus() if cpus is None else cpus
    try:
        ranks = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return max(1, cpus.cpus // ranks)


def use_threads(n: int) -> int:
    """Make torch compute with ``n`` threads (intra-op; inter-op too while torch still allows it,
    i.e. before its first parallel work). Idempotent; notebooks may call it. Returns ``n``."""
    import torch

    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # inter-op work has started: torch allows setting it only before
            pass
    if log.isEnabledFor(logging.DEBUG):
        log.debug("CPU threads: %d (usable CPUs: %s; OpenMP idle threads wait: %s)", n, usable_cpus().describe(),
                  wait_policy())
    return n


def use_arrow_threads(n: int) -> int:
    """Make pyarrow's CPU thread pool (its multithreaded CSV reader) ``n`` threads wide: pyarrow
    sizes it by the host's cores otherwise. Returns ``n``."""
    import pyarrow

    n = max(1, int(n))
    if pyarrow.cpu_count() != n:
        pyarrow.set_cpu_count(n)
    log.debug("pyarrow CPU threads: %d", n)
    return n


def busy_cpus(cpus: Optional[Iterable[int]] = None, seconds: float = SAMPLE_SECONDS,
              stat: Union[str, Path] = "/proc/stat", sleep: Callable[[float], None] = time.sleep) -> Optional[int]:
    """How many of ``cpus`` (default: this process's affinity) other processes keep busy now: more
    than :data:`BUSY_SHARE` of their time not idle over ``seconds`` while this process sleeps.
    None where ``/proc/stat`` cannot be read (not Linux)."""
    def read() -> Dict[int, Tuple[int, int]]:
        out = {}
        with open(stat) as handle:
            for line in handle:
                if line.startswith("cpu") and line[3:4].isdigit():
                    name, *fields = line.split()
                    values = [int(v) for v in fields[:8]]
                    out[int(name[3:])] = (sum(values), values[3] + (values[4] if len(values) > 4 else 0))
        return out

    try:
        wanted = set(cpus) if cpus is not None else set(os.sched_getaffinity(0))
    except AttributeError:  # no affinity (not Linux): every CPU
        wanted = None
    try:
        first = read()
        sleep(seconds)
        second = read()
    except (OSError, ValueError, IndexError):
        return None
    busy = 0
    for cpu, (total, idle) in second.items():
        if (wanted is not None and cpu not in wanted) or cpu not in first:
            continue
        spent, rested = total - first[cpu][0], idle - first[cpu][1]
        if spent > 0 and (spent - rested) / spent > BUSY_SHARE:
            busy += 1
    return busy


def set_wait_policy(environ: Optional[MutableMapping[str, str]] = None,
                    busy: Callable[[], Optional[int]] = busy_cpus) -> Optional[str]:
    """Put :data:`WAIT_POLICY` into ``environ`` (default: this process's) when another process keeps
    one of this process's CPUs busy (``busy()``, :func:`busy_cpus`; also when that cannot be told),
    unless the user chose how OpenMP threads wait (any of OMP_WAIT_POLICY, GOMP_SPINCOUNT,
    KMP_BLOCKTIME set). On idle CPUs the runtime's own short spin stays: it is faster there. Effective
    only before torch (its OpenMP runtime) is first loaded. Returns what it set, e.g.
    ``"OMP_WAIT_POLICY=PASSIVE"``, or None."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in _WAIT_VARIABLES):
        return None
    if environ is os.environ and _SAMPLED:
        return None  # this process looked already (``python -m epiformer_cli`` asks twice)
    if "1" in (environ.get(THREADS_ENV, "").strip(), environ.get("OMP_NUM_THREADS", "").strip()):
        return None  # one thread: no other thread waits for it (and no need to look)
    taken = busy()
    if environ is os.environ:
        _SAMPLED.append(taken)
    log.debug("CPUs of this process kept busy by others at start: %s", "unknown" if taken is None else taken)
    if taken == 0:
        return None
    environ.update(WAIT_POLICY)
    return " ".join(f"{k}={v}" for k, v in WAIT_POLICY.items())


def wait_policy(environ: Optional[Mapping[str, str]] = None) -> str:
    """How OpenMP threads wait here, as the variables say (``OMP_WAIT_POLICY=PASSIVE``), or
    ``"the runtime's default (spinning)"``."""
    environ = os.environ if environ is None else environ
    chosen = [f"{name}={environ[name]}" for name in _WAIT_VARIABLES if name in environ]
    return " ".join(chosen) if chosen else "the runtime's default (spinning)"


def openmp_runtime() -> str:
    """The OpenMP runtime torch loaded (``libgomp``, ``libomp``, ``libiomp5``), from the process's
    mapped libraries on Linux; ``"unknown"`` elsewhere."""
    try:
        with open("/proc/self/maps") as maps:
            names = {line.rsplit("/", 1)[-1].strip() for line in maps if "omp" in line}
    except OSError:
        return "unknown"
    for name in ("libgomp", "libiomp5", "libomp"):
        if any(found.startswith(name) for found in names):
            return name
    return "unknown"
