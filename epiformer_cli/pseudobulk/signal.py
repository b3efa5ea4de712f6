"""From fragments to per-base signal per cell type, in two passes of bounded memory.

1. :func:`sort_file` reads one fragments file (a block at a time) and appends the fragments of
   cells to one compact record file per chromosome (:data:`RECORD`, 12 bytes a fragment), counting
   on the way what ``qc.tsv`` reports (fragments, read pairs, lengths, fragments per cell). The
   file's order does not matter: a file sorted differently, or two samples in different chromosome
   orders, give the same result.
2. :func:`chromosome_signal` reads one chromosome's records of every file and adds them into one
   int32 array per cell type (a chromosome long), a group of cell types at a time (at most
   :data:`MEMORY_BUDGET` bytes of arrays, at least one cell type): Tn5 insertions at ``start`` and
   ``end - 1`` (``insertions``), or every base of ``[start, end)`` (``coverage``). The arrays are
   returned as runs of equal value (a bigWig's entries), and the 128 bp bins' insertion counts as
   a histogram (for the "top 1% of bins" QC).

Memory: the records are read in chunks of :data:`CHUNK` fragments, so it is bounded by the longest
chromosome times the cell types of a group (4 bytes a base each), never by the number of fragments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError

#: a cell's fragment as kept between the passes: start, end (0-based, half-open), cell type, weight
RECORD = np.dtype([("start", "<u4"), ("end", "<u4"), ("type", "<u2"), ("weight", "<u2")])
#: fragments read at once in the second pass
CHUNK = 1 << 22
#: bytes of per-base arrays held at once (one cell type per group at least)
MEMORY_BUDGET = 2 << 30
#: the bin of the "fraction of fragments in the top 1% of bins" QC (the model's output bin)
QC_BIN = 128
#: fragment lengths are counted up to this (longer ones in the last bin)
MAX_LENGTH = 1000
#: the largest weight a fragment's count column can give (read pairs of one fragment)
MAX_WEIGHT = np.iinfo(np.uint16).max
SIGNALS = ("insertions", "coverage")


@dataclass
class FileCounts:
    """What reading one fragments file found (see :func:`sort_file`).

    Attributes:
        lines: fragment lines read.
        in_cells: fragments of cells on the FASTA's chromosomes (written for the second pass).
        fragments, reads: (types,) fragments (lines) and read pairs (count column) of cells.
        lengths: (types, MAX_LENGTH + 1) fragments by length in bp (the last bin: longer).
        cell_types, cell_fragments: (cells,) cell type and fragments of every cell with any.
        other_chroms: chromosome (as the file names it) -> fragments of cells on chromosomes the
            FASTA does not have.
        per_chrom: (FASTA chromosomes,) fragments of cells per chromosome.
        bytes: (FASTA chromosomes,) bytes of each chromosome's record file.
        unsorted_line: the first line out of order (None: sorted).
    """

    lines: int = 0
    in_cells: int = 0
    fragments: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros((0, MAX_LENGTH + 1), np.int64))
    cell_types: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cell_fragments: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    other_chroms: Dict[str, int] = field(default_factory=dict)
    per_chrom: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bytes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unsorted_line: Optional[int] = None

    def to_arrays(self) -> Dict[str, np.ndarray]:
        names = sorted(self.other_chroms)
        return {"lines": np.int64(self.lines), "in_cells": np.int64(self.in_cells), "fragments": self.fragments,
                "reads": self.reads, "lengths": self.lengths, "cell_types": self.cell_types,
                "cell_fragments": self.cell_fragments, "other_names": np.array(names, dtype=str),
                "other_counts": np.array([self.other_chroms[n] for n in names], dtype=np.int64),
                "per_chrom": self.per_chrom, "bytes": self.bytes,
                "unsorted_line": np.int64(-1 if self.unsorted_line is None else self.unsorted_line)}

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> "FileCounts":
        unsorted = int(a["unsorted_line"])
        return cls(lines=int(a["lines"]), in_cells=int(a["in_cells"]), fragments=a["fragments"], reads=a["reads"],
                   lengths=a["lengths"], cell_types=a["cell_types"], cell_fragments=a["cell_fragments"],
                   other_chroms={str(n): int(c) for n, c in zip(a["other_names"], a["other_counts"])},
                   per_chrom=a["per_chrom"], bytes=a["bytes"], unsorted_line=None if unsorted < 0 else unsorted)


def record_path(folder: Path, chrom_index: int) -> Path:
    return folder / f"c{chrom_index}.bin"


def sort_file(path: Path, barcodes: Mapping[str, int], n_types: int, chrom_index: Mapping[str, int],
              chrom_sizes: Sequence[int], folder: Path, *, count_duplicates: bool,
              progress=None) -> FileCounts:
    """First pass over one fragments file: its cells' fragments into ``folder`` (one record file
    per FASTA chromosome), and the counts of :class:`FileCounts`.

    Args:
        path: the fragments file.
        barcodes: barcode -> cell-type index, for this file's sample.
        n_types: the number of cell types.
        chrom_index: chromosome name as fragments files may write it -> FASTA chromosome index
            (aliases resolved by the caller); names not in it are other chromosomes.
        chrom_sizes: (FASTA chromosomes,) lengths in bp.
        folder: where the record files go (created).
        count_duplicates: weigh each fragment by its count column (read pairs) instead of 1.
        progress: ``progress(fragments)`` as lines are read.

    Raises:
        InputFileError: a fragment of a cell outside its chromosome or with start >= end, naming
            the file line; the file's own parse errors (:func:`read_fragments`).
    """
    from epiformer_cli.pseudobulk.fragments import first_unsorted, read_fragments

    folder.mkdir(parents=True, exist_ok=True)
    n_chroms = len(chrom_sizes)
    sizes = np.asarray(chrom_sizes, dtype=np.int64)
    cell_ids: Dict[str, int] = {b: i for i, b in enumerate(barcodes)}
    cell_type_of = np.fromiter(barcodes.values(), dtype=np.int64, count=len(barcodes))
    counts = FileCounts(fragments=np.zeros(n_types, np.int64), reads=np.zeros(n_types, np.int64),
                        lengths=np.zeros((n_types, MAX_LENGTH + 1), np.int64),
                        per_chrom=np.zeros(n_chroms, np.int64), bytes=np.zeros(n_chroms, np.int64))
    per_cell = np.zeros(len(cell_ids), np.int64)
    handles: Dict[int, object] = {}
    last: Optional[Tuple[str, int]] = None
    try:
        for batch in read_fragments(path):
            counts.lines += len(batch)
            if counts.unsorted_line is None:
                row = first_unsorted(batch, last)
                if row is not None:
                    counts.unsorted_line = batch.first_line + row
            last = (batch.chrom_names[batch.chrom_codes[-1]], int(batch.start[-1]))
            chrom_of_code = np.array([chrom_index.get(c, -1) for c in batch.chrom_names], dtype=np.int64)
            cell_of_code = np.array([cell_ids.get(b, -1) for b in batch.barcode_names], dtype=np.int64)
            cell = cell_of_code[batch.barcode_codes]
            chrom = chrom_of_code[batch.chrom_codes]
            is_cell = cell >= 0
            elsewhere = is_cell & (chrom < 0)
            if elsewhere.any():
                codes, n = np.unique(batch.chrom_codes[elsewhere], return_counts=True)
                for code, k in zip(codes.tolist(), n.tolist()):
                    name = batch.chrom_names[code]
                    counts.other_chroms[name] = counts.other_chroms.get(name, 0) + k
            keep = np.flatnonzero(is_cell & (chrom >= 0))
            if progress is not None:
                progress(len(batch))
            if not len(keep):
                continue
            cell, chrom = cell[keep], chrom[keep]
            start, end, count = batch.start[keep], batch.end[keep], batch.count[keep]
            _check(path, batch, keep, start, end, count, sizes[chrom])
            types = cell_type_of[cell]
            weight = np.minimum(count, MAX_WEIGHT) if count_duplicates else np.ones(len(keep), np.int64)
            counts.in_cells += len(keep)
            counts.fragments += np.bincount(types, minlength=n_types)
            counts.reads += np.bincount(types, weights=count, minlength=n_types).astype(np.int64)
            length = np.minimum(end - start, MAX_LENGTH)
            counts.lengths += np.bincount(types * (MAX_LENGTH + 1) + length,
                                          minlength=n_types * (MAX_LENGTH + 1)).reshape(n_types, -1)
            per_cell += np.bincount(cell, minlength=len(per_cell))
            counts.per_chrom += np.bincount(chrom, minlength=n_chroms)
            records = np.empty(len(keep), dtype=RECORD)
            records["start"], records["end"], records["type"], records["weight"] = start, end, types, weight
            boundaries = np.flatnonzero(chrom[1:] != chrom[:-1]) + 1
            for lo, hi in zip(np.r_[0, boundaries], np.r_[boundaries, len(keep)]):
                c = int(chrom[lo])
                if c not in handles:
                    handles[c] = open(record_path(folder, c), "ab")
                handles[c].write(records[lo:hi].tobytes())
                counts.bytes[c] += (hi - lo) * RECORD.itemsize
    finally:
        for handle in handles.values():
            handle.close()
    seen = np.flatnonzero(per_cell)
    counts.cell_types, counts.cell_fragments = cell_type_of[seen], per_cell[seen]
    return counts


def _check(path: Path, batch, keep: np.ndarray, start: np.ndarray, end: np.ndarray, count: np.ndarray,
           size: np.ndarray) -> None:
    """Refuse a cell's fragment that is empty, starts before 0, runs past its chromosome's end, or
    has a count below 1, naming its line."""
    bad = (start < 0) | (end <= start) | (end > size) | (count < 1)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    row = int(keep[i])
    line = batch.first_line + row
    chrom = batch.chrom_names[batch.chrom_codes[row]]
    where = f"{path}:{line:,}: fragment {chrom}:{int(start[i])}-{int(end[i])}"
    if end[i] > size[i] and start[i] < end[i]:
        raise InputFileError(f"{where} runs past the end of {chrom} ({int(size[i]):,} bp in the FASTA): "
                             "are the fragments of another assembly? Use the FASTA they were aligned to")
    if count[i] < 1:
        raise InputFileError(f"{where} has count {int(count[i])}: the fifth column counts read pairs (1 or more)")
    raise InputFileError(f"{where} is empty or negative (start must be >= 0 and below end, 0-based half-open)")


@dataclass
class ChromSignal:
    """One chromosome's signal: per cell type, runs of equal nonzero value (0-based, half-open:
    ``starts``, ``ends``, integer ``values``: insertions or depth), and the histogram of its
    128 bp bins' insertion counts (``bin_counts[k]`` bins hold ``bin_values[k]`` insertions; bins
    without any are left out)."""

    starts: List[np.ndarray]
    ends: List[np.ndarray]
    values: List[np.ndarray]
    bin_values: List[np.ndarray]
    bin_counts: List[np.ndarray]

    def to_arrays(self) -> Dict[str, np.ndarray]:
        out: Dict[str, np.ndarray] = {}
        for t in range(len(self.starts)):
            out[f"s{t}"], out[f"e{t}"], out[f"v{t}"] = self.starts[t], self.ends[t], self.values[t]
            out[f"bv{t}"], out[f"bc{t}"] = self.bin_values[t], self.bin_counts[t]
        return out


def type_groups(n_types: int, longest: int, budget: int = MEMORY_BUDGET) -> List[range]:
    """Cell types processed together so that their per-base arrays (int32, ``longest`` bases each,
    plus a temporary) fit ``budget`` bytes; at least one a group."""
    per_type = 6 * (longest + 1)
    size = max(1, min(n_types, budget // max(per_type, 1)))
    return [range(i, min(i + size, n_types)) for i in range(0, n_types, size)]


def chromosome_signal(record_files: Sequence[Path], length: int, n_types: int, *, signal: str,
                      budget: int = MEMORY_BUDGET) -> ChromSignal:
    """Second pass over one chromosome (``length`` bp): the records of every file summed into
    per-type signal (see the module docstring), as runs of equal value."""
    result = ChromSignal([], [], [], [], [])
    n_bins = -(-length // QC_BIN)
    for group in type_groups(n_types, length, budget):
        g0, g = group.start, len(group)
        dense = np.zeros(g * (length + 1), dtype=np.int32)  # one spare base a type: coverage's end events
        bins = np.zeros(g * n_bins, dtype=np.int64)
        for path in record_files:
            records = np.memmap(path, dtype=RECORD, mode="r") if os.path.getsize(path) else np.zeros(0, RECORD)
            for lo in range(0, len(records), CHUNK):
                chunk = records[lo:lo + CHUNK]
                types = chunk["type"].astype(np.int64)
                mine = (types >= g0) & (types < g0 + g)
                if not mine.all():
                    chunk, types = chunk[mine], types[mine]
                if not len(chunk):
                    continue
                offset = (types - g0) * (length + 1)
                start = chunk["start"].astype(np.int64)
                end = chunk["end"].astype(np.int64)
                weight = chunk["weight"].astype(np.int32)
                if signal == "coverage":
                    np.add.at(dense, offset + start, weight)
                    np.add.at(dense, offset + end, -weight)
                else:
                    np.add.at(dense, offset + start, weight)
                    np.add.at(dense, offset + end - 1, weight)
                bin_offset = (types - g0) * n_bins
                both = np.concatenate([bin_offset + start // QC_BIN, bin_offset + (end - 1) // QC_BIN])
                bins += np.bincount(both, weights=np.concatenate([weight, weight]),
                                    minlength=g * n_bins).astype(np.int64)
            del records
        for k in range(g):
            base = dense[k * (length + 1):(k + 1) * (length + 1)]
            if signal == "coverage":
                np.cumsum(base, out=base)
            starts, ends, values = runs(base[:length])
            result.starts.append(starts)
            result.ends.append(ends)
            result.values.append(values)
            b = bins[k * n_bins:(k + 1) * n_bins]
            v, c = np.unique(b[b > 0], return_counts=True)
            result.bin_values.append(v.astype(np.int64))
            result.bin_counts.append(c.astype(np.int64))
        del dense, bins
    return result


def runs(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of equal nonzero value of a per-base array: (starts, ends, values), 0-based, half-open."""
    n = len(values)
    if n == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.int32)
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    vals = values[starts]
    keep = vals != 0
    return starts[keep].astype(np.uint32), ends[keep].astype(np.uint32), vals[keep].astype(np.int32)


def top_bins_fraction(bin_values: Sequence[np.ndarray], bin_counts: Sequence[np.ndarray], total_bins: int,
                      fraction: float = 0.01) -> float:
    """The fraction of insertions in the ``fraction`` of bins with the most (of ``total_bins``,
    the genome's bins: those without insertions count as bins too); NaN without insertions.

    Args:
        bin_values, bin_counts: per chromosome, the histogram of its bins' insertions (nonzero ones).
    """
    values = np.concatenate([np.asarray(v, np.int64) for v in bin_values]) if bin_values else np.zeros(0, np.int64)
    counts = np.concatenate([np.asarray(c, np.int64) for c in bin_counts]) if bin_counts else np.zeros(0, np.int64)
    total = float((values * counts).sum())
    if total <= 0:
        return float("nan")
    take = int(np.ceil(fraction * total_bins))
    order = np.argsort(-values, kind="stable")
    values, counts = values[order], counts[order]
    taken = np.minimum(counts, np.maximum(take - np.concatenate([[0], np.cumsum(counts)[:-1]]), 0))
    return float((values * taken).sum() / total)


def record_files(folders: Sequence[Path], chrom_index: int) -> List[Path]:
    """The record files of one chromosome in the first pass's folders (a file without fragments
    there has none)."""
    return [p for p in (record_path(f, chrom_index) for f in folders) if p.exists()]

