"""Reading model inputs from a genome FASTA and a conservation bigWig, a batch at a time.

Consecutive windows overlap (each window carries ``crop_bp`` of context on both sides), so inputs
are read once per run of overlapping windows and the windows are copied out of it.
:func:`read_batches` reads one batch of windows at a time, so memory is bounded by the batch
whatever the length of a chromosome or of a store chunk. All coordinates are 0-based, half-open.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from epiformer_cli.io.bigwig import BigWig
from epiformer_cli.io.genome import Genome

K = TypeVar("K")


class WindowReader:
    """Bases and conservation of genome intervals, N and 0 beyond chromosome ends.

    Args:
        genome: the FASTA.
        conservation: the conservation bigWig, already bound to the genome's names
            (``BigWig.bind``), or None (all zero).
        context: extra bases on each side of every window (the engine's ``context``).
    """

    def __init__(self, genome: Genome, conservation: Optional[BigWig], context: int = 0) -> None:
        self.genome = genome
        self.conservation = conservation
        self.context = int(context)

    def read(self, chrom: str, start: int, end: int) -> Tuple[np.ndarray, np.ndarray]:
        """Codes (uint8) and conservation (float32, missing = 0) of ``chrom:[start, end)``."""
        codes = self.genome.fetch(chrom, start, end)
        if self.conservation is None:
            cons = np.zeros(end - start, dtype=np.float32)
        else:
            cons = self.conservation.values(chrom, start, end, missing=0.0)
        return codes, cons

    def windows(self, chrom: str, starts: Sequence[int], window_bp: int) -> Tuple[np.ndarray, np.ndarray]:
        """Inputs of the windows ``[s - context, s + window_bp + context)`` for ``s`` in ``starts``.

        Overlapping consecutive windows are read as one span. Returns codes (n, window_bp + 2
        context) uint8 and conservation of the same shape, float32.
        """
        starts = np.asarray(starts, dtype=np.int64)
        _, codes, cons = _read_batch(self, [(None, chrom, starts, 0)], len(starts), window_bp)
        return codes, cons


def read_batches(reader: WindowReader, groups: Iterable[Tuple[K, str, Sequence[int]]], batch_size: int,
                 window_bp: int) -> Iterator[Tuple[List[Tuple[K, int, int]], np.ndarray, np.ndarray]]:
    """The windows of ``groups`` in batches of ``batch_size``, read one batch at a time.

    Args:
        reader: what reads ``chrom:[start, end)`` (``read``) with ``context`` bases on each side
            of every window.
        groups: ``(key, chrom, starts)``: windows ``[s, s + window_bp)`` for ``s`` in ``starts``
            (e.g. the windows of one store chunk). A batch runs across group boundaries.
        batch_size: windows per batch (the last batch may be shorter).
        window_bp: the model's input length.

    Yields:
        ``(meta, codes, cons)``: ``meta`` lists ``(key, first, count)``, the rows
        ``starts[first:first + count]`` of that group, in row order; codes (n, window_bp + 2
        context) uint8 and conservation of the same shape, float32, arrays of their own (no view
        of a larger read). Each read covers one run of overlapping windows of the batch, so no
        read is longer than ``batch_size * (window_bp + 2 context)`` bases: memory is bounded by
        the batch, not by the chromosome or the group.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    pending: List[Tuple[K, str, np.ndarray, int]] = []  # (key, chrom, starts of this batch, first)
    count = 0
    for key, chrom, starts in groups:
        starts = np.asarray(starts, dtype=np.int64)
        pos = 0
        while pos < len(starts):
            take = min(batch_size - count, len(starts) - pos)
            pending.append((key, chrom, starts[pos:pos + take], pos))
            count += take
            pos += take
            if count == batch_size:
                yield _read_batch(reader, pending, count, window_bp)
                pending, count = [], 0
    if count:
        yield _read_batch(reader, pending, count, window_bp)


def _read_batch(reader: WindowReader, parts: List[Tuple[K, str, np.ndarray, int]], n: int,
                window_bp: int) -> Tuple[List[Tuple[K, int, int]], np.ndarray, np.ndarray]:
    context = reader.context
    length = window_bp + 2 * context
    codes = np.empty((n, length), dtype=np.uint8)
    cons = np.empty((n, length), dtype=np.float32)
    # rows of the batch in order; a run is consecutive rows of one chromosome whose windows overlap
    # or touch the previous one (as the tiling's do), read as one span
    chroms = [chrom for _, chrom, starts, _ in parts for _ in range(len(starts))]
    starts = np.concatenate([p[2] for p in parts])
    row = 0
    while row < n:
        end = row + 1
        while (end < n and chroms[end] == chroms[row]
               and 0 <= starts[end] - starts[end - 1] <= window_bp):
            end += 1
        lo = int(starts[row]) - context
        span_codes, span_cons = reader.read(chroms[row], lo, int(starts[end - 1]) + window_bp + context)
        for r in range(row, end):
            offset = int(starts[r]) - context - lo
            codes[r] = span_codes[offset:offset + length]
            cons[r] = span_cons[offset:offset + length]
        row = end
    meta = [(key, first, len(rows)) for key, _, rows, first in parts]
    return meta, codes, cons
