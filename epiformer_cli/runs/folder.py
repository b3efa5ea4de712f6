"""A run folder: a long run's settings and its finished pieces, each its own done-marker.

``prepare``, ``predict``, ``score-variants`` (and its null) and ``explain`` cut their work into
pieces (a chromosome, a chunk of windows, a chunk of VCF records, a region) and keep them in a
:class:`ResumableRun` folder:

* a settings file (``manifest.json`` unless said otherwise): the run's kind, format version and
  settings (options + input identities). Re-opening the folder with other settings is refused,
  naming each that differs as the user types it, with both values ("--score-bins: 5 in the
  earlier run, 3 now": :func:`~epiformer_cli.runs.destination.other_inputs`; ``--force`` discards
  the old pieces);
* one file per finished piece, written to a temporary name and renamed into place, so a piece
  that exists is complete: a killed run resumes by skipping them. Every piece ends with a checksum
  line (:mod:`epiformer_cli.runs.checksums`), verified whenever the piece is read back;
* claims (:class:`~epiformer_cli.runs.claims.Claims`), so concurrent runs on one folder share the
  pieces, and locks for work only one process may do (assembling the pieces);
* shard records (``shards/I-of-N.json``), so a message about missing pieces can name the shards
  they belong to.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.files import atomic_output, atomic_write_text, fsync_dir, remove_stale_temporaries_under
from epiformer_cli.runs.checksums import ChecksumWriter, checked_content, file_has_trailer
from epiformer_cli.runs.claims import Claims, exclusive
from epiformer_cli.runs.destination import other_inputs, plain
from epiformer_cli.runs.shards import Shard

log = logging.getLogger(__name__)

SETTINGS = "manifest.json"
SHARDS = "shards"
CLAIMS = "claims"


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
                remove_stale_temporaries_under(self.root)
                return
            if not force:
                raise other_inputs(self.root, what, existing, record, fix)
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
            summing = ChecksumWriter(raw)
            if "b" in mode:
                fill(summing)
            else:
                text = io.TextIOWrapper(summing, encoding="utf-8", newline="", write_through=True)  # type: ignore[arg-type]
                fill(text)
                text.flush()
                text.detach()
            raw.write(summing.sum.trailer())
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
        return file_has_trailer(self.path(name))

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

    def publish_as(self, out: str | os.PathLike, drop: Sequence[str] = (), lock: Optional[str] = None) -> None:
        """Turn this finished run folder into the output folder ``out``: remove the run's own files
        (the settings file, claims, shard records, ``drop`` and the ``lock`` this process holds, so
        a run waiting for it then finds ``out``), then rename the folder into place, replacing an
        older ``out`` (renamed away first, so ``out`` is always whole)."""
        out = Path(out)
        for name in (*drop, SHARDS, CLAIMS):
            shutil.rmtree(self.path(name), ignore_errors=True)
        if lock is not None:
            self.path(lock).unlink(missing_ok=True)
        self.settings_path.unlink()
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(out, trash)
            os.replace(self.root, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.root, out)
        fsync_dir(out.parent)

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


