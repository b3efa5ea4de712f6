"""Files that appear complete or not at all, and cheap identities of input files.

Every output of every command goes through :func:`atomic_output`: written to a temporary name in
the destination folder, flushed and fsynced, then renamed over the destination, so a kill or a
full disk never leaves a half-written file behind under the real name.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, Optional

from epiformer_cli.errors import UsageError

_IDENTITY_BYTES = 1 << 20


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike, *, inputs: Iterable[Optional[str | os.PathLike]] = (),
                 force: bool = True, option: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot or should not be written.

    Never an input of the same command (not even with ``force``: that would destroy the data);
    never a folder; the folder must exist and be writable; an existing file only when ``force``.
    Raises UsageError (exit code 2) with the fix in the message.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    for source in inputs:
        if source is not None and str(source) != "-" and _same_file(path, Path(source)):
            raise UsageError(f"{option} {path} is also an input of this command: choose another output name "
                             "(inputs are never overwritten)")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder: give a file name such as {path / 'pred.bw'}")
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: folder {folder} is not writable (choose another {option})")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(f"cannot overwrite {path}: it is read-only (choose another {option})")
        if not force:
            raise UsageError(f"{path} already exists: choose another {option}, or pass --force to overwrite it")


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other process or thread will pick."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


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


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing so that it appears only once the block finishes without error.

    Yields a file handle on a temporary file in the same folder; on success the file is fsynced
    and renamed to ``path``; on any exception (including Ctrl-C) the temporary file is removed.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (see :func:`atomic_output`)."""
    with atomic_output(path, "w") as handle:
        handle.write(text)


def file_identity(path: str | os.PathLike) -> Dict[str, object]:
    """Identity of an input without reading all of it: name, size and a SHA-256 of its first and
    last MiB. Stable when a file is copied (e.g. to cluster scratch), changed when it is rewritten,
    and cheap for a 3 GB genome."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_IDENTITY_BYTES))
        if size > 2 * _IDENTITY_BYTES:
            handle.seek(size - _IDENTITY_BYTES)
            digest.update(handle.read(_IDENTITY_BYTES))
    return {"name": path.name, "size": size, "sha256_ends": digest.hexdigest()}


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a whole file (for model files, whose every byte matters)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
