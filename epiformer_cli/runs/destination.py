"""Destinations: whether a command may write where it was told, decided before any work.

One place for every refusal a user meets before a run starts: an output that is an input of the
same command, a folder where a file is wanted (or the reverse), an existing output without
``--force``, and a finished output or run folder made from other inputs (:func:`other_inputs`,
naming each setting that differs as the user types it, with both values). :func:`reuse_or_replace` is the one decision over a finished
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
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

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
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a file where a folder is: said by its writer)
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
    never a folder; its folder must be writable, or creatable (:func:`check_folder`: missing folders
    are made when the output is written, as ``mkdir -p``); an existing file only when ``force``,
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
    check_folder(folder, f"cannot write {path}", option)
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
    if found is None:
        check_folder(path.parent if str(path.parent) else Path("."), f"cannot write the {what} {path}", option)


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
    check_folder(path, f"cannot create {path}", option)


def check_folder(folder: str | os.PathLike, doing: str, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be had: an existing one must be a
    writable folder; a missing one is made by the writer of the output (``mkdir -p``, once every
    check has passed, so a refused run leaves no folder behind), and the nearest path above it that
    exists must be a writable folder, not a file. Raises UsageError: ``DOING: x is a file, not a
    folder (choose another OPTION)``, or ``...: folder x is not writable (...)``."""
    folder = Path(folder) if str(folder) else Path(".")
    there = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), Path("."))
    if not there.is_dir():
        raise UsageError(f"{doing}: {there} is a {kind(there) or 'file'}, not a folder (choose another {option})")
    if not os.access(there, os.W_OK | os.X_OK):
        making = "" if there == folder else f"cannot create folder {folder}: "
        raise UsageError(f"{doing}: {making}folder {there} is not writable (choose another {option})")


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


#: a setting one record has and the other has not
_ABSENT = object()
#: the keys that say what a record is: when one of them differs, the rest says nothing more
_FORMAT_KEYS = ("kind", "format_version", "store format")
#: at most this many differences are named; the rest are counted ("and 3 more")
SHOWN_DIFFERENCES = 4


def _is_identity(value: Any) -> bool:
    """Whether ``value`` is a file's identity as records hold it (``{"size", "sha256"}``, ``{"path"}``
    for a stream, an earlier release's ``{"name", "size", "sha256_ends"}``): compared as a whole."""
    return (isinstance(value, dict) and bool(value) and set(value) <= {"size", "sha256", "path", "name", "sha256_ends"}
            and bool({"sha256", "path", "sha256_ends"} & set(value)))


def _records(value: Any) -> bool:
    """Whether ``value`` is a list of named records (``prepare``'s target tracks)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


def _namespace(old: Any, new: Any, outer: str) -> str:
    from epiformer_cli.options import SETTING_NAMESPACES

    for record in (new, old):
        kind = record.get("kind") if isinstance(record, dict) else None
        if isinstance(kind, str) and kind in SETTING_NAMESPACES:
            return SETTING_NAMESPACES[kind]
    return outer


def setting_changes(old: Mapping[str, Any], new: Mapping[str, Any], key: str = "", namespace: str = "",
                    subject: str = "") -> List[Tuple[str, str, str, Any, Any]]:
    """The settings that differ, as ``(key, namespace, subject, old, new)``: ``key`` with the
    record's containers left out (:data:`~epiformer_cli.options.SETTING_CONTAINERS`), a file's
    identity whole, a list of named records record by record (``subject``: the record's name).
    A setting one side lacks is :data:`_ABSENT` there."""
    from epiformer_cli.options import SETTING_CONTAINERS

    namespace = _namespace(old, new, namespace) if not key else namespace
    out: List[Tuple[str, str, str, Any, Any]] = []
    for name in sorted(set(old) | set(new), key=str):
        a, b = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if a == b:
            continue
        inner = key if name in SETTING_CONTAINERS else f"{key}.{name}" if key else str(name)
        if isinstance(a, dict) and isinstance(b, dict) and not (_is_identity(a) or _is_identity(b)):
            out += setting_changes(a, b, inner, _namespace(a, b, namespace), subject)
        elif _records(a) and _records(b):
            names_a, names_b = [r["name"] for r in a], [r["name"] for r in b]
            if names_a != names_b:
                out.append((f"{inner}.name", namespace, subject, names_a, names_b))
                continue
            for ra, rb in zip(a, b):
                if ra != rb:
                    out += setting_changes(ra, rb, inner, namespace, str(ra["name"]))
        else:
            out.append((inner, namespace, subject, a, b))
    return out


def setting_name(key: str, namespace: str = "", new: Any = None) -> str:
    """What a user typed for the setting ``key`` (:data:`~epiformer_cli.options.SETTING_NAMES`; a pair
    ``--a/--no-a`` by the side ``new`` takes), or the key in words when no entry names it."""
    from epiformer_cli.options import SETTING_NAMES

    name = SETTING_NAMES.get(f"{namespace}.{key}") if namespace else None
    name = name or SETTING_NAMES.get(key)
    if name is None:
        return key.replace("_", " ")
    if "/" in name:
        on, off = name.split("/", 1)
        return off if new is False else on
    return name


def _value(value: Any, name: str) -> str:
    """A recorded value, short: hashes to 8 hex, long lists and paths cut, files by size and hash."""
    from epiformer_cli.options import SETTING_UNSET

    if value is _ABSENT:
        return "nothing"
    if value is None:
        return SETTING_UNSET.get(name, "none")
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "-":
        return "standard input"
    if _is_identity(value):
        if "sha256" in value:
            size = f"{value['size']:,} bytes " if isinstance(value.get("size"), int) else ""
            return f"{size}{_value(value['sha256'], name)}"
        if "path" in value:
            return f"{_value(str(value['path']), name)} (not identified)"
        return "a file named by an earlier release"
    if isinstance(value, str):
        if len(value) >= 16 and all(c in "0123456789abcdef" for c in value):
            return value[:8] + "..."
        return value if len(value) <= 48 else "..." + value[-45:]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        if not value:
            return "none"
        if any(isinstance(v, (list, dict)) for v in value):
            return f"{len(value)} entries"
        shown = ",".join(_value(v, name) for v in value[:SHOWN_DIFFERENCES])
        return shown if len(value) <= SHOWN_DIFFERENCES else f"{shown},... ({len(value)})"
    if isinstance(value, dict):
        return f"{len(value)} settings"
    return str(value)


def _detail(old: Any, new: Any, name: str, holder: str) -> str:
    """``OLD in the store, NEW now``; a file: ``another file (size/sha256 differ: ...)``."""
    if isinstance(old, bool) and isinstance(new, bool):
        return f"{holder} has it {_value(old, name)}, this run {_value(new, name)}"
    if _is_identity(old) and _is_identity(new) and "sha256" in old and "sha256" in new:
        differ = [k for k in ("size", "sha256") if old.get(k) != new.get(k)]
        if differ == ["sha256"]:
            old, new = old["sha256"], new["sha256"]
        return (f"another file ({'/'.join(differ)} differ{'s' if len(differ) == 1 else ''}: "
                f"{_value(old, name)} in {holder}, {_value(new, name)} now)")
    return f"{_value(old, name)} in {holder}, {_value(new, name)} now"


def describe_differences(old: Mapping[str, Any], new: Mapping[str, Any], what: str = "run") -> Tuple[str, str]:
    """What differs between the settings ``old`` (a finished output's or run folder's) and ``new``
    (this run's), in the user's words: ``(lead, items)``, e.g. ``("made with other options",
    "--no-rc-average: the store has it on, this run off; --step: 4096 in the store, 8192 now")``.

    Each item names the option as typed (:data:`~epiformer_cli.options.SETTING_NAMES`) with both
    values; settings several keys record (``--chroms`` as typed and as resolved) are named once;
    at most :data:`SHOWN_DIFFERENCES` are named, then "and N more". A different format or kind is
    named alone (it explains the rest); settings no option sets only when no input or option
    differs. ``items`` is empty when nothing differs.
    """
    from epiformer_cli.options import SETTING_INPUTS

    last = what.split()[-1] if what.split() else "run"
    holder = {"store": "the store", "null": "the null"}.get(last, "the earlier run")
    groups: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for key, namespace, subject, a, b in setting_changes(old, new):
        label = setting_name(key, namespace)  # a pair --a/--no-a as one, whatever its side
        kind = ("format" if key.rsplit(".", 1)[-1] in _FORMAT_KEYS else "input" if label in SETTING_INPUTS
                else "option" if label.startswith("--") else "setting")
        # a record's field ("A's file: ..."), or the names of a list of records ("tracks A,B ...")
        about = (f"{subject}'s {key.rsplit('.', 1)[-1]}: " if subject
                 else f"{key.rsplit('.', 2)[-2]} " if key.endswith(".name") and isinstance(b, list) else "")
        group = groups.setdefault((label, subject), {"kind": kind, "about": about, "pairs": []})
        group["pairs"].append((setting_name(key, namespace, b), a, b))
    present = {g["kind"] for g in groups.values()}
    shown = ({"format"} if "format" in present else {"input", "option"} & present or {"setting"})
    items = []
    inputs_first = sorted(groups.items(), key=lambda item: item[1]["kind"] != "input")
    for (label, _), group in inputs_first:
        if group["kind"] not in shown:
            continue
        # one item per option (and record): the first key holding both values speaks for it
        pairs = group["pairs"]
        whole = [p for p in pairs if p[1] is not _ABSENT and p[2] is not _ABSENT]
        name, a, b = whole[0] if whole else (
            pairs[0][0], next((p[1] for p in pairs if p[1] is not _ABSENT), _ABSENT),
            next((p[2] for p in pairs if p[2] is not _ABSENT), _ABSENT))
        items.append(f"{name}: {group['about']}{_detail(a, b, label, holder)}")
    lead = ("of another format" if shown == {"format"}
            else "made from other inputs and options" if shown == {"input", "option"}
            else "made from other inputs" if shown == {"input"}
            else "made with other options" if shown == {"option"} else "made with other settings")
    if len(items) > SHOWN_DIFFERENCES:
        items = items[:SHOWN_DIFFERENCES] + [f"and {len(items) - SHOWN_DIFFERENCES} more"]
    return lead, "; ".join(items)


def other_inputs(path: str | os.PathLike, what: str, old: Mapping[str, Any], new: Mapping[str, Any],
                 fix: str, default: str = "settings") -> UsageError:
    """The one refusal of an output or run folder made with other settings, naming each as the user
    types it with both values (:func:`describe_differences`): ``PATH already holds a WHAT made with
    other options (--step: 4096 in the store, 8192 now): FIX``."""
    differ = differences(old, new) or [default]
    if any(name.endswith("sha256_ends") for name in differ):
        # identities of earlier releases (a file's name and the hash of its ends): nothing can be
        # said about what changed, only that the output cannot be trusted as the same
        return UsageError(f"{path} holds a {what} made by an earlier epiformer release, which identified inputs by "
                          f"their name and ends only (it cannot be resumed or reused): {fix}")
    if not old:
        return UsageError(f"{path} already holds a {what} whose settings cannot be read: {fix}")
    lead, items = describe_differences(plain(dict(old)), plain(dict(new)), what)
    return UsageError(f"{path} already holds a {what} {lead} ({items or default + ' not the same'}): {fix}")


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
        log.info("replacing the %s %s (%s; --force)", what, path,
                 describe_differences(plain(dict(found)), plain(dict(wanted)), what)[1] or f"{default} not the same")
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


def remove_finished(folder: str | os.PathLike, provenance: str) -> None:
    """Remove the files of a finished run in ``folder`` (``--force``, after :func:`replace_or_refuse`):
    those its provenance file (``explain.json``, ``motifs.json``) lists under ``files``, then that
    file. Only what the run wrote goes; a provenance file that cannot be read removes only itself."""
    import shutil

    previous = Path(folder) / provenance
    if not previous.exists():
        return
    try:
        files = json.loads(previous.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        files = []
    for name in files:
        target = Path(folder) / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    previous.unlink(missing_ok=True)
