"""The one resumable-run layer: a folder holding a long run's settings and its finished pieces.

``prepare``, ``predict`` and ``score-variants`` all cut their work into pieces (a chromosome, a
chunk of windows, a chunk of VCF records) and keep them in a :class:`ResumableRun` folder:

* a settings file (``manifest.json`` unless said otherwise): the run's kind, format version and
  settings (options + input identities). Re-opening the folder with other settings is refused,
  naming the settings that differ (``--force`` discards the old pieces);
* one file per finished piece, written to a temporary name and renamed into place, so a piece
  that exists is complete: it is its own done-marker, and a killed run resumes by skipping them.
  Every piece ends with a checksum line (:data:`TRAILER_SIZE` bytes: CRC-32 and length of what
  precedes it), verified whenever the piece is read back (:meth:`ResumableRun.read_bytes`,
  :meth:`ResumableRun.verify`): a flipped byte or a truncated copy is found, not used;
* claims (:class:`Claims`): a lock per piece taken before it is computed, so concurrent runs on
  one folder (two identical commands, two array tasks given the same shard) share the pieces;
* shard records (``shards/I-of-N.json``), so a message about missing pieces can name the shards
  they belong to;
* locks (``flock``, which dies with its holder) for work only one process may do, e.g. assembling
  the pieces into the final output.

:func:`resolve_shard` is the one parser of ``--shard I/N``, SLURM array variables and torchrun
ranks. Pieces go to shards round-robin over the run's piece order (:meth:`Shard.take`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, TypeVar

from epiformer_cli.errors import InputFileError, StorageError, UsageError
from epiformer_cli.io.files import atomic_output, atomic_write_text

log = logging.getLogger(__name__)

T = TypeVar("T")

SETTINGS = "manifest.json"
SHARDS = "shards"
CLAIMS = "claims"

# ---- checksums -------------------------------------------------------------------------------
#: the last line of every piece: ``#epiformer-crc32 CCCCCCCC LLLLLLLLLLLLLLLL\n`` (CRC-32 and
#: byte length of everything before it). Fixed length, so a reader finds it without parsing; a
#: comment line, so a text piece stays text; after the data, so ``np.load`` of a piece still works.
_TRAILER_TAG = b"#epiformer-crc32 "
TRAILER_SIZE = len(_TRAILER_TAG) + 8 + 1 + 16 + 1


def trailer(crc: int, length: int) -> bytes:
    """The checksum line for ``length`` bytes of content with CRC-32 ``crc``."""
    return _TRAILER_TAG + b"%08x %016d\n" % (crc & 0xFFFFFFFF, length)


class CorruptPiece(StorageError):
    """A stored piece fails its checksum (a flipped byte, a truncated or partial copy)."""


def checked_content(data: bytes, path: Path) -> bytes:
    """``data`` (a whole piece file) without its checksum line, after checking it.

    Raises:
        CorruptPiece: the line is missing or malformed, or the length or CRC-32 differ.
    """
    body, tail = data[:-TRAILER_SIZE], data[-TRAILER_SIZE:]
    try:
        if len(data) < TRAILER_SIZE or not tail.startswith(_TRAILER_TAG) or not tail.endswith(b"\n"):
            raise ValueError("no checksum line (truncated, or written by another tool)")
        crc_text, length_text = tail[len(_TRAILER_TAG):-1].split(b" ")
        if int(length_text) != len(body):
            raise ValueError(f"{len(body)} bytes where {int(length_text)} were written (truncated or extended)")
        if int(crc_text, 16) != zlib.crc32(body):
            raise ValueError("checksum mismatch (a changed byte)")
    except ValueError as exc:
        raise CorruptPiece(f"{path} is damaged: {exc}") from None
    return body


class _ChecksumWriter(io.RawIOBase):
    """A binary handle that keeps the CRC-32 and length of what passes through it (a file object,
    so ``np.save``, ``np.savez`` and a text wrapper can write to it)."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle, self.crc, self.length = handle, 0, 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.crc = zlib.crc32(view, self.crc)
        self.length += len(view)
        self._handle.write(view)
        return len(view)

    def flush(self) -> None:
        self._handle.flush()


# ---- shards ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``: the pieces ``i`` with ``i % count == index``.

    Attributes:
        index, count: this part and how many there are.
        source: where it came from (``--shard``, ``SLURM array``, ``torchrun``), for messages.
    """

    index: int = 0
    count: int = 1
    source: str = "--shard"

    @property
    def label(self) -> str:
        """``I/N`` with I 1-based, as the user writes it."""
        return f"{self.index + 1}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def take(self, items: Sequence[T]) -> List[T]:
        """This part's share of ``items`` (in run order): round-robin, so every part gets a mix."""
        return [item for i, item in enumerate(items) if i % self.count == self.index]

    def split(self, rank: int, world: int) -> "Shard":
        """This shard split again between ``world`` processes (torchrun ranks): rank ``rank``'s part."""
        if world <= 1:
            return self
        return Shard(self.index * world + rank, self.count * world, "torchrun" if self.whole else self.source)


def torchrun_rank(environ: Optional[Mapping[str, str]] = None) -> tuple[int, int, Optional[int]]:
    """(rank, world size, local rank) under torchrun; (0, 1, None) otherwise."""
    environ = os.environ if environ is None else environ
    try:
        world = int(environ.get("WORLD_SIZE", "1") or 1)
        rank = int(environ.get("RANK", "0") or 0)
        local = environ.get("LOCAL_RANK")
        return rank, max(1, world), int(local) if local not in (None, "") else None
    except ValueError:
        return 0, 1, None


def resolve_shard(spec: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Shard:
    """``--shard I/N`` (I is 1-based: 1/3, 2/3, 3/3) -> :class:`Shard` ``(I - 1, N)``.

    Without ``spec``, a SLURM array job (``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``
    set) is shard ``TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``TASK_COUNT``; otherwise the whole run
    (``Shard(0, 1)``). ``--shard 1/1`` turns sharding off inside an array job. Torchrun ranks are
    not included: see :meth:`Shard.split` and :func:`torchrun_rank`.

    Raises:
        UsageError: a malformed spec, or array variables that do not describe a contiguous array.
    """
    environ = os.environ if environ is None else environ
    if spec is None or not str(spec).strip():
        task, count = environ.get("SLURM_ARRAY_TASK_ID"), environ.get("SLURM_ARRAY_TASK_COUNT")
        if not task or not count:
            return Shard()
        try:
            index = int(task) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            n = int(count)
        except ValueError:
            raise UsageError(f"SLURM_ARRAY_TASK_ID={task!r}/SLURM_ARRAY_TASK_COUNT={count!r} are not integers") from None
        if n < 1 or not 0 <= index < n:
            raise UsageError(f"SLURM array task {task} (min {environ.get('SLURM_ARRAY_TASK_MIN', '0')}) is not one of "
                             f"{count} tasks: use a contiguous --array range or pass --shard I/N")
        return Shard(index, n, "SLURM array") if n > 1 else Shard()
    text = str(spec).strip()
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard must look like I/N (e.g. 2/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be between 1 and N (shards are numbered 1/N to N/N)")
    return Shard(i - 1, n, "--shard")


# ---- settings --------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples -> lists, paths -> strings): what a reader sees."""
    return json.loads(json.dumps(value, default=str))


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> List[str]:
    """Dotted names of the settings that differ between ``old`` and ``new``, down to the leaf that
    differs (``options.inference.precision``, ``inputs.fasta``); lists are compared whole."""
    out: List[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


class ResumableRun:
    """A run folder: settings, finished pieces (each its own marker), shard records, locks.

    Args:
        root: the folder.
        kind: what the folder holds (``epiformer-predictions``...), stored and checked.
        format_version: the layout version, stored and checked.
        settings: everything the pieces' contents depend on (JSON-like). Stored on creation;
            a folder holding other settings is refused (or, with ``force``, emptied).
        what: what the folder is, for messages ("prediction store").
        settings_file: the settings file's name.
        owned: names of entries the layer's users create at the top level (a folder holding
            anything else is not a run folder and is refused).
        force: discard the pieces of a run with other settings.
        fix: what the user should do about a refused folder (ends the refusal message).

    Raises:
        UsageError: the folder holds a run of other settings (naming them), or is not a run folder.
        InputFileError: the folder cannot be written.
    """

    def __init__(self, root: str | os.PathLike, *, kind: str, format_version: int, settings: Mapping[str, Any],
                 what: str, settings_file: str = SETTINGS, owned: Sequence[str] = (), force: bool = False,
                 fix: str = "use another --out, or --force to discard it") -> None:
        self.root = Path(root)
        self.kind, self.format_version, self.what = kind, int(format_version), what
        self.settings_path = self.root / settings_file
        self.settings: Dict[str, Any] = plain(dict(settings))
        self.resumed = False
        record = {"kind": kind, "format_version": self.format_version, **self.settings}
        owned_names = {settings_file, SHARDS, CLAIMS, *owned}
        existing = read_settings(self.settings_path) if self.settings_path.exists() else None
        if existing is not None:
            if existing == record:
                self.resumed = True
                return
            if not force:
                differ = differences(existing, record) or ["settings"]
                raise UsageError(f"{self.root} already holds a {what} made from other inputs or options "
                                 f"({', '.join(differ)} differ{'s' if len(differ) == 1 else ''}): {fix}")
            self._clear()
        elif self.root.exists() and (not self.root.is_dir() or any(
                p.name not in owned_names and not p.name.startswith(f".{settings_file}.") and not p.name.endswith(".lock")
                for p in self.root.iterdir())):  # a lock file is left when a folder is removed while one is taken
            raise UsageError(f"{self.root} exists and is not a {what}: choose another folder")
        try:
            # the settings first: a shard starting at the same moment then sees a run, not a stranger
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.settings_path, json.dumps(record, indent=1) + "\n")
        except OSError as exc:
            raise InputFileError(f"cannot write the {what} {self.root}: {exc.strerror}: "
                                 "check the folder's permissions or choose another folder") from None

    @classmethod
    def reopen(cls, root: str | os.PathLike, *, kind: str, format_version: int, what: str,
               settings_file: str = SETTINGS) -> "ResumableRun":
        """An existing run folder as it is (its settings read, not compared): for readers such as
        ``export-bigwig`` that check the kind and version themselves."""
        run = cls.__new__(cls)
        run.root = Path(root)
        run.kind, run.format_version, run.what = kind, int(format_version), what
        run.settings_path = run.root / settings_file
        record = read_settings(run.settings_path) or {}
        run.settings = {k: v for k, v in record.items() if k not in ("kind", "format_version")}
        run.resumed = True
        return run

    def _clear(self) -> None:
        """Remove every piece (the settings file says the folder is a run's, so all of it is ours)."""
        for entry in self.root.iterdir():
            if entry != self.settings_path:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    # ---- pieces ----------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """Where piece ``name`` (a relative path such as ``chunks/0/3.npy``) lives."""
        return self.root / name

    def is_done(self, name: str) -> bool:
        """Whether piece ``name`` exists (complete, since pieces appear by rename; its bytes are
        checked when read: :meth:`read_bytes`, :meth:`verify`)."""
        return self.path(name).is_file()

    def write(self, name: str, fill: Callable[[IO], None], mode: str = "wb") -> Path:
        """Write piece ``name`` atomically: ``fill(handle)`` writes it under a temporary name that is
        renamed into place once complete (so the piece is its own done-marker), followed by its
        checksum line. ``mode`` ``"w"`` hands ``fill`` a text handle (UTF-8)."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, "wb") as raw:
            summing = _ChecksumWriter(raw)
            if "b" in mode:
                fill(summing)
            else:
                text = io.TextIOWrapper(summing, encoding="utf-8", newline="", write_through=True)  # type: ignore[arg-type]
                fill(text)
                text.flush()
                text.detach()
            raw.write(trailer(summing.crc, summing.length))
        return path

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda handle: handle.write(text.encode("utf-8")))

    def read_bytes(self, name: str) -> bytes:
        """Piece ``name``'s content, checked against its checksum line.

        Raises:
            CorruptPiece: the piece is damaged (the caller recomputes it, or refuses naming the fix).
            FileNotFoundError: there is no such piece.
        """
        path = self.path(name)
        return checked_content(path.read_bytes(), path)

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def verify(self, name: str) -> bool:
        """Whether piece ``name`` exists and passes its checksum (streamed: any size)."""
        path = self.path(name)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < TRAILER_SIZE:
                    return False
                crc, left = 0, size - TRAILER_SIZE
                while left:
                    block = handle.read(min(left, 1 << 22))
                    if not block:
                        return False
                    crc = zlib.crc32(block, crc)
                    left -= len(block)
                tail = handle.read()
        except OSError:
            return False
        return tail == trailer(crc, size - TRAILER_SIZE)

    def drop_damaged(self, name: str, what: str, fix: str = "it is computed again") -> None:
        """Remove a damaged piece with one warning naming it (the caller recomputes it)."""
        log.warning("%s: %s failed its checksum (a damaged disk or copy?): %s", self.path(name), what, fix)
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def discard(self) -> None:
        """Remove the whole folder (a run that will not be resumed, or one fully assembled).

        The folder is renamed away first, so a process that opens a lock or claim in it at the same
        moment creates nothing under the run's name (removing in place raced with such files)."""
        if not self.root.exists():
            return
        trash = self.root.with_name(f".{self.root.name}.removed-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(self.root, trash)
        except OSError:
            trash = self.root
        shutil.rmtree(trash, ignore_errors=True)

    # ---- claims ----------------------------------------------------------------------------
    def claims(self) -> "Claims":
        """The claims of this process on pieces of this folder (see :class:`Claims`)."""
        return Claims(self.path(CLAIMS))

    # ---- shards ----------------------------------------------------------------------------
    def record_shard(self, shard: Shard, state: str) -> None:
        """Note that ``shard`` started or finished (only messages use it)."""
        if shard.whole:
            return
        self.path(SHARDS).mkdir(exist_ok=True)
        atomic_write_text(self.path(SHARDS) / f"{shard.index + 1}-of-{shard.count}.json",
                          json.dumps({"state": state}) + "\n")

    def shard_counts(self) -> List[int]:
        """The shard counts N that runs on this folder used."""
        counts = set()
        for path in self.path(SHARDS).glob("*-of-*.json"):
            try:
                counts.add(int(path.stem.split("-of-")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(counts)

    def describe_missing(self, missing_positions: Sequence[int], total: int, labels: Sequence[str],
                         noun: str = "chunks", limit: int = 8) -> str:
        """'3 of 12 chunks are missing: a, b, c; with --shard I/3 they belong to shard(s) 2/3'.

        Args:
            missing_positions: positions (in run order) of the missing pieces.
            total: the number of pieces.
            labels: one label per missing piece, for the message.
        """
        shown = ", ".join(labels[:limit])
        more = f", ... ({len(labels) - limit} more)" if len(labels) > limit else ""
        text = f"{len(missing_positions)} of {total} {noun} are missing: {shown}{more}"
        for n in self.shard_counts():
            parts = sorted({p % n + 1 for p in missing_positions})
            text += f"; with --shard I/{n} they belong to shard(s) {', '.join(f'{p}/{n}' for p in parts)}"
        return text

    # ---- locks -----------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, wait: bool = False) -> Iterator[bool]:
        """Hold the exclusive lock ``name`` in this folder; yields False when another live process
        holds it (with ``wait``, waits for it instead), or when the folder is gone (another process
        finished the run and removed it)."""
        with exclusive(self.path(name), wait) as held:
            yield held


def read_settings(path: Path) -> Optional[Dict[str, Any]]:
    """A settings file's content, or ``{}`` when it is unreadable (then it differs from any run)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


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
