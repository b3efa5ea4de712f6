"""bigWig tracks: per-base reading with an explicit missing-data policy, 128 bp binning, writing.

Reading goes through pyBigWig. A track is bound to the genome's chromosome names once (through the
alias table), so callers always speak the FASTA's names. Positions the file has no data for --
outside its intervals, past a chromosome end, or on a chromosome it lacks -- read as ``missing``
(0 for conservation; pass ``float('nan')`` to see the gaps). NaN values stored in the file are
missing data too. What changes values is said once per file: NaN in the file, chromosome lengths
that differ from the genome's, values outside a track's ``value_range`` (clipped).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError
from epiformer_cli.io import faults
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
def _captured(fds: Tuple[int, ...]) -> Iterator[List[bytes]]:
    """File descriptors ``fds`` (1, 2) pointed at a temporary file for the block; yields a list that
    holds what was written to them (one bytes item) once the block ends. The redirection is
    process-wide, so a lock keeps two from nesting; without a temporary folder, or with a descriptor
    closed, nothing is captured and the block runs unchanged."""
    said: List[bytes] = []
    with _FD2:
        try:
            capture = tempfile.TemporaryFile()
        except OSError:  # no writable temp folder
            yield said
            return
        with capture:
            try:
                for stream in (sys.stdout, sys.stderr):
                    if stream is not None:
                        stream.flush()  # Python's buffered text goes out before the switch
                saved = [os.dup(fd) for fd in fds]
            except (OSError, ValueError):  # no descriptor to protect
                yield said
                return
            for fd in fds:
                os.dup2(capture.fileno(), fd)
            try:
                yield said
            finally:
                for fd, copy in zip(fds, saved):
                    os.dup2(copy, fd)
                    os.close(copy)
                capture.seek(0)
                said.append(capture.read())


@contextmanager
def _libbigwig_messages_to_debug() -> Iterator[None]:
    """Run a pyBigWig call with file descriptor 2 captured (:func:`_captured`).

    libBigWig prints its errors to the C stderr ("[bwHdrRead] There was an error while reading in
    the header!", "[pyBwOpen] bw is NULL!") where we raise one clear error instead: its lines go to
    the debug log, and anything else (another thread's words) to the real stderr once it is back.
    Used around opening a file only: reads are too frequent to redirect.
    """
    said: List[bytes] = []
    try:
        with _captured((2,)) as said:
            yield
    finally:
        others = []
        for line in b"".join(said).splitlines(keepends=True):
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
        if vals.shape != (hi - lo,):  # pyBigWig gives an empty array for a file holding no data at all
            return out
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


#: what libBigWig's writer does (libBigWig/bwWrite.c, as in pyBigWig 0.3.x): the size bound below
#: follows its layout, and ``tests/test_bigwig_faults.py`` checks it against real files.
_ZOOM_LEVELS = 10  #: the writer's maxZooms: zoom headers reserved, levels at most
_HEADER_BYTES = 64 + 24 * _ZOOM_LEVELS + 40 + 8 + 4  #: header, zoom headers, summary, block count, end magic
_BLOCK_ENTRIES = 2726  #: fewest entries in a data block flushed because it is full (32 KB buffer, 12 bytes an entry)
_ZOOM_RECORDS = 1023  #: zoom records in a zoom block (32 KB buffer, 32 bytes a record)
_INDEX_FANOUT = 64  #: children per R-tree node
_BUFFER_ENTRIES = (32768 - 24) // 12  #: most entries libBigWig holds before writing a block


def _deflated(raw: int, blocks: int) -> int:
    """zlib's ``compressBound`` summed over ``blocks`` blocks of ``raw`` bytes in all: the most
    ``compress()`` writes, even for incompressible data."""
    return raw + (raw >> 12) + (raw >> 14) + (raw >> 25) + 13 * blocks


def _index_bytes(blocks: int) -> int:
    """An R-tree index over ``blocks`` blocks: a 48-byte header, leaves of 64 entries (4 + 32 bytes
    each), and at most ``2 * leaves`` inner nodes (4 + 24 bytes a child)."""
    if blocks == 0:
        return 0
    leaves = -(-blocks // _INDEX_FANOUT)
    return 48 + 32 * blocks + 4 * leaves + (80 * leaves if leaves > 1 else 0)


def _chrom_tree_bytes(n_chroms: int, name_bytes: int) -> int:
    """The chromosome B+ tree: leaves of up to 32,767 keys, each padded to full size."""
    per = max(1, min(n_chroms, 0x7FFF))
    blocks = -(-max(n_chroms, 1) // per)
    node = 4 + per * (name_bytes + 8)
    return 32 + (node if blocks > 1 else 0) + blocks * node


def _data_blocks(n_entries: int, runs: int, n_chroms: int) -> int:
    """Data blocks for ``n_entries`` entries: a block ends when full or at a chromosome change."""
    return n_entries // _BLOCK_ENTRIES + min(n_chroms, runs) + 1


def _zoom_bytes(n_entries: int, n_chroms: int, runs: int, covered_bp: Optional[int], genome_bp: Optional[int]) -> int:
    """The most bytes of the zoom levels (see :func:`bigwig_size_bound`)."""
    if n_entries == 0:
        return 0
    first = 16 * (covered_bp // n_entries) if covered_bp is not None else None
    size = 0
    for level in range(_ZOOM_LEVELS):
        if first is None:
            records = runs + n_entries // (8 << (2 * level))
        else:
            zoom = first << (2 * level)
            if level and (zoom > 0xFFFFFFFF or (genome_bp is not None and zoom > genome_bp)):
                break  # libBigWig stops at the longest chromosome and at 32 bits
            records = runs + covered_bp // zoom
            if genome_bp is not None:
                records = min(records, genome_bp // zoom + n_chroms)
        records = -(-records * _ZOOM_RECORDS // (_ZOOM_RECORDS - 1))
        blocks = -(-records // _ZOOM_RECORDS)
        size += 4 + _deflated(32 * records, blocks) + _index_bytes(blocks)
    return size


def bigwig_size_bound(n_entries: int, n_chroms: int, *, runs: Optional[int] = None,
                      covered_bp: Optional[int] = None, genome_bp: Optional[int] = None,
                      name_bytes: int = 255) -> int:
    """The most bytes libBigWig can write for a bigWig of ``n_entries`` bedGraph entries (what
    :class:`BigWigWriter` writes), whatever their values, with 10 zoom levels.

    Args:
        n_entries: entries (intervals with a value).
        n_chroms: chromosomes in the header.
        runs: stretches of entries that touch (each starts where the previous ended, on one
            chromosome); default ``n_entries`` (none touch).
        covered_bp: bases the entries cover; with it the zoom levels' sizes are known.
        genome_bp: sum of the chromosome lengths; with ``covered_bp`` it bounds coarse zoom levels.
        name_bytes: the longest chromosome name, in bytes (255 when unknown).

    The file is: a fixed header; the chromosome tree; data blocks (24 bytes, and 12 an entry), each
    zlib-compressed (at most ``compressBound``: 0.03% + 13 bytes more), a new block when one is full
    (>= 2,726 entries) or the chromosome changes; an R-tree index of 32 bytes a block; then each zoom
    level: records of 32 bytes, ``compressBound``-ed in blocks of 1,023, with its own index.
    A zoom level of ``z`` bases holds one record per window of ``z`` bases that starts at an entry,
    windows never overlapping: at most ``runs + covered_bp // z`` records, and at most
    ``genome_bp // z + n_chroms``; libBigWig's first level is ``16 * floor(mean entry width)``
    (or the longest chromosome, when shorter: then it is the only level and holds <= ``runs``
    records), so ``covered_bp // z <= n_entries // 8``; plus a record per zoom block where libBigWig
    starts a new block in mid-window. Assumes a mean entry width under 2**28 bp (wider overflows
    libBigWig's zoom arithmetic).

    For touching 128 bp entries that is about 14.7 bytes an entry (12 of data, 2.7 of zoom levels);
    real files are 8.3 bytes an entry for incompressible values, 2.5 for constant ones. Without
    ``runs`` and ``covered_bp``, sparse entries are assumed: about 340 bytes an entry.
    """
    n = int(n_entries)
    runs = n if runs is None else int(runs)
    blocks = _data_blocks(n, runs, n_chroms)
    return (_HEADER_BYTES + _chrom_tree_bytes(n_chroms, name_bytes) + _deflated(24 * blocks + 12 * n, blocks)
            + _index_bytes(blocks) + _zoom_bytes(n, n_chroms, runs, covered_bp, genome_bp))


def _memfd() -> Optional[int]:
    """An anonymous in-memory file that libBigWig can open by name, or None (not Linux, no /proc)."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        fd = os.memfd_create("epiformer-bigwig", os.MFD_CLOEXEC)
    except OSError as exc:
        log.debug("no in-memory file (%s): the bigWig is written on disk directly", exc)
        return None
    if not os.path.exists(f"/proc/self/fd/{fd}"):
        os.close(fd)
        return None
    return fd


def _copy_fd(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes of ``src`` (from its start) to ``dst``; returns the bytes copied."""
    done = 0
    try:
        while done < size:
            sent = os.sendfile(dst, src, done, min(size - done, 1 << 30))
            if sent == 0:
                break
            done += sent
    except OSError as exc:
        if done or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        while done < size:  # no sendfile between these two files: plain reads and writes
            block = os.pread(src, min(size - done, 1 << 22), done)
            if not block:
                break
            view = memoryview(block)
            while view:
                written = os.write(dst, view)
                view = view[written:]
            done += len(block)
    return done


class BigWigWriter:
    """Write one bigWig atomically: it appears under its name complete, or not at all.

    Args:
        path: the final file.
        chrom_sizes: chromosome -> length, in the order entries will be added (the FASTA's order).

    Entries must come in header chromosome order with rising positions (a bigWig requirement).
    NaN values are never written: their positions are left without data.

    libBigWig ignores failed writes (it then loops forever or corrupts its heap), so it is never
    let meet one. On Linux it writes into an anonymous in-memory file, which a full disk or a quota
    cannot reach; the file-size limit (``ulimit -f``) can, so before each batch of entries and
    before finishing, an upper bound of the finished file (:func:`bigwig_size_bound`, from the
    entries so far) is checked against it, and the write is refused with one clear error instead.
    Finishing thus always fits, even when an error stops the writer midway (:meth:`abort` still
    lets libBigWig finish, in memory, to free it). :meth:`close` then copies the file beside
    ``path`` with plain writes, whose errors are reported (a full disk, a quota), checks the copy
    reads back as a bigWig, and renames it into place. The file is held in memory until then (about
    8 bytes a 128 bp bin: ~200 MB for hg38): open few at once (see ``jobs/export.py``).

    Without in-memory files (macOS), libBigWig writes the temporary file beside ``path`` directly,
    and the same bound is also checked against the folder's free space: best effort, since other
    writers may fill the disk meanwhile, and quotas that ``statvfs`` does not report are not seen.
    """

    def __init__(self, path: str | os.PathLike, chrom_sizes: Mapping[str, int],
                 batch: Optional["BigWigBatch"] = None):
        import pyBigWig

        self.path = Path(path)
        self._batch = batch
        self._tmp = temporary_name(self.path)
        self._order = {name: i for i, name in enumerate(chrom_sizes)}
        self._sizes = {name: int(size) for name, size in chrom_sizes.items()}
        self._genome_bp = sum(self._sizes.values())
        self._name_bytes = max((len(name.encode()) for name in self._sizes), default=0)
        self._last = (-1, 0)
        self._n = self._runs = self._covered = 0  # entries, touching stretches and bases so far
        self._handle = None
        self._closed = False
        self._fd = _memfd()
        try:
            self._check_room(0, 0, 0, 0)
            self._handle = pyBigWig.open(f"/proc/self/fd/{self._fd}" if self._fd is not None else str(self._tmp), "w")
            self._handle.addHeader([(name, size) for name, size in self._sizes.items()], maxZooms=_ZOOM_LEVELS)
        except BaseException:
            self.abort()
            raise

    def _check_room(self, n_new: int, n: int, runs: int, covered: int) -> None:
        """Refuse, before libBigWig is called, adding ``n_new`` entries that bring the file to ``n``
        entries in ``runs`` touching stretches covering ``covered`` bp, when the finished file might
        then not fit: over the file-size limit or, writing on disk, over the folder's free space
        (one clear error).

        The file so far is measured; what libBigWig may still add is bounded: its stdio buffer, the
        entries it holds unwritten (one block at most) and the new ones, the index, the zoom levels
        (see :func:`bigwig_size_bound`).
        """
        n_chroms = len(self._sizes)
        if self._handle is None:  # nothing written yet: the header of an empty file
            written = 0
            more = bigwig_size_bound(0, n_chroms, runs=0, covered_bp=0, name_bytes=self._name_bytes)
        else:
            stat = os.fstat(self._fd) if self._fd is not None else os.stat(self._tmp)
            written = stat.st_size
            pending = _BUFFER_ENTRIES + n_new
            blocks = pending // _BLOCK_ENTRIES + 2  # full ones, one at the chromosome change, the last
            more = (max(stat.st_blksize, 8192) + _deflated(24 * blocks + 12 * pending, blocks)
                    + _index_bytes(_data_blocks(n, runs, n_chroms))
                    + _zoom_bytes(n, n_chroms, runs, covered, self._genome_bp) + 4)
        limit = faults.file_size_limit()
        if limit is not None and written + more > limit:
            raise faults.storage_error(OSError(errno.EFBIG, os.strerror(errno.EFBIG)), self.path)
        if self._fd is None:
            free = faults.free_bytes(self.path.parent if str(self.path.parent) else ".")
            if free is not None and more > free:
                raise faults.storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), self.path)

    def add_bins(self, chrom: str, start: int, values: np.ndarray, span: int, chrom_size: Optional[int] = None) -> None:
        """Add fixed-span bins ``[start + i*span, start + (i+1)*span)`` with ``values[i]``
        (0-based, half-open).

        The last bin is clipped to ``chrom_size`` when given (a chromosome rarely ends on a bin
        edge). NaN values are skipped, splitting the run. Raises StorageError, adding nothing, when
        the file might no longer fit (see the class docstring).
        """
        starts = start + np.arange(len(values), dtype=np.int64) * span
        ends = starts + span
        if chrom_size is not None:
            ends = np.minimum(ends, chrom_size)
        self.add_runs(chrom, starts, ends, values)

    def add_runs(self, chrom: str, starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> None:
        """Add entries ``[starts[i], ends[i])`` with ``values[i]`` (0-based, half-open; rising,
        not overlapping, after every entry added so far). Empty entries and NaN values are
        skipped. Raises StorageError, adding nothing, when the file might no longer fit."""
        values = np.asarray(values, dtype=np.float64)
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        rank = self._order[chrom]
        if len(starts) and (rank, int(starts[0])) < self._last:
            raise ValueError(f"bigWig entries out of order at {chrom}:{int(starts[0])}")
        keep = np.isfinite(values) & (ends > starts)
        if not keep.any():
            return
        starts, ends = starts[keep], ends[keep]
        touching = (rank, int(starts[0])) == self._last
        runs = self._runs + 1 + int(np.count_nonzero(starts[1:] != ends[:-1])) - int(touching)
        n, covered = self._n + len(starts), self._covered + int((ends - starts).sum())
        self._check_room(len(starts), n, runs, covered)
        self._handle.addEntries([chrom] * len(starts), starts.tolist(), ends=ends.tolist(),
                                values=values[keep].tolist())
        self._n, self._runs, self._covered = n, runs, covered
        self._last = (rank, int(ends[-1]))

    def close(self) -> None:
        """Finish the file, check it reads back, and move it into place.

        Raises StorageError (the partial file removed) when it cannot be written.
        """
        if self._closed:
            return
        try:
            self._check_room(0, self._n, self._runs, self._covered)
            handle, self._handle = self._handle, None
            handle.close()
            if self._fd is not None:
                self._copy_out()
            self._verify()
            if self._batch is None:
                publish(self._tmp, self.path)
            else:  # published with the rest of its batch (BigWigBatch)
                self._batch.finished.append((self._tmp, self.path))
        except BaseException as exc:
            self.abort()
            if faults.is_storage_fault(exc):
                raise faults.storage_error(exc, self.path) from None
            raise
        self._closed = True
        self._release()

    def _copy_out(self) -> None:
        """The finished in-memory file -> the temporary file beside ``path``, with checked writes."""
        size = os.fstat(self._fd).st_size
        limit = faults.file_size_limit()
        if limit is not None and size > limit:  # checked first: without SIG_IGN, SIGXFSZ would kill us
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(self._tmp))
        out = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            copied = _copy_fd(self._fd, out, size)
            if copied != size or os.fstat(out).st_size != size:
                raise faults.storage_error(OSError(errno.EIO, f"only {copied:,} of {size:,} bytes were copied"),
                                           self.path)
        finally:
            os.close(out)

    def _verify(self) -> None:
        """Refuse a finished file that does not read back as this bigWig (libBigWig reports its
        own failures only on stderr)."""
        import pyBigWig

        try:
            with _libbigwig_messages_to_debug():
                handle = pyBigWig.open(str(self._tmp))
        except RuntimeError:
            handle = None
        try:
            good = handle is not None and handle.isBigWig() and dict(handle.chroms()) == self._sizes
        finally:
            if handle is not None:
                handle.close()
        if not good:
            raise faults.storage_error(OSError(errno.EIO, "the finished file does not read back as a bigWig"),
                                       self.path)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def abort(self) -> None:
        """Drop the partial file (on error or interruption): nothing is left behind."""
        try:
            if self._handle is not None:
                handle, self._handle = self._handle, None
                handle.close()  # libBigWig cannot drop a file: it finishes it, within the checked bound
        finally:
            self._closed = True
            self._release()
            discard(self._tmp)

    def __enter__(self) -> "BigWigWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class BigWigBatch:
    """Several bigWigs that appear together: each is finished (checked, under its temporary name)
    by its :class:`BigWigWriter`, and all are renamed into place only when the block ends without
    error; on an error or interruption none appears and every finished one is removed.

    Writers are opened with :meth:`writer`, a few at a time if memory asks for it (see
    :func:`track_groups`): a set of tracks written in groups still appears as one.
    """

    def __init__(self) -> None:
        self.finished: List[Tuple[Path, Path]] = []  # (temporary file, final name)

    def writer(self, path: str | os.PathLike, chrom_sizes: Mapping[str, int]) -> BigWigWriter:
        return BigWigWriter(path, chrom_sizes, batch=self)

    def __enter__(self) -> "BigWigBatch":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            try:
                for tmp, path in self.finished:
                    publish(tmp, path)
                return
            except BaseException:
                self._discard()
                raise
        self._discard()

    def _discard(self) -> None:
        for tmp, _ in self.finished:
            discard(tmp)
        self.finished = []


_OS_ERROR = re.compile(rb"\(os error (\d+)\)")


def write_bigwig_runs(path: str | os.PathLike, chrom_sizes: Mapping[str, int],
                      runs: Iterable[Tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                      batch: Optional["BigWigBatch"] = None) -> None:
    """Write one bigWig of variable-width entries, atomically, with pybigtools (bigtools, in Rust).

    Args:
        path: the final file.
        chrom_sizes: chromosome -> length, in the order of ``runs``.
        runs: per chromosome, in the order of ``chrom_sizes`` (some may be left out),
            ``(chrom, starts, ends, values)``: entries ``[starts[i], ends[i])`` (0-based, half-open,
            rising, not overlapping) with ``values[i]``; NaN values and empty entries are skipped.
            Consumed lazily (one chromosome in memory). A chromosome without any entry holds one
            0 on its first base (pybigtools would leave it out of the header).
        batch: publish with a :class:`BigWigBatch` instead of at once.

    For base-resolution tracks of tens of millions of entries (``pseudobulk``) this is about three
    times faster than libBigWig (:class:`BigWigWriter`), which spends most of its time building the
    zoom levels (benchmarks/README.md). pybigtools reports its own failures (a full disk, an error
    raised while it iterates) on stdout and then returns as if it had finished, so: its output is
    captured and anything it says is a failure; ``runs`` must have run to its end (an exception in
    it, such as Ctrl-C, is raised again); the file must read back as this bigWig. Only then is it
    renamed into place; otherwise it is removed, and a storage fault is one line (StorageError).
    """
    import shutil

    import pybigtools

    path = Path(path)
    sizes = {name: int(size) for name, size in chrom_sizes.items()}
    tmp = temporary_name(path)
    # pybigtools chooses the format by the file name's extension, which a temporary name lacks
    link_dir = Path(tempfile.mkdtemp(prefix="epiformer-bigwig-"))
    link = link_dir / "out.bw"
    state: Dict[str, object] = {"finished": False, "error": None}

    def entries():
        # pybigtools leaves a chromosome without entries out of the file's header, where readers
        # (and prepare) expect every chromosome of the FASTA: such a one gets a 0 on its first base,
        # which reads as its missing bases do (0)
        given = iter(runs)
        pending = next(given, None)
        try:
            for chrom in sizes:
                written = 0
                while pending is not None and pending[0] == chrom:
                    _, starts, ends, values = pending
                    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
                    values = np.asarray(values, np.float64)
                    keep = np.isfinite(values) & (ends > starts)
                    written += int(keep.sum())
                    yield from zip([chrom] * int(keep.sum()), starts[keep].tolist(), ends[keep].tolist(),
                                   values[keep].tolist())
                    pending = next(given, None)
                if not written:
                    yield chrom, 0, 1, 0.0
            if pending is not None:
                raise ValueError(f"bigWig entries out of order at {pending[0]} ({path})")
        except BaseException as exc:  # pybigtools would swallow it
            state["error"] = exc
            raise
        state["finished"] = True

    try:
        os.symlink(os.path.abspath(tmp), link)
        with _captured((1, 2)) as said:  # pybigtools prints on stdout, where a pipeline may carry data
            pybigtools.open(str(link), "w").write(sizes, entries())
        if state["error"] is not None:
            raise state["error"]  # type: ignore[misc]
        message = b"".join(said).strip()
        if message or not state["finished"]:
            code = _OS_ERROR.search(message)
            number = int(code.group(1)) if code else errno.EIO
            text = message.decode(errors="replace").splitlines()[-1] if message else "the writer stopped early"
            raise OSError(number, text)
        _check_bigwig(tmp, sizes, path)
        if batch is None:
            publish(tmp, path)
        else:
            batch.finished.append((tmp, path))
    except BaseException as exc:
        discard(tmp)
        if isinstance(exc, OSError):
            raise faults.storage_error(exc, path) from None
        raise
    finally:
        shutil.rmtree(link_dir, ignore_errors=True)


def _check_bigwig(tmp: Path, sizes: Mapping[str, int], path: Path) -> None:
    """Raise OSError (EIO) unless ``tmp`` reads back as a bigWig of these chromosomes."""
    import pyBigWig

    try:
        with _libbigwig_messages_to_debug():
            handle = pyBigWig.open(str(tmp))
    except RuntimeError:
        handle = None
    try:
        good = handle is not None and handle.isBigWig() and dict(handle.chroms()) == dict(sizes)
    finally:
        if handle is not None:
            handle.close()
    if not good:
        raise OSError(errno.EIO, f"the finished file does not read back as a bigWig ({path})")


#: memory for the bigWigs written at once (each is held in memory until finished): tracks are
#: written in groups whose summed bound stays under it (at least one track a group); a smaller
#: budget re-reads the source more often, the output is the same
MEMORY_BUDGET = 1 << 30
#: the fewest bytes an entry takes in a bigWig (measured: 2.5 for constant values, 8.3 for random
#: ones), for the free-space check: it must never refuse an export that would fit
MIN_ENTRY_BYTES = 2


def track_groups(names: Sequence[str], out: str | os.PathLike, chrom_sizes: Mapping[str, int], n_entries: int,
                 covered_bp: int, min_entries: int, budget: Optional[int] = None,
                 verb: str = "writing") -> List[List[str]]:
    """Check that the output folder can hold the bigWigs, then split the tracks into the groups
    written together (see :data:`MEMORY_BUDGET`).

    Args:
        names: the tracks, one bigWig each.
        out: one of the bigWigs (its folder is checked).
        n_entries, covered_bp: the entries a track has at most, and the bases they cover.
        min_entries: the entries a track has at least (for the free-space check).
        budget: bytes of bigWigs held in memory at once (default :data:`MEMORY_BUDGET`).
        verb: what the command does, for the free-space message ("exporting").

    The size bound is that of every entry written; fewer entries (NaN, missing chunks) only make a
    file smaller, as long as most entries stay whole bins (the zoom levels follow the mean width).
    """
    faults.require_free_space(Path(out).parent, MIN_ENTRY_BYTES * min_entries * len(names),
                              f"{verb} {len(names)} bigWig(s) ({out})", MIN_ENTRY_BYTES * min_entries)
    bound = bigwig_size_bound(n_entries, len(chrom_sizes), covered_bp=covered_bp,
                              genome_bp=sum(chrom_sizes.values()),
                              name_bytes=max((len(c.encode()) for c in chrom_sizes), default=0))
    size = max(1, (MEMORY_BUDGET if budget is None else budget) // bound)
    return [list(names[i:i + size]) for i in range(0, len(names), size)]
