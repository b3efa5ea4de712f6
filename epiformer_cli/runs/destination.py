"""Destinations: whether a command may write where it was told, decided before any work.

One place for every refusal a user meets before a run starts: an output that is an input of the
same command, a folder where a file is wanted (or the reverse), an existing output without
``--force``, and a finished output or run folder made from other inputs (:func:`other_inputs`,
naming the settings that differ). :func:`reuse_or_replace` is the one decision over a finished
output that can serve again (reuse it, build it again, or refuse); :func:`replace_or_refuse` the one
over an output that never serves again (an explain folder's results, a training run).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

from epiformer_cli.errors import UsageError

log = logging.getLogger(__name__)

#: what a destination holds when it is not an epiformer output of the expected kind.
FOREIGN = object()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(path: str | os.PathLike, inputs: Iterable[Optional[str | os.PathLike]], option: str = "--out",
                  what: str = "output name") -> None:
    """An output is never an input of the same command (not even with --force)."""
    path = Path(path)
    for source in inputs:
        if source is not None and str(source) != "-" and _same_file(path, Path(source)):
            raise UsageError(f"{option} {path} is also an input of this command: choose another {what} "
                             "(inputs are never overwritten)")


def check_output(path: str | os.PathLike, *, inputs: Iterable[Optional[str | os.PathLike]] = (),
                 force: bool = True, option: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot or should not be written.

    Never an input of the same command (not even with ``force``: that would destroy the data);
    never a folder; the folder must exist and be writable; an existing file only when ``force``.
    Raises UsageError (exit code 2) with the fix in the message.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    refuse_inputs(path, inputs, option, "output name")
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


def check_output_dir(path: str | os.PathLike, *, inputs: Iterable[Optional[str | os.PathLike]] = (),
                     option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is an input of the same command (whatever
    ``--force`` says) or an existing file. Raises UsageError (exit code 2) with the fix."""
    path = Path(path)
    refuse_inputs(path, inputs, option, "folder")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file: give a folder")


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
