"""Files that appear complete or not at all (identities of input files: :mod:`epiformer_cli.io.identity`).

Every output of every command goes through :func:`atomic_output` (or :func:`atomic_path`, for
writers that open the file themselves): written to a temporary name in the destination folder,
flushed and fsynced, then renamed over the destination, so a kill or a full disk never leaves a
half-written file behind under the real name.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def check_input_file(path: str | os.PathLike, what: str, error: type = None) -> Path:
    """Refuse an input that is missing, a folder, or unreadable, in one line naming it.

    Args:
        what: what the file is, for the message ("targets sheet", "BED file").
        error: the EpiformerError subclass to raise (default InputFileError).
    Returns the path.
    """
    from epiformer_cli.errors import InputFileError

    error = error or InputFileError
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {what} not found: check the path")
    if path.is_dir():
        raise error(f"{path}: {what} is a folder, not a file: check the path")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: {what} is not readable: check its permissions (chmod u+r {path})")
    return path


_HOST = os.uname().nodename.replace(".", "_") if hasattr(os, "uname") else "host"


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other process or thread will pick:
    ``.NAME.HOST-PID.RANDOM.tmp``.

    Asking for one also removes what earlier, killed writers of the same file left behind (see
    :func:`remove_stale_temporaries`), so a SIGKILLed run that is resumed cleans up after itself,
    and makes the folder of ``path`` when it is missing (``mkdir -p``): every output is born here,
    after its command's checks (:func:`epiformer_cli.runs.destination.check_folder`), so a refused
    run leaves no new folder behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: Path) -> int:
    """Remove temporary files of ``path`` whose writer is dead; returns how many.

    Only files written on this host are judged: on a shared cluster filesystem a process id of
    another node says nothing here, and its writer may be running.
    """
    prefix = f".{path.name}.{_HOST}-"
    removed = 0
    try:
        entries = os.scandir(path.parent if str(path.parent) else ".")
    except OSError:
        return 0
    with entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid = name[len(prefix):].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
    return removed


def remove_stale_temporaries_under(folder: Path) -> int:
    """Remove, anywhere under ``folder``, the temporary files of writers on this host that are dead;
    returns how many. A resumed run calls it: a write that failed because its folder turned
    read-only could neither rename nor remove its temporary, and the resumed run may never write
    that file again."""
    marker = f".{_HOST}-"
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        name = tmp.name
        at = name.rfind(marker)
        pid = name[at + len(marker):].split(".", 1)[0] if at > 0 else ""
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """Give a finished temporary file its real name, durably: fsync it, rename it over ``path``,
    fsync the folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def discard(tmp: Path) -> None:
    """Remove a temporary file if it is there (on error or interruption)."""
    try:
        tmp.unlink()
    except OSError:
        pass


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing so that it appears only once the block finishes without error.

    Yields a file handle on a temporary file in the same folder; on success the file is fsynced
    and renamed to ``path``; on any exception (including Ctrl-C) the temporary file is removed.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_output`, for a writer that opens the file itself: yields the temporary
    name to write; on success the file is fsynced and renamed to ``path``, on any exception removed.

    ``torch.save`` needs this: given a name it writes through its own C++ stream, but given a Python
    file it calls back into Python for each block, and a Ctrl-C or SIGTERM raised inside such a
    call breaks the writer (a bogus "unexpected pos" error instead of the interruption, or an abort
    from its destructor).
    """
    from epiformer_cli.io.faults import WRITE_ERRNOS, diagnose_failed_write, is_storage_fault, storage_error

    path = Path(path)
    try:
        tmp = temporary_name(path)
    except OSError as exc:
        raise storage_error(exc, path) if is_storage_fault(exc) else exc from None
    try:
        yield tmp
        publish(tmp, path)
    except OSError as exc:
        discard(tmp)
        # a full disk, a quota, a size limit, a read-only folder: one line naming the file (a read
        # error of an input inside the block keeps its own message)
        if exc.errno in WRITE_ERRNOS or (is_storage_fault(exc) and exc.filename in (str(tmp), tmp, None)):
            raise storage_error(exc, path) from None
        raise
    except RuntimeError:  # a writer that hides the errno (torch.save: "unexpected pos", "file write failed")
        cause = diagnose_failed_write(tmp)
        discard(tmp)
        if cause is not None:
            raise storage_error(cause, path) from None
        raise
    except BaseException:
        discard(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (see :func:`atomic_output`)."""
    with atomic_output(path, "w") as handle:
        handle.write(text)
