"""Names that become TSV columns and parts of file names (tracks, cell types): the one check they
pass where they enter epiformer, and the one way a name becomes part of a file name, so that the
check and the files can never disagree."""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional

from epiformer_cli.errors import UsageError

#: Bytes (UTF-8) a name may take: longer ones make file names (``<stem>.<name>.bw``) that file
#: systems refuse (255 bytes).
MAX_LENGTH = 200

#: What :func:`file_part` keeps: letters and digits of any script, '_', '.', '+' and '-'.
_UNSAFE = re.compile(r"[^\w.+-]")

_SHOWN = 60  # characters of a name quoted in a message


def file_part(name: str) -> str:
    """The part of a file name that stands for ``name`` (``contrib.<part>.bw``, ``pred.<part>.bw``):
    every character other than a letter or digit (of any script), '_', '.', '+' or '-' becomes '_'
    (``a;b`` -> ``a_b``, ``ATAC/rep 1`` -> ``ATAC_rep_1``, ``CD4+`` stays)."""
    return _UNSAFE.sub("_", name)


def _shown(name: str) -> str:
    """``name`` quoted on one line: control characters escaped as repr escapes them ('a\\tb')."""
    text = repr(name[:_SHOWN])
    return text + " (cut)" if len(name) > _SHOWN else text


def _flaw(name: str, what: str) -> Optional[str]:
    """What makes ``name`` unusable as a column or a file-name part, and the rule it breaks; or None."""
    if not name:
        return f"is empty: give every {what} a name"
    printable = f"{what} names must be printable, without tabs or newlines"
    for char, said in (("\t", "a tab"), ("\n", "a newline"), ("\r", "a carriage return")):
        if char in name:
            return f"contains {said}: {printable}"
    # not printable: other control characters (\x0b, \x1b), format characters (zero-width space),
    # line separators (\u2028, where splitlines() breaks), non-UTF-8 bytes (read as surrogates)
    odd = next((c for c in name if not c.isprintable() and c != " "), None)
    if odd is not None and 0xDC80 <= ord(odd) <= 0xDCFF:
        return f"holds the byte {bytes([ord(odd) - 0xDC00])!r}, which is not UTF-8: {what} names must be UTF-8 text"
    if odd is not None:
        return f"contains the unprintable character {ascii(odd)}: {printable}"
    if "," in name:  # --tracks takes names separated by commas: such a track could not be chosen
        return f"contains a comma: {what} names are chosen with comma-separated lists (--tracks a,b): rename it"
    if name != name.strip():
        return "starts or ends with a space: remove it"
    size = len(name.encode("utf-8"))
    if size > MAX_LENGTH:
        return f"takes {size} bytes as UTF-8: {what} names must take at most {MAX_LENGTH}"
    return None


def check_name(name: str, where: str, what: str = "track", error: type = UsageError, fix: str = "") -> str:
    """Refuse one name that breaks TSV columns or file names; returns it.

    Raises:
        error: ``name`` is empty, holds a tab, newline, carriage return or other unprintable
            character (a non-UTF-8 byte among them), starts or ends with a space, or takes more
            than :data:`MAX_LENGTH` bytes: one line naming ``where``, the name (escaped), the rule and ``fix``.
    """
    if not isinstance(name, str):
        raise error(f"{where}: {what} name {name!r} is not text{fix}")
    flaw = _flaw(name, what)
    if flaw is not None:
        raise error(f"{where}: {what} name {_shown(name)} {flaw}{fix}")
    return name


def check_names(names: Iterable[str], where: str, what: str = "track", error: type = UsageError,
                fix: str = "") -> List[str]:
    """Refuse names that break TSV columns or file names; returns them as a list.

    Each name passes :func:`check_name`; then no two may be equal, or give the same
    :func:`file_part` (``a;b`` and ``a_b`` would write one file over the other), or parts that
    differ only in case (one file on macOS and Windows).

    Args:
        where: the source, first in the message (``--tracks``, ``targets.tsv``, ``model file m.pt``).
        what: what a name names (``track``, ``cell type``).
        error: the exception raised (:class:`UsageError`, or the caller's kind, such as
            ``InputFileError`` for a file).
        fix: appended to the message (``": re-import it with --tracks"``).

    Raises:
        error: the first offending name, in one line.
    """
    names = list(names)
    exact = set()
    parts: Dict[str, str] = {}
    for name in names:
        check_name(name, where, what, error, fix)
        if name in exact:
            raise error(f"{where}: {what} name {_shown(name)} appears twice: {what} names must be "
                        f"unique{fix}")
        exact.add(name)
        other = parts.setdefault(file_part(name).casefold(), name)
        if other != name:
            how = ("differ only in case, which file systems on macOS and Windows ignore"
                   if file_part(other) != file_part(name) else
                   f"both become {_shown(file_part(name))} in file names (characters other than letters, "
                   "digits, '_', '.', '+' and '-' become '_')")
            raise error(f"{where}: {what} names {_shown(other)} and {_shown(name)} {how}: rename one{fix}")
    return names
