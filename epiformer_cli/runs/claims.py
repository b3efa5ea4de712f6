"""Claims and locks: how concurrent runs on one run folder share its pieces and its final steps.

A claim (:class:`Claims`) is a ``flock`` on ``claims/NAME.lock``, held while a piece is computed;
a lock (:func:`exclusive`) guards work only one process may do (assembling the pieces, publishing
the output). Both die with their holder, even by SIGKILL, so a killed run never blocks the next.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@contextmanager
def exclusive(path: Path, wait: bool = False) -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False when another process holds it (with
    ``wait``: blocks until it is free).

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
    except FileNotFoundError:  # the folder is gone: another process finished and removed it
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
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
        log.warning("%s exists: another process holds it; if none is running, delete it and re-run", path)
        yield False
        return
    try:
        yield True
    finally:
        try:
            path.unlink()
        except OSError:
            pass


class RunFinishedElsewhere(Exception):
    """The run folder was finished and removed by another run of the same command while this one
    worked through it (its caller then finds the finished output)."""


class Claims:
    """Locks on pieces, one per piece, held while the piece is computed: how concurrent runs on one
    folder share the work. A claim is a ``flock`` on ``claims/NAME.lock``: it dies with its holder
    (even by SIGKILL), so a killed run's claims free themselves.

    Use :meth:`take` before computing a piece (False: another live process is computing it), and
    :meth:`release` once the piece is written; :meth:`wait` waits for pieces others hold.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: Dict[str, Any] = {}

    def _file(self, name: str) -> Path:
        return self.folder / (name.replace("/", "__") + ".lock")

    def take(self, name: str) -> bool:
        """Claim piece ``name``; False when another live process holds it."""
        if name in self._held:
            return True
        try:
            import fcntl
        except ImportError:  # not POSIX: no sharing, every run computes what it lacks
            return True
        if not self.folder.parent.is_dir():
            return False  # the run folder is gone: finished by another run (see wait)
        try:
            self.folder.mkdir(exist_ok=True)
            handle = open(self._file(name), "a")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # a read-only folder: compute it (its write then says what is wrong)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except OSError:  # no flock on this file system: no sharing
            handle.close()
            return True
        self._held[name] = handle
        return True

    def release(self, name: str) -> None:
        handle = self._held.pop(name, None)
        if handle is not None:
            handle.close()  # closing drops the flock

    def release_all(self) -> None:
        for name in list(self._held):
            self.release(name)

    @contextmanager
    def holding(self, name: str) -> Iterator[bool]:
        """Hold the claim on ``name`` for the block; yields False while another live process holds it."""
        took = self.take(name)
        try:
            yield took
        finally:
            if took:
                self.release(name)

    def work_through(self, items: Sequence[T], attempt: Callable[[T], bool], name: Callable[[T], str],
                     is_done: Callable[[str], bool], poll: float = 2.0, what: str = "pieces") -> None:
        """The loop every resumable job runs: ``attempt(item)`` each item (it returns False when
        another live process holds the item's claim), then wait for those and attempt them again,
        until every one is done; a piece whose holder died is attempted (and so computed) here.

        Raises:
            RunFinishedElsewhere: the run folder is gone (another run finished and removed it).
        """
        pending = [item for item in items if not attempt(item)]
        while pending:
            self.wait([name(item) for item in pending], is_done, poll=poll, what=what)
            pending = [item for item in pending if not attempt(item)]

    def held_elsewhere(self, name: str) -> bool:
        """Whether another live process holds ``name`` now (taking and dropping it to find out)."""
        if name in self._held:
            return False
        if self.take(name):
            self.release(name)
            return False
        return True

    def wait(self, names: Sequence[str], is_done: Callable[[str], bool], poll: float = 2.0,
             what: str = "pieces") -> List[str]:
        """Wait until every piece of ``names`` is done or no longer held by another process;
        returns the ones that are not done (their holder died: the caller computes them).

        Raises:
            RunFinishedElsewhere: the run folder is gone (another run finished and removed it).
        """
        pending = [n for n in names if not is_done(n)]
        last_log = 0.0
        while True:
            if not self.folder.parent.is_dir():
                raise RunFinishedElsewhere(str(self.folder.parent))
            still = []
            for name in pending:
                if is_done(name):
                    continue
                if self.held_elsewhere(name):
                    still.append(name)
                elif not is_done(name):
                    return [n for n in pending if not is_done(n)]  # a holder died: compute them now
            if not still:
                return []
            pending = still
            if time.monotonic() - last_log > 60:
                log.info("waiting for %d %s another run is computing", len(still), what)
                last_log = time.monotonic()
            time.sleep(poll)

    def __enter__(self) -> "Claims":
        return self

    def __exit__(self, *exc) -> None:
        self.release_all()
