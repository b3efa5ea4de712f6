"""bigWig tracks: per-base reading with an explicit missing-data policy, 128 bp binning, writing.

Reading goes through pyBigWig. A track is bound to the genome's chromosome names once (through the
alias table), so callers always speak the FASTA's names. Positions the file has no data for --
outside its intervals, past a chromosome end, or on a chromosome it lacks -- read as ``missing``
(0 for conservation; pass ``float('nan')`` to see the gaps). NaN values stored in the file are
missing data too. What changes values is said once per file: NaN in the file, chromosome lengths
that differ from the genome's, values outside a track's ``value_range`` (clipped).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError
from epiformer_cli.io.files import discard, publish, temporary_name
from epiformer_cli.io.chroms import ChromosomeMap, match_chromosomes

log = logging.getLogger(__name__)

BIN_STATS = ("mean", "sum")
#: bases per exact summary when looking for NaN: bounds that read's memory (~12 bytes a base)
_NAN_CHECK_BP = 1 << 20

#: the first 4 bytes of a bigWig (its magic number, written in either byte order)
_MAGIC = (bytes.fromhex("26fc8f88"), bytes.fromhex("888ffc26"))
#: what libBigWig prints with fprintf(stderr): "[bwHdrRead] There was an error while reading in the header!"
_LIBBIGWIG_LINE = re.compile(rb"^\[\w+\] ")
_FD2 = threading.Lock()
if hasattr(os, "register_at_fork"):  # a fork never copies stderr while it points at a capture file
    os.register_at_fork(before=_FD2.acquire, after_in_parent=_FD2.release, after_in_child=_FD2.release)


@contextmanager
def _libbigwig_messages_to_debug() -> Iterator[None]:
    """Run a pyBigWig call with file descriptor 2 pointed at a temporary file.

    libBigWig prints its errors to the C stderr ("[bwHdrRead] There was an error while reading in
    the header!", "[pyBwOpen] bw is NULL!") where we raise one clear error instead: its lines go to
    the debug log. The redirection is process-wide, so anything another thread writes meanwhile is
    passed on to the real stderr when it is put back (a lock keeps two redirections from nesting).
    Used around opening a file only: reads are too frequent to redirect.
    """
    with _FD2:
        try:
            capture = tempfile.TemporaryFile()
        except OSError:  # no writable temp folder: run it unchanged
            yield
            return
        with capture:
            try:
                if sys.stderr is not None:
                    sys.stderr.flush()  # Python's buffered text goes out before the switch
                saved = os.dup(2)
            except (OSError, ValueError):  # no stderr to protect
                yield
                return
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                others = []
                for line in capture.read().splitlines(keepends=True):
                    if _LIBBIGWIG_LINE.match(line):
                        log.debug("libBigWig: %s", line.decode(errors="replace").strip())
                    else:
                        others.append(line)
                if others:
                    os.write(2, b"".join(others))


class BigWig:
    """A bigWig file opened for reading (lazily re-opened in each worker process).

    Args:
        path: the bigWig file.
        label: what the file is, for messages ("conservation bigWig", "target 'neuron'").
        value_range: ``(low, high)``: values outside are clipped into it, with one warning (e.g.
            ``(0, 1)`` for conservation, which the training store clips the same way).
    """

    def __init__(self, path: str | os.PathLike, label: str = "bigWig",
                 value_range: Optional[Tuple[float, float]] = None):
        self.path = Path(path)
        self.label = label
        self.value_range = value_range
        self._warned_range = False
        if not self.path.exists():
            raise InputFileError(f"{self.path}: {label} not found: check the path")
        if not os.access(self.path, os.R_OK) or self.path.is_dir():
            raise InputFileError(f"{self.path}: {label} is not a readable file: check its permissions")
        self._handle = None
        self._pid: Optional[int] = None
        handle = self._open()
        #: chromosome name -> length, as the file's header has them (the file's own names).
        self.chrom_sizes: Dict[str, int] = dict(handle.chroms())
        self._chrom_map: Optional[ChromosomeMap] = None

    def _open(self):
        if self._handle is None or self._pid != os.getpid():
            import pyBigWig

            try:
                with _libbigwig_messages_to_debug():
                    handle = pyBigWig.open(str(self.path))
            except (RuntimeError, OSError):
                handle = None
            if handle is None or not handle.isBigWig():
                with open(self.path, "rb") as file:
                    damaged = file.read(4) in _MAGIC
                if damaged:
                    raise InputFileError(
                        f"{self.path}: {self.label} is damaged or truncated (its header or index cannot be "
                        "read): copy or download it again, or re-make it"
                    )
                raise InputFileError(
                    f"{self.path}: {self.label} is not a bigWig file: convert bedGraph with "
                    "bedGraphToBigWig, or check the path"
                )
            self._handle, self._pid = handle, os.getpid()
        return self._handle

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_pid"] = None
        return state

    def bind(self, genome_chroms: Sequence[str], genome_label: str = "the FASTA",
             genome_sizes: Optional[Mapping[str, int]] = None) -> ChromosomeMap:
        """Match this file's chromosome names to the genome's (``chr1`` vs ``1`` etc.).

        Raises ChromosomeMismatchError when no chromosome matches. After binding, ``values`` takes
        the genome's names. Returns the map (e.g. to list chromosomes this track lacks). Warns once
        when matched chromosomes have other lengths than ``genome_sizes`` (another assembly: data
        past the genome's end is never read, a shorter chromosome reads as missing past its end)
        and when the file holds NaN values (read as missing).
        """
        self._chrom_map = match_chromosomes(
            genome_chroms, list(self.chrom_sizes), genome_label, f"{self.path} ({self.label})"
        )
        pairs = self._chrom_map.as_dict()
        if genome_sizes is not None:
            differ = [f"{name} is {self.chrom_sizes[mine]:,} bp here but {genome_sizes[name]:,} bp in {genome_label}"
                      for name, mine in pairs.items()
                      if name in genome_sizes and self.chrom_sizes[mine] != genome_sizes[name]]
            if differ:
                more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
                log.warning("%s (%s): %s%s: check that both files are for the same genome assembly",
                            self.path, self.label, "; ".join(differ[:3]), more)
        nan_chrom = self._first_chrom_with_nan(list(pairs.values()))
        if nan_chrom is not None:
            log.warning("%s (%s) holds NaN values (e.g. on %s): they are read as missing data, like positions "
                        "without data", self.path, self.label, nan_chrom)
        return self._chrom_map

    def _first_chrom_with_nan(self, names: List[str]) -> Optional[str]:
        """A chromosome whose data holds NaN, or None. NaN makes a mean NaN (None in pyBigWig): the
        zoom-level summary of a chromosome says so cheaply; only a file without zoom levels, or a
        chromosome whose summary is None, is read, in pieces: a whole-chromosome exact summary
        holds every interval of the chromosome in memory (12 bytes a base in a per-base track)."""
        handle = self._open()
        zoomed = _zoom_levels(self.path) > 0
        for name in names:
            try:
                if zoomed and handle.stats(name, type="mean")[0] is not None:
                    continue
                if self._holds_nan(handle, name):
                    return name
            except RuntimeError:  # unreadable summaries: values() reports a damaged file
                return None
        return None

    def _holds_nan(self, handle, name: str) -> bool:
        """Whether chromosome ``name`` (this file's name) holds NaN, read ``_NAN_CHECK_BP`` at a time."""
        size = self.chrom_sizes[name]
        for lo in range(0, size, _NAN_CHECK_BP):
            hi = min(size, lo + _NAN_CHECK_BP)
            if handle.stats(name, lo, hi, type="mean", exact=True)[0] is None and \
                    (handle.stats(name, lo, hi, type="coverage", exact=True)[0] or 0) > 0:
                return True
        return False

    def file_chrom(self, chrom: str) -> Optional[str]:
        """This file's name for (genome) chromosome ``chrom``, or None if it has no such chromosome."""
        if self._chrom_map is not None:
            return self._chrom_map.get(chrom)
        return chrom if chrom in self.chrom_sizes else None

    def values(self, chrom: str, start: int, end: int, missing: float = 0.0) -> np.ndarray:
        """Per-base values of ``chrom:[start, end)`` (0-based, half-open), float32, shape (end - start,).

        Positions without data read as ``missing``; the interval may run past either chromosome end.
        """
        out = np.full(end - start, missing, dtype=np.float32)
        name = self.file_chrom(chrom)
        if name is None:
            return out
        lo, hi = max(start, 0), min(end, self.chrom_sizes[name])
        if hi <= lo:
            return out
        try:
            vals = self._open().values(name, lo, hi, numpy=True)
        except RuntimeError as exc:
            raise InputFileError(f"{self.path}: cannot read {name}:{lo}-{hi} ({exc}): the file may be truncated") from exc
        vals = np.asarray(vals, dtype=np.float32)
        if not math.isnan(missing):
            vals = np.where(np.isnan(vals), np.float32(missing), vals)
        if self.value_range is not None:
            low, high = self.value_range
            outside = (vals < low) | (vals > high)
            if outside.any():
                if not self._warned_range:
                    self._warned_range = True
                    first = int(np.argmax(outside))
                    log.warning("%s (%s): values outside [%g, %g] (e.g. %g at %s:%d); they are clipped to [%g, %g]",
                                self.path, self.label, low, high, vals[first], name, lo + first, low, high)
                vals = np.clip(vals, low, high)
        out[lo - start : hi - start] = vals
        return out

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __enter__(self) -> "BigWig":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _zoom_levels(path: Path) -> int:
    """The number of zoom levels in a bigWig's header (read directly: pyBigWig's ``header()``
    crashes on a file whose summary is NaN)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    order = "little" if head[:4] == b"\x26\xfc\x8f\x88" else "big"
    return int.from_bytes(head[6:8], order)


def bin_values(values: np.ndarray, bin_size: int = 128, stat: str = "mean") -> np.ndarray:
    """Aggregate per-base values (..., length) into bins (..., length // bin_size).

    ``length`` must be a multiple of ``bin_size``. ``mean`` averages the bases of a bin; ``sum``
    adds them (e.g. read counts). NaN propagates: replace missing values before binning.
    """
    if stat not in BIN_STATS:
        raise ValueError(f"bin statistic must be one of {BIN_STATS}, not {stat!r}")
    length = values.shape[-1]
    if length % bin_size:
        raise ValueError(f"length {length} is not a multiple of the bin size {bin_size}")
    shaped = values.reshape(*values.shape[:-1], length // bin_size, bin_size)
    # float64 accumulation: a sum of 128 float32 values loses digits otherwise.
    reduced = shaped.sum(axis=-1, dtype=np.float64)
    if stat == "mean":
        reduced /= bin_size
    return reduced.astype(np.float32)


class BigWigWriter:
    """Write one bigWig atomically: entries go to a temporary file renamed into place on close.

    Args:
        path: the final file.
        chrom_sizes: chromosome -> length, in the order entries will be added (the FASTA's order).

    Entries must come in header chromosome order with rising positions (a bigWig requirement).
    NaN values are never written: their positions are left without data.
    """

    def __init__(self, path: str | os.PathLike, chrom_sizes: Mapping[str, int]):
        import pyBigWig

        self.path = Path(path)
        self._tmp = temporary_name(self.path)
        self._order = {name: i for i, name in enumerate(chrom_sizes)}
        self._last = (-1, 0)
        self._handle = pyBigWig.open(str(self._tmp), "w")
        self._handle.addHeader([(name, int(size)) for name, size in chrom_sizes.items()], maxZooms=10)
        self._closed = False

    def add_bins(self, chrom: str, start: int, values: np.ndarray, span: int, chrom_size: Optional[int] = None) -> None:
        """Add fixed-span bins ``[start + i*span, start + (i+1)*span)`` with ``values[i]``.

        The last bin is clipped to ``chrom_size`` when given (a chromosome rarely ends on a bin
        edge). NaN values are skipped, splitting the run.
        """
        values = np.asarray(values, dtype=np.float64)
        rank = self._order[chrom]
        if (rank, start) < self._last:
            raise ValueError(f"bigWig entries out of order at {chrom}:{start}")
        finite = np.isfinite(values)
        if not finite.any():
            return
        starts = start + np.arange(len(values), dtype=np.int64) * span
        ends = starts + span
        if chrom_size is not None:
            ends = np.minimum(ends, chrom_size)
        keep = finite & (ends > starts)
        self._handle.addEntries(
            [chrom] * int(keep.sum()), starts[keep].tolist(), ends=ends[keep].tolist(), values=values[keep].tolist()
        )
        self._last = (rank, int(ends[keep][-1]))

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._closed:
            return
        self._handle.close()
        self._closed = True
        publish(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file (on error or interruption)."""
        if not self._closed:
            self._handle.close()
            self._closed = True
        discard(self._tmp)

    def __enter__(self) -> "BigWigWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
