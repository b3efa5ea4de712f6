"""Faults of the machine, said in one line: out of space, over quota, file too large, read-only.

Every writer of every command reaches the disk through :func:`~epiformer_cli.io.files.atomic_output`
or :func:`~epiformer_cli.io.files.atomic_path`, which turn such an ``OSError`` into a
:class:`~epiformer_cli.errors.StorageError` naming the file (:func:`storage_error`); the command-line
face turns any that slips past into the same line. :func:`require_free_space` refuses early, before
any work, an output whose size is known in advance.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Optional

from epiformer_cli.errors import StorageError

#: errno -> (what ran out, what to do); the message ends "then run the same command again to resume"
_FAULTS = {
    errno.ENOSPC: ("no space left on the device", "free space there or choose another output folder"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota (`quota -s`) or choose another output folder"),
    errno.EFBIG: ("file size limit exceeded", "raise the limit (`ulimit -f unlimited`) or choose another output folder"),
    errno.EROFS: ("read-only file system", "choose an output folder you can write"),
    errno.EACCES: ("permission denied", "make the folder writable (chmod u+w) or choose another output folder"),
    errno.EPERM: ("operation not permitted", "make the folder writable (chmod u+w) or choose another output folder"),
}

#: faults a writer can meet that are the machine's, not a bug's
STORAGE_ERRNOS = frozenset(_FAULTS)
#: the ones only a write can meet (permission faults can also come from reading an input)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def is_storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError of a full disk, a quota, a size limit or a read-only folder."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_error(exc: OSError, path: Optional[os.PathLike | str] = None, resume: bool = True) -> StorageError:
    """The one-line error for a storage fault ``exc`` met while writing ``path``.

    ``path`` defaults to the file the OSError names. ``resume`` adds that the same command picks up
    where it stopped (every long command keeps its finished pieces).
    """
    what, fix = _FAULTS.get(exc.errno, (exc.strerror or str(exc), "check the output folder"))
    name = path if path is not None else (exc.filename or "the output")
    code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    tail = "; then run the same command again to resume" if resume else ""
    return StorageError(f"cannot write {name}: {what}{f' ({code})' if code else ''}: {fix}{tail}")


def free_bytes(folder: os.PathLike | str) -> Optional[int]:
    """Bytes an unprivileged process may still write in ``folder`` (None when unknown)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            return None
    return stats.f_bavail * stats.f_frsize


def file_size_limit() -> Optional[int]:
    """The process's file-size limit in bytes (``ulimit -f``), or None when unlimited."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1024, as ``df -h`` prints)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def require_free_space(folder: os.PathLike | str, needed: int, what: str, largest_file: int = 0) -> None:
    """Refuse, before any work, an output of ``needed`` bytes that ``folder`` cannot hold, or a
    file of ``largest_file`` bytes over the file-size limit; one line naming both numbers.

    Quotas that the file system does not report through ``statvfs`` are not seen here; a write
    that meets one later is still reported in one line by :func:`storage_error`.
    """
    folder = Path(folder) if str(folder) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    available = free_bytes(folder)
    if available is not None and needed > available:
        raise StorageError(f"{what} needs {human_bytes(needed)} ({needed:,} bytes) in {folder}, which has "
                           f"{human_bytes(available)} free: free space there or choose another output folder")
    limit = file_size_limit()
    if limit is not None and largest_file > limit:
        raise StorageError(f"{what} writes a file of {human_bytes(largest_file)} ({largest_file:,} bytes), over this "
                           f"shell's file-size limit of {limit:,} bytes: raise it (`ulimit -f unlimited`) or write less")


#: bytes a failed writer's temporary file is extended by, to find out what stopped it
_PROBE_BYTES = 1 << 20


def diagnose_failed_write(tmp: os.PathLike | str) -> Optional[OSError]:
    """The storage fault behind a writer that failed without an errno (``torch.save`` raises
    ``RuntimeError: ... unexpected pos`` or ``file write failed``), found by trying to extend its
    temporary file (about to be removed) by 1 MiB: the OSError that write meets (a full disk, a
    quota, the file-size limit), or None when it succeeds (then it was not the storage)."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        return exc if is_storage_fault(exc) else None
    block = bytes(1 << 16)
    try:
        left = _PROBE_BYTES
        while left > 0:
            left -= os.write(fd, block[:min(left, len(block))])
        os.fsync(fd)  # a quota or a full disk of a network file system may only say so here
    except OSError as exc:
        return exc if is_storage_fault(exc) else None
    finally:
        os.close(fd)
    return None
