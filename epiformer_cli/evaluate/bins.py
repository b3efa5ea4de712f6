"""What ``evaluate`` scored: the evaluated 128 bp bins as rows of predictions and targets, and the
genome-ordered views the peak metrics and the example loci need (one chromosome at a time).

Bins are numbered on their chromosome: bin ``i`` covers ``[128 i, 128 (i + 1))``, 0-based,
half-open. A bin may appear in several rows: the windows of a prepared store overlap when it was
prepared with ``--step`` below the model's output span, and ``train`` then scores such a bin once per
window, with that window's prediction. The per-bin metrics keep every row, so that they are
``train``'s numbers; the genome-ordered views average the rows of a bin (its targets are equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

BIN_BP = 128


@dataclass
class EvaluatedBins:
    """Predictions and targets of every evaluated bin.

    Attributes:
        tracks: track names, the order of the arrays' last axis.
        chroms: chromosome names; ``chrom`` indexes them. chrom_sizes: name -> bp.
        chrom: (rows,) int32: each row's chromosome.
        bin: (rows,) int64: each row's bin on its chromosome.
        pred: (rows, tracks) float32 predictions; target: (rows, tracks) float32 targets, both in
            the model's normalised units.

    Memory: 8 bytes per row and track plus 12 per row (hg38's chr8 and chr9 at 128 bp: 2.3 M rows,
    about 0.4 GB for 18 tracks).
    """

    tracks: List[str]
    chroms: List[str]
    chrom_sizes: Dict[str, int]
    chrom: np.ndarray
    bin: np.ndarray
    pred: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.bin)

    def select(self, rows: np.ndarray) -> "EvaluatedBins":
        """Only ``rows`` (a boolean mask or indices), in their order."""
        return EvaluatedBins(self.tracks, self.chroms, self.chrom_sizes, self.chrom[rows], self.bin[rows],
                             self.pred[rows], self.target[rows])

    def n_bins(self, chrom: str) -> int:
        """Bins of ``chrom``: its length over 128 bp, rounded up."""
        return -(-self.chrom_sizes[chrom] // BIN_BP)

    def distinct_bins(self) -> int:
        """Distinct (chromosome, bin) pairs among the rows."""
        key = self.chrom.astype(np.int64) * (1 << 40) + self.bin
        return int(np.unique(key).size)

    def on_genome(self) -> Iterator["ChromTracks"]:
        """The chromosomes with rows, one at a time, in ``chroms`` order, as :class:`ChromTracks`
        (memory: one chromosome's bins x tracks x 8 bytes at a time)."""
        order = np.argsort(self.chrom, kind="stable")
        index = self.chrom[order]
        for ci in np.unique(index):
            rows = order[np.searchsorted(index, ci, "left"):np.searchsorted(index, ci, "right")]
            yield ChromTracks.of(self, int(ci), rows)


@dataclass
class ChromTracks:
    """One chromosome's evaluated bins in genome order.

    Attributes:
        chrom: its name.
        covered: (n_bins,) bool: bins with at least one row.
        pred, target: (n_bins, tracks) float32: the mean of a bin's rows (0 where not covered).
    """

    chrom: str
    covered: np.ndarray
    pred: np.ndarray
    target: np.ndarray

    @classmethod
    def of(cls, bins: EvaluatedBins, ci: int, rows: np.ndarray) -> "ChromTracks":
        name = bins.chroms[ci]
        n = bins.n_bins(name)
        at = bins.bin[rows]
        count = np.bincount(at, minlength=n)
        covered = count > 0
        per = np.where(covered, count, 1).astype(np.float64)
        pred = np.zeros((n, len(bins.tracks)), dtype=np.float32)
        target = np.zeros_like(pred)
        for t in range(len(bins.tracks)):
            pred[:, t] = np.bincount(at, weights=bins.pred[rows, t], minlength=n) / per
            target[:, t] = np.bincount(at, weights=bins.target[rows, t], minlength=n) / per
        return cls(name, covered, pred, target)

    def sums(self, spans: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signal summed over bin spans ``[b0, b1)`` ((spans, 2) int64): ``(whole, observed,
        predicted)``: whether every bin of the span is covered (spans, ) bool, and the two sums
        (spans, tracks) float64."""
        spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        gaps = np.r_[0, np.cumsum(~self.covered)]
        whole = (gaps[spans[:, 1]] - gaps[spans[:, 0]]) == 0
        out = []
        for values in (self.target, self.pred):
            total = np.zeros((len(values) + 1, values.shape[1]), dtype=np.float64)
            np.cumsum(values, axis=0, dtype=np.float64, out=total[1:])
            out.append(total[spans[:, 1]] - total[spans[:, 0]])
        return whole, out[0], out[1]

    def run_around(self, b: int) -> Tuple[int, int]:
        """The covered run of bins holding bin ``b``: ``[first, end)``."""
        gaps = np.flatnonzero(~self.covered)
        left = gaps[gaps < b]
        right = gaps[gaps > b]
        return (int(left[-1]) + 1 if left.size else 0), (int(right[0]) if right.size else len(self.covered))


@dataclass
class Peaks:
    """Peaks as bin spans: ``chrom`` (peaks,) int32 into the bins' ``chroms``, ``span`` (peaks, 2)
    int64 ``[b0, b1)``, and where they came from (``--peaks`` or the top bins)."""

    chrom: np.ndarray
    span: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.chrom)

    @classmethod
    def from_intervals(cls, intervals: Sequence[Tuple[str, int, int]], chroms: Sequence[str],
                       source: str) -> "Peaks":
        """Peaks from ``(chrom, start, end)`` intervals in bp (0-based, half-open; names already
        the bins' names): each covers the bins it overlaps. Chromosomes not in ``chroms`` and empty
        intervals are left out."""
        index = {c: i for i, c in enumerate(chroms)}
        kept = [(index[c], s // BIN_BP, -(-e // BIN_BP)) for c, s, e in intervals if c in index and e > s]
        chrom = np.array([k[0] for k in kept], dtype=np.int32)
        span = np.array([k[1:] for k in kept], dtype=np.int64).reshape(-1, 2)
        return cls(chrom, span, source)

    def mask(self, ci: int, n_bins: int) -> np.ndarray:
        """(n_bins,) bool: the bins of chromosome ``ci`` that a peak overlaps."""
        delta = np.zeros(n_bins + 1, dtype=np.int64)
        spans = self.span[self.chrom == ci]
        np.add.at(delta, np.clip(spans[:, 0], 0, n_bins), 1)
        np.add.at(delta, np.clip(spans[:, 1], 0, n_bins), -1)
        return np.cumsum(delta[:-1]) > 0


def runs(mask: np.ndarray) -> np.ndarray:
    """The runs of True in a bool vector as (runs, 2) int64 ``[start, end)``."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1).astype(np.int64)


@dataclass
class Locus:
    """An example locus for the report: ``chrom:[start, end)`` in bp (0-based, half-open) and its
    bins' observed and predicted values, (bins, tracks) float32."""

    chrom: str
    start: int
    end: int
    target: np.ndarray
    pred: np.ndarray


def locus_span(tracks: ChromTracks, span: Tuple[int, int], width: int) -> Tuple[int, int]:
    """Up to ``width`` bins centred on a peak's bin span, within the covered run that holds its
    centre."""
    centre = (int(span[0]) + int(span[1])) // 2
    first, end = tracks.run_around(centre)
    lo = max(first, centre - width // 2)
    hi = min(end, lo + width)
    lo = max(first, hi - width)
    return lo, hi


def chosen_loci(bins: EvaluatedBins, peaks: Peaks, order: np.ndarray, count: int,
                width: int = 160) -> List[Locus]:
    """The first ``count`` peaks of ``order`` (indices into ``peaks``) whose loci of up to ``width``
    bins (20 kb) do not overlap an earlier one's, as :class:`Locus` views."""
    if count <= 0 or len(peaks) == 0:
        return []
    by_chrom: Dict[int, List[int]] = {}
    for p in order:
        by_chrom.setdefault(int(peaks.chrom[p]), []).append(int(p))
    picked: List[Tuple[int, int, Locus]] = []  # (rank in order, peak, locus)
    rank = {int(p): i for i, p in enumerate(order)}
    for tracks in bins.on_genome():
        ci = bins.chroms.index(tracks.chrom)
        taken: List[Tuple[int, int]] = []
        for p in by_chrom.get(ci, []):
            lo, hi = locus_span(tracks, tuple(peaks.span[p]), width)
            if hi <= lo or any(lo < b and a < hi for a, b in taken):
                continue
            taken.append((lo, hi))
            picked.append((rank[p], p, Locus(tracks.chrom, lo * BIN_BP, hi * BIN_BP,
                                             tracks.target[lo:hi].copy(), tracks.pred[lo:hi].copy())))
            if len(taken) >= count:
                break
    picked.sort(key=lambda item: item[0])
    return [locus for _, _, locus in picked[:count]]

