"""Chunked, resumable, shardable output: per-chunk part files whose existence is the marker.

A run writing to ``OUT`` keeps its parts in ``OUT.parts/``: ``manifest.json`` (the settings that
decide the results) and one ``chunk-NNNNNNN-DIGEST.part`` per finished chunk of input records,
written to a temporary name and renamed into place (so a part exists only when complete). DIGEST
hashes the chunk's input lines, so an edited input never reuses a stale part. After a kill, the
same command skips the chunks whose parts exist. With ``--shard I/N`` (I from 1 to N) a run scores
only chunks ``c`` with ``c % N == I - 1``; whichever shard finds every part present assembles
``OUT`` (under a lock the kernel drops when its holder dies, so a run killed while assembling never
blocks the next one) and removes the folder. Re-running any shard later assembles it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from epiformer_cli.errors import UsageError
from epiformer_cli.io.files import atomic_output, atomic_write_text

log = logging.getLogger(__name__)


def parse_shard(spec: Optional[str]) -> Tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) -> (I - 1, N); None -> (0, 1)."""
    if spec is None or str(spec).strip() == "":
        return 0, 1
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like I/N (e.g. 1/4), got {spec!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard I/N needs 1 <= I <= N, got {spec!r}")
    return i - 1, n


def chunk_digest(index: int, lines: List[str]) -> str:
    h = hashlib.sha1(str(index).encode())
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()[:12]


class PartStore:
    """The ``OUT.parts`` folder of one output file."""

    def __init__(self, out: Path, settings: Dict[str, object]) -> None:
        self.out = Path(out)
        self.folder = self.out.with_name(self.out.name + ".parts")
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        manifest = self.folder / "manifest.json"
        if self.folder.exists():
            try:
                old = json.loads(manifest.read_text())
            except (OSError, ValueError):
                old = None
            if old != self.settings:
                raise UsageError(
                    f"{self.folder} holds parts of a run with other settings: delete it to start over, "
                    "or run with the same settings to resume"
                )
            log.info("resuming: reusing finished chunks in %s", self.folder)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(manifest, json.dumps(self.settings, indent=2, sort_keys=True) + "\n")

    def discard(self) -> None:
        """Remove the parts folder (a run that will not be resumed)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def path(self, index: int, digest: str) -> Path:
        return self.folder / f"chunk-{index:07d}-{digest}.part"

    def done(self, index: int, digest: str) -> Optional[Dict[str, Dict[str, int]]]:
        """The status counts of a finished chunk, or None if it is not finished."""
        path = self.path(index, digest)
        if not path.exists():
            return None
        with open(path) as handle:
            first = handle.readline()
        return json.loads(first[len("#counts "):]) if first.startswith("#counts ") else None

    def write(self, index: int, digest: str, text: str, counts: Dict[str, Dict[str, int]]) -> None:
        for stale in self.folder.glob(f"chunk-{index:07d}-*.part"):
            stale.unlink()
        path = self.path(index, digest)
        with atomic_output(path, "w") as handle:
            handle.write("#counts " + json.dumps(counts, sort_keys=True) + "\n")
            handle.write(text)

    def assemble(self, header: str, digests: List[str]) -> bool:
        """Write ``OUT`` from all parts if every chunk is finished; returns whether it did."""
        missing = [i for i, d in enumerate(digests) if not self.path(i, d).exists()]
        if missing:
            log.info("%d of %d chunks finished; %s is assembled when the other shards finish "
                     "(or re-run any shard then)", len(digests) - len(missing), len(digests), self.out)
            return False
        with _exclusive(self.folder / "assemble.lock") as held:
            if not held:
                if not self.folder.is_dir():
                    return self.out.exists()  # another shard has just assembled it
                log.info("another shard is assembling %s", self.out)
                return False
            if not self.folder.is_dir() or any(not self.path(i, d).exists() for i, d in enumerate(digests)):
                return self.out.exists()  # assembled by the shard that held the lock before this one
            with atomic_output(self.out, "w") as out:
                out.write(header)
                for i, d in enumerate(digests):
                    with open(self.path(i, d)) as part:
                        part.readline()  # the counts line
                        shutil.copyfileobj(part, out, 1 << 20)
            shutil.rmtree(self.folder, ignore_errors=True)
        return True


@contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False when another process holds it.

    A ``flock`` dies with its holder (even by SIGKILL), so the lock file a killed run leaves behind
    locks nothing. Where there is no flock, a file created exclusively is the lock.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is None:
        with _exclusive_file(path.with_name(path.name + ".excl")) as held:
            yield held
        return
    try:
        handle = open(path, "a")
    except FileNotFoundError:  # the folder is gone: another shard assembled OUT and removed it
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live process holds it
            yield False
            return
        except OSError:  # a filesystem without flock (e.g. Lustre mounted without it)
            with _exclusive_file(path.with_name(path.name + ".excl")) as held:
                yield held
            return
        yield True


@contextmanager
def _exclusive_file(path: Path) -> Iterator[bool]:
    """The lock is the file, created exclusively and removed on the way out (a run killed while
    holding it leaves it behind: delete it by hand)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except (FileExistsError, FileNotFoundError):
        log.warning("%s exists: another shard is assembling; if none is running, delete it and re-run", path)
        yield False
        return
    try:
        yield True
    finally:
        try:
            path.unlink()
        except OSError:
            pass
