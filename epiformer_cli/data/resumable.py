"""The one resumable-run layer: a folder holding a long run's settings and its finished pieces.

``prepare``, ``predict`` and ``score-variants`` all cut their work into pieces (a chromosome, a
chunk of windows, a chunk of VCF records) and keep them in a :class:`ResumableRun` folder:

* a settings file (``manifest.json`` unless said otherwise): the run's kind, format version and
  settings (options + input identities). Re-opening the folder with other settings is refused,
  naming the settings that differ (``--force`` discards the old pieces);
* one file per finished piece, written to a temporary name and renamed into place, so a piece
  that exists is complete: it is its own done-marker, and a killed run resumes by skipping them;
* shard records (``shards/I-of-N.json``), so a message about missing pieces can name the shards
  they belong to;
* locks (``flock``, which dies with its holder) for work only one process may do, e.g. assembling
  the pieces into the final output.

:func:`resolve_shard` is the one parser of ``--shard I/N``, SLURM array variables and torchrun
ranks. Pieces go to shards round-robin over the run's piece order (:meth:`Shard.take`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, TypeVar

from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.files import atomic_output, atomic_write_text

log = logging.getLogger(__name__)

T = TypeVar("T")

SETTINGS = "manifest.json"
SHARDS = "shards"


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
        owned_names = {settings_file, SHARDS, *owned}
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
        return self.path(name).is_file()

    def write(self, name: str, fill: Callable[[IO], None], mode: str = "wb") -> Path:
        """Write piece ``name`` atomically: ``fill(handle)`` writes it under a temporary name that is
        renamed into place once complete (so the piece is its own done-marker)."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, mode) as handle:
            fill(handle)
        return path

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda handle: handle.write(text), "w")

    def discard(self) -> None:
        """Remove the whole folder (a run that will not be resumed, or one fully assembled)."""
        shutil.rmtree(self.root, ignore_errors=True)

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
    def lock(self, name: str) -> Iterator[bool]:
        """Hold the exclusive lock ``name`` in this folder; yields False when another live process
        holds it, or when the folder is gone (another process finished the run and removed it)."""
        with exclusive(self.path(name)) as held:
            yield held


def read_settings(path: Path) -> Optional[Dict[str, Any]]:
    """A settings file's content, or ``{}`` when it is unreadable (then it differs from any run)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@contextmanager
def exclusive(path: Path) -> Iterator[bool]:
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
    except FileNotFoundError:  # the folder is gone: another process finished and removed it
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
