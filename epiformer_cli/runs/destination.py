"""Destinations: whether a command may write where it was told, decided before any work.

One place for every refusal a user meets before a run starts: an output that is an input of the
same command, a folder where a file is wanted (or the reverse), an existing output without
``--force``, and a finished output or run folder made from other inputs (:func:`other_inputs`,
naming the settings that differ). :func:`reuse_or_replace` is the one decision over a finished
output that can serve again (reuse it, build it again, or refuse); :func:`replace_or_refuse` the one
over an output that never serves again (an explain folder's results, a training run).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from epiformer_cli.errors import UsageError

log = logging.getLogger(__name__)

#: what a destination holds when it is not an epiformer output of the expected kind.
FOREIGN = object()


def _resolved(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same device and inode when both exist (hard links,
    symbolic links and ``..`` included), the same resolved path when one does not exist yet."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return _resolved(a) == _resolved(b)
    except OSError:
        return False


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (links resolved)."""
    inner, outer = _resolved(path), _resolved(folder)
    return inner != outer and inner.startswith(outer.rstrip(os.sep) + os.sep)


#: an input path, or ``(option, path)`` to name it in refusals (``("--out", "s.tsv")``)
Source = Any


def _sources(inputs: Iterable[Source]) -> List[Tuple[Optional[str], Path]]:
    out = []
    for source in inputs:
        name, source = source if isinstance(source, tuple) else (None, source)
        if source is not None and str(source) not in ("", "-"):
            out.append((name, Path(source)))
    return out


_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def kind(path: str | os.PathLike) -> Optional[str]:
    """What is at ``path``: None (nothing), "file", "folder", "FIFO (named pipe)", "character device",
    "block device", "socket" (links followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError:  # a dangling link, a loop: something is there, and it is not a file to replace
        return "broken link" if os.path.islink(path) else "file"
    return next((name for test, name in _KINDS if test(mode)), "special file")


#: what an output may be written into as a stream, never unlinked: a FIFO, a character device
#: (``/dev/null``, ``/dev/stdout``). Block devices and sockets are refused whatever the command.
STREAMS = ("FIFO (named pipe)", "character device")


def refuse_inputs(path: str | os.PathLike, inputs: Iterable[Source], option: str = "--out",
                  what: str = "output name", folder: bool = False) -> None:
    """An output is never an input of the same command, not even with ``--force``: not the same
    file (device and inode, through links and ``..``), not inside an input folder (a store), and,
    for an output ``folder``, no input inside it. Raises UsageError (exit 2)."""
    path = Path(path)
    for name, source in _sources(inputs):
        if _same_file(path, source):
            also = f"the same file as {name} {source}" if name else "also an input of this command"
            raise UsageError(f"{option} {path} is {also}: choose another {what} (inputs are never overwritten)")
        if folder and _within(source, path):
            raise UsageError(f"{option} {path} holds the input {source}: choose another folder "
                             "(inputs are never overwritten)")
        if source.is_dir() and _within(path, source):
            raise UsageError(f"{option} {path} lies inside the input folder {source}: choose another {what} "
                             "(inputs are never written into)")


def check_output(path: str | os.PathLike, *, inputs: Iterable[Source] = (),
                 force: bool = True, option: str = "--out", streams: bool = False) -> bool:
    """Refuse, before any work, an output file that cannot or should not be written.

    Never an input of the same command (not even with ``force``: that would destroy the data);
    never a folder; the folder must exist and be writable; an existing file only when ``force``,
    and ``force`` only ever replaces a regular file. A FIFO or a character device (``/dev/null``)
    is never unlinked: with ``streams`` the command writes into it as a stream (returns True),
    otherwise it is refused. Raises UsageError (exit code 2) with the fix in the message.

    Returns:
        True when ``path`` is a stream to write into (only with ``streams``), False for a file.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    refuse_inputs(path, inputs, option, "output name")
    found = kind(path)
    if found == "folder":
        raise UsageError(f"{option} {path} is a folder: give a file name such as {path / 'pred.bw'}")
    if found in STREAMS and streams:
        if not os.access(path, os.W_OK):
            raise UsageError(f"cannot write {path}: it is not writable (choose another {option})")
        return True
    if found not in (None, "file"):
        raise UsageError(f"{option} {path} is a {found}, not a file: epiformer never replaces one; "
                         "give a file name")
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: folder {folder} is not writable (choose another {option})")
    if found == "file":
        if not os.access(path, os.W_OK):
            raise UsageError(f"cannot overwrite {path}: it is read-only (choose another {option})")
        if not force:
            raise UsageError(f"{path} already exists: choose another {option}, or pass --force to overwrite it")
    return False


def check_companion(path: str | os.PathLike, *, inputs: Iterable[Source] = (),
                    option: str = "--out", what: str = "file") -> None:
    """Refuse, before any work, a file written beside an output (an index, a sidecar, a cache
    such as the null) that could not be written or would replace something that is not ours to
    replace: an input, a folder, a FIFO or device, an unwritable folder. An existing regular file
    is fine (it is read, reused or replaced with its output); a read-only one too, as long as it
    is only read (its writer reports a failed replace in one line)."""
    path = Path(path)
    refuse_inputs(path, inputs, option, what)
    found = kind(path)
    if found not in (None, "file"):
        raise UsageError(f"{option}: the {what} {path} is a {found}, not a file: move it away or choose another {option}")
    folder = path.parent if str(path.parent) else Path(".")
    if found is None and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        reason = "is not writable" if folder.is_dir() else "does not exist"
        raise UsageError(f"cannot write the {what} {path}: folder {folder} {reason} (choose another {option})")


def _foreign_entries(path: Path, marks: Sequence[str], ours: Sequence[str]) -> List[str]:
    """The names in folder ``path`` that say it is not a folder of this command: empty when it is
    empty, holds one of ``marks`` (a run of this command), or holds only names matching ``ours``.
    Temporary files of atomic writers (``.NAME....tmp``) are nobody's and ignored."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return []
    names = [n for n in names if not (n.startswith(".") and n.endswith(".tmp"))]
    if any(mark in names for mark in marks):
        return []
    return [n for n in names if not any(fnmatch.fnmatchcase(n, pattern) for pattern in ours)]


def check_output_dir(path: str | os.PathLike, *, inputs: Iterable[Source] = (),
                     option: str = "--out", marks: Optional[Sequence[str]] = None,
                     ours: Sequence[str] = ()) -> None:
    """Refuse, before any work, an output folder that cannot or should not be written.

    Never an input nor a folder holding one (whatever ``--force`` says); never a file; it, or the
    folder it will be created in, must be writable. With ``marks`` the folder is owned: an existing
    one must be empty, hold one of ``marks`` (the settings or results file of a run of the same
    command), or hold only files named like ``ours`` (glob patterns of what the command writes);
    otherwise it is refused naming the files the command did not write. Raises UsageError (exit 2).
    """
    path = Path(path)
    refuse_inputs(path, inputs, option, "folder", folder=True)
    found = kind(path)
    if found not in (None, "folder"):
        raise UsageError(f"{option} {path} is a {found}: give a folder")
    if found == "folder":
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write into {path}: the folder is not writable (choose another {option})")
        if marks is not None:
            foreign = _foreign_entries(path, marks, ours)
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise UsageError(f"{option} {path} holds files epiformer did not write ({shown}): "
                                 f"choose a new or empty folder")
        return
    parent = Path(_resolved(path)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {path}: folder {parent} is not writable (choose another {option})")


# ---- settings and the refusal naming what differs ----------------------------------------------
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


def other_inputs(path: str | os.PathLike, what: str, old: Mapping[str, Any], new: Mapping[str, Any],
                 fix: str, default: str = "settings") -> UsageError:
    """The one refusal of an output or run folder made from other inputs or options:
    ``PATH already holds a WHAT made from other inputs or options (a, b differ): FIX``."""
    differ = differences(old, new) or [default]
    if any(name.endswith("sha256_ends") for name in differ):
        # identities of earlier releases (a file's name and the hash of its ends): nothing can be
        # said about what changed, only that the output cannot be trusted as the same
        return UsageError(f"{path} holds a {what} made by an earlier epiformer release, which identified inputs by "
                          f"their name and ends only (it cannot be resumed or reused): {fix}")
    return UsageError(f"{path} already holds a {what} made from other inputs or options "
                      f"({', '.join(differ)} differ{'s' if len(differ) == 1 else ''}): {fix}")


def reuse_or_replace(path: str | os.PathLike, *, what: str, found: Any, wanted: Mapping[str, Any], force: bool,
                     fix: str, foreign: Optional[str] = None, default: str = "settings",
                     rebuild_on_force: bool = True, replace_foreign: bool = False) -> bool:
    """The one decision over a finished output at ``path``: True to reuse it, False to build it.

    Args:
        what: what the output is, for messages ("prepared store", "null").
        found: the settings the finished output was made with (a mapping), None when there is
            nothing there, or :data:`FOREIGN` when something other than such an output is there.
        wanted: the settings this run would make it with.
        force: replace an output of other settings (and, with ``rebuild_on_force``, rebuild even
            one of the same settings).
        fix: the end of the refusal message (what the user can do).
        foreign: the refusal for a FOREIGN destination (default: "PATH exists and is not a WHAT").
        replace_foreign: let ``force`` replace a FOREIGN destination too (a single file of ours);
            by default never (a folder of files epiformer did not make is never emptied).

    Raises:
        UsageError: without ``force``, an output made from other settings (naming them); something
            that is not such an output (unless ``force`` and ``replace_foreign``).
    """
    if found is None:
        return False
    if found is FOREIGN:
        if not (force and replace_foreign):
            raise UsageError(foreign or f"{path} exists and is not a {what}: {fix}")
        log.warning("replacing %s, which is not a %s (--force)", path, what)
        return False
    same = plain(dict(found)) == plain(dict(wanted))
    if same and not (force and rebuild_on_force):
        return True
    if not same:
        if not force:
            raise other_inputs(path, what, found, wanted, fix, default)
        log.info("replacing the %s %s (%s differed; --force)", what, path,
                 ", ".join(differences(found, wanted) or [default]))
    return False


def replace_or_refuse(path: str | os.PathLike, *, holds: Optional[str], force: bool, fix: str) -> bool:
    """The one decision over a finished output that is never reused: True when ``path`` holds one
    (``holds`` says what, e.g. ``"explain results (out/explain.json)"``) and ``force`` replaces it,
    False when it holds none.

    Raises:
        UsageError: ``PATH already holds HOLDS: FIX`` when it holds one and ``force`` is off.
    """
    if holds is None:
        return False
    if not force:
        raise UsageError(f"{path} already holds {holds}: {fix}")
    log.info("replacing %s in %s (--force)", holds, path)
    return True
