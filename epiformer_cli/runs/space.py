"""The room pre-checks of a run: refuse before any work what cannot fit on the disk
(:func:`require_room`) or in memory (:func:`require_memory`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from epiformer_cli.errors import UsageError
from epiformer_cli.io.faults import human_bytes, require_free_space

log = logging.getLogger(__name__)


def require_room(folder: str | Path, sizes: Sequence[int], what: str) -> None:
    """Refuse, before any work, files of ``sizes`` bytes that cannot all fit in ``folder``, or one
    of which is over the file-size limit (``ulimit -f``).

    Args:
        folder: where they will be written (an existing folder, or one to be created: its nearest
            existing parent is checked).
        sizes: the bytes of each file still to write (exact, or a low estimate: the check must never
            refuse what would fit).
        what: what they are, for the message ("the prediction store X").

    Raises:
        StorageError: naming the bytes needed and free, and the fix.
    """
    require_free_space(Path(folder), int(sum(sizes)), what, int(max(sizes, default=0)))


#: a cgroup v1 limit at or above this is "no limit" (the kernel writes 2**63 rounded down to a page).
_NO_V1_LIMIT = 1 << 60


def available_memory(proc: str | Path = "/proc", cgroups: str | Path = "/sys/fs/cgroup") -> Optional[int]:
    """Bytes this process may still allocate before the kernel refuses or kills it.

    The smallest of: the machine's ``MemAvailable`` (``/proc/meminfo``: free memory plus what the
    kernel can reclaim, e.g. page cache); the room left under every cgroup memory limit above this
    process (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, minus the usage without the
    reclaimable inactive file cache: what a SLURM job or a container may still take); and the
    address space left under ``ulimit -v``. Without ``/proc`` (macOS, BSD) the physical memory
    (``os.sysconf``) stands in for the machine's share. None when nothing is known.

    Args:
        proc, cgroups: where procfs and the cgroup file system are mounted (tests point them at
            a made-up tree).
    """
    proc, cgroups = Path(proc), Path(cgroups)
    meminfo = _meminfo(proc / "meminfo")
    machine = meminfo.get("MemAvailable")
    if machine is None and "MemFree" in meminfo:  # kernels before 3.14: free plus the page cache
        machine = meminfo["MemFree"] + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
    if machine is None:
        machine = _physical_memory()
    rooms = [r for r in (machine, *_cgroup_rooms(proc / "self" / "cgroup", cgroups), _address_space_room(proc))
             if r is not None]
    return max(0, min(rooms)) if rooms else None


def require_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse, before any work, a job whose estimated memory does not fit in what this process may
    still allocate (:func:`available_memory`); measured when called, so what is already loaded
    (the model) is not counted twice: ``nbytes`` is what the work still allocates.

    There is no switch to turn it off: a job refused here would otherwise be killed by the kernel
    (exit 137, no message) or fail with an out-of-memory error after hours. When the available
    memory cannot be known, the check says so (an info line) and lets the job run.

    Args:
        nbytes: the estimate (each job's ``*_memory_bytes`` function documents its model).
        what: the work, for the message ("the null of 9,000,000 SNVs").
        fix: what to change, naming the options ("lower --null-size, or ...").

    Raises:
        UsageError: one line, "<what> needs about 14.0 GB of memory and this machine has 6.1 GB
            available: <fix>" (exit 2: the fix is an option).
    """
    nbytes = int(nbytes)
    available = available_memory()
    if available is None:
        log.info("cannot tell how much memory is available here: %s (about %s) runs unchecked", what,
                 human_bytes(nbytes))
        return
    if nbytes > available:
        raise UsageError(f"{what} needs about {human_bytes(nbytes)} of memory and this machine has "
                         f"{human_bytes(available)} available: {fix}")
    log.debug("%s needs about %s of memory (%s available)", what, human_bytes(nbytes), human_bytes(available))


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _number(path: Path) -> Optional[int]:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:  # "max": no limit
        return None


def _meminfo(path: Path) -> dict:
    """``/proc/meminfo`` as {field: bytes} (empty without procfs)."""
    out = {}
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def _physical_memory() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _stat_field(path: Path, name: str) -> int:
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def cgroup_folders_up(root: Path, relative: str) -> List[Path]:
    """The cgroup folder of ``relative`` under ``root`` and every parent up to ``root`` (a limit
    may be set on any ancestor); ``root`` alone when the folder is not there (a container whose
    cgroup namespace shows its own cgroup as ``/``)."""
    here = root / relative.strip("/")
    if not here.is_dir():
        return [root]
    folders = [here]
    while here != root and root in here.parents:
        here = here.parent
        folders.append(here)
    return folders


def _cgroup_rooms(self_cgroup: Path, root: Path) -> Iterable[Optional[int]]:
    """Room left under each cgroup memory limit above this process (none: nothing yielded)."""
    for line in (_read(self_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, relative = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2: one unified hierarchy
            for folder in cgroup_folders_up(root, relative):
                limit = _number(folder / "memory.max")
                if limit is not None:
                    used = _number(folder / "memory.current") or 0
                    yield limit - max(0, used - _stat_field(folder / "memory.stat", "inactive_file"))
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            for folder in cgroup_folders_up(root / "memory", relative):
                limit = _number(folder / "memory.limit_in_bytes")
                if limit is not None and limit < _NO_V1_LIMIT:
                    used = _number(folder / "memory.usage_in_bytes") or 0
                    cache = _stat_field(folder / "memory.stat", "total_inactive_file")
                    yield limit - max(0, used - cache)


def _address_space_room(proc: Path) -> Optional[int]:
    """Address space left under ``ulimit -v`` (None when unlimited): past it an allocation fails
    with a MemoryError instead of a kill, but fails all the same."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = _meminfo(proc / "self" / "status").get("VmSize")
    return int(soft) - (size or 0)
