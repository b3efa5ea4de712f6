"""BED intervals (0-based, half-open, as the format itself is): read, validate, merge, query.

Only the first three columns are used. ``track``/``browser`` lines and ``#`` comments are skipped.
Plain, bgzipped or plain-gzip files (told apart by their bytes, not their name) are read once from
the start, with LF or CRLF line endings and with or without a final newline.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from epiformer_cli.errors import ChromosomeMismatchError, InputFileError
from epiformer_cli.io.chroms import resolve_name
from epiformer_cli.io.files import check_input_file
from epiformer_cli.io.hts import text_lines

log = logging.getLogger(__name__)

Interval = Tuple[str, int, int]


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_browser_line(line: str) -> bool:
    """A UCSC ``track ...`` or ``browser ...`` line (the word alone, so a contig named ``track_1``
    is still data)."""
    word = line.split(None, 1)[0] if line.strip() else ""
    return word in ("track", "browser")


def _not_utf8(fields: List[str], columns: int) -> Optional[Tuple[int, bytes]]:
    """The first of the first ``columns`` fields holding a byte that is not UTF-8 (read as a
    surrogate by :func:`~epiformer_cli.io.hts.text_lines`): its 1-based column and that byte."""
    for column, field in enumerate(fields[:columns], 1):
        for char in field:
            if 0xDC80 <= ord(char) <= 0xDCFF:
                return column, bytes([ord(char) - 0xDC00])
    return None


def bed_lines(path: str | os.PathLike, what: str = "BED file", columns: int = 4) -> Iterator[Tuple[int, List[str]]]:
    """The data lines of a BED (plain, bgzip or gzip; LF or CRLF) as ``(line number, fields)``:
    ``track``/``browser`` lines, ``#`` comments, blank lines and a column header without ``#``
    (one warning) are skipped; fields 2 and 3 are checked to be integers, and the first
    ``columns`` fields (those the caller reads: chrom, start, end, name) to be UTF-8 text, so a
    bad byte stops the command at its line, before any work (one-line error naming the line).
    """
    path = check_input_file(path, what)
    first = True
    for lineno, line in text_lines(path, what):
        if not line.strip() or line.startswith("#") or _is_browser_line(line):
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            fields = line.split()
        if len(fields) < 3 or not _is_int(fields[1]) or not _is_int(fields[2]):
            if first and len(fields) >= 3 and not _is_int(fields[1]) and not _is_int(fields[2]):
                # a column header without '#' (e.g. "chrom start end" from a data frame)
                log.warning("%s:%d: %r taken for a column header and skipped", path, lineno, line.strip()[:60])
                first = False
                continue
            raise InputFileError(
                f"{path}:{lineno}: not a BED line (need tab-separated chrom, start, end): {line.strip()[:60]!r}"
            )
        first = False
        bad = _not_utf8(fields, columns)
        if bad is not None:
            raw = line.encode("utf-8", "surrogateescape").strip()[:60]
            raise InputFileError(
                f"{path}:{lineno}: column {bad[0]} holds the byte {bad[1]!r}, which is not UTF-8 ({raw!r}): "
                "save the BED as UTF-8 text (e.g. iconv -f latin1 -t utf-8)"
            )
        yield lineno, fields


def read_bed(path: str | os.PathLike, chrom_sizes: Optional[Mapping[str, int]] = None,
             unknown: str = "error") -> List[Interval]:
    """Read a BED (plain, bgzip or gzip) into ``(chrom, start, end)`` tuples, 0-based half-open.

    Args:
        chrom_sizes: when given, chromosome names are resolved to these (``1`` -> ``chr1``) and
            intervals are checked against the sizes (an end past the chromosome is clipped).
        unknown: what to do with a chromosome ``chrom_sizes`` lacks: ``error``, or ``skip`` (said
            once in a warning; a BED with no chromosome in common is still an error).
    """
    path = check_input_file(path, "BED file")
    intervals: List[Interval] = []
    names = list(chrom_sizes) if chrom_sizes is not None else None
    resolved: Dict[str, Optional[str]] = {}
    skipped: Dict[str, int] = {}
    for lineno, fields in bed_lines(path, columns=3):  # the name column is not read: any bytes will do
        chrom, start, end = fields[0], int(fields[1]), int(fields[2])
        if start < 0 or end < start:
            raise InputFileError(f"{path}:{lineno}: invalid interval {chrom}:{start}-{end} (need 0 <= start <= end)")
        if names is not None:
            if chrom not in resolved:
                resolved[chrom] = resolve_name(chrom, names)
            target = resolved[chrom]
            if target is None:
                if unknown == "skip":
                    skipped[chrom] = skipped.get(chrom, 0) + 1
                    continue
                raise InputFileError(
                    f"{path}:{lineno}: chromosome {chrom!r} is not in the genome "
                    f"(which has {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                )
            chrom = target
            end = min(end, chrom_sizes[chrom])
            start = min(start, end)
        intervals.append((chrom, start, end))
    if skipped:
        other = list(skipped)
        shown = f"{', '.join(other[:5])}{', ...' if len(other) > 5 else ''}"
        if not intervals:
            raise ChromosomeMismatchError(
                f"{path}: no chromosome in common with the genome: the BED has {shown}, the genome "
                f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}: is the BED for another assembly?"
            )
        log.warning("%s: %d line(s) on chromosome(s) the genome lacks (%s) skipped", path,
                    sum(skipped.values()), shown)
    return intervals


class IntervalIndex:
    """Fast overlap queries against a fixed set of intervals (e.g. a blacklist), per chromosome."""

    def __init__(self, intervals: Iterable[Interval]):
        by_chrom: Dict[str, List[Tuple[int, int]]] = {}
        for chrom, start, end in intervals:
            by_chrom.setdefault(chrom, []).append((start, end))
        self._starts: Dict[str, np.ndarray] = {}
        self._ends: Dict[str, np.ndarray] = {}
        for chrom, items in by_chrom.items():
            merged = merge_intervals(sorted(items))
            self._starts[chrom] = np.array([s for s, _ in merged], dtype=np.int64)
            self._ends[chrom] = np.array([e for _, e in merged], dtype=np.int64)

    def overlaps(self, chrom: str, start: int, end: int) -> bool:
        """Whether ``[start, end)`` shares at least one base with any interval."""
        starts = self._starts.get(chrom)
        if starts is None:
            return False
        # merged intervals are disjoint and sorted: only the last one starting before `end` can overlap
        i = int(np.searchsorted(starts, end, side="left"))
        return i > 0 and bool(self._ends[chrom][i - 1] > start)

    def overlaps_many(self, chrom: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`overlaps` for arrays of intervals on one chromosome."""
        s = self._starts.get(chrom)
        if s is None:
            return np.zeros(len(starts), dtype=bool)
        i = np.searchsorted(s, ends, side="left")
        prev_end = np.where(i > 0, self._ends[chrom][np.maximum(i - 1, 0)], -1)
        return (i > 0) & (prev_end > starts)


def merge_intervals(items: List[Tuple[int, int]], gap: int = 0) -> List[Tuple[int, int]]:
    """Merge sorted ``(start, end)`` pairs that overlap or lie within ``gap`` bp of each other."""
    merged: List[Tuple[int, int]] = []
    for start, end in items:
        if merged and start <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
