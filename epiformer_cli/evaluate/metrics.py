"""The numbers of ``evaluate``, as pure functions of arrays: correlations of log(x + 1), ranks with
ties, peak-versus-background AUROC and AUPRC, cell-type specificity and the track-by-track matrix.

Every function takes float arrays (float32 predictions and targets are widened to float64 before
any sum) and returns float64. A number that is undefined for its inputs (a constant vector, no
positive or no negative label, fewer than two tracks) is NaN, never a made-up 0 -- except
:func:`bin_pearson`, which is ``train``'s own computation and keeps its convention (0 for a
constant track), so that its numbers are the ones ``train`` reports.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

#: rows per step of the chunked sums (bin_pearson, track_matrix): bounds their float64 temporaries
#: to a few x 8 MB per track, whatever the number of bins.
CHUNK_ROWS = 1 << 20


def bin_pearson(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-track Pearson r of ``log(pred + 1)`` vs ``log(target + 1)`` over all rows, computed by
    ``train``'s own :class:`~epiformer_cli.training.metrics.PearsonAccumulator` (float64 sums), so
    the same bins give ``train``'s numbers.

    Args:
        pred, target: (bins, tracks), non-negative.

    Returns:
        (tracks,) float64; 0 for a track whose predictions or targets are constant (train's rule).
    """
    import torch

    from epiformer_cli.training.metrics import PearsonAccumulator

    pred, target = _pair(pred, target)
    acc = PearsonAccumulator(pred.shape[1])
    for lo in range(0, len(pred), CHUNK_ROWS):
        # the accumulator takes (batch, tracks, bins): one "window" of up to CHUNK_ROWS bins
        p = torch.from_numpy(np.ascontiguousarray(pred[lo:lo + CHUNK_ROWS].T))[None]
        t = torch.from_numpy(np.ascontiguousarray(target[lo:lo + CHUNK_ROWS].T))[None]
        acc.update(p, t)
    return acc.pearson().numpy().astype(np.float64)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two vectors (float64, centred first: no cancellation); NaN when either is
    constant or they hold fewer than 2 values."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pearson of vectors of {x.size} and {y.size} values")
    if x.size < 2:
        return math.nan
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denom if denom > 0 else math.nan


class Ranking:
    """One sort of a vector, shared by everything that ranks it (Spearman's rho, AUROC, AUPRC): a
    sort of 2 M values is the costliest step of the metrics.

    Attributes:
        order: indices sorting the values ascending (tied values adjacent, in any order).
        first, stop: (groups,) each run of equal values is ``order[first:stop]``, ascending.
    """

    def __init__(self, values: np.ndarray) -> None:
        values = np.asarray(values).ravel()
        self.n = values.size
        self.order = np.argsort(values)  # not stable: ties are handled as groups, never by position
        ordered = values[self.order]
        self.first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if self.n else np.zeros(0, np.int64)
        self.stop = np.r_[self.first[1:], self.n].astype(np.int64)
        self._ranks: np.ndarray | None = None

    @property
    def ranks(self) -> np.ndarray:
        """(n,) 1-based ranks, tied values sharing the mean of their ranks."""
        if self._ranks is None:
            ranks = np.empty(self.n, dtype=np.float64)
            # positions first..stop-1 (0-based) hold ranks first+1..stop: their mean is (first + 1 + stop) / 2
            ranks[self.order] = np.repeat((self.first + 1 + self.stop) / 2.0, self.stop - self.first)
            self._ranks = ranks
        return self._ranks


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (a vector), tied values sharing the mean of their ranks
    (``scipy.stats.rankdata(method="average")``): [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]."""
    return Ranking(values).ranks


def _ranking(values) -> Ranking:
    return values if isinstance(values, Ranking) else Ranking(values)


def spearman(x, y) -> float:
    """Spearman's rho: Pearson r of the average ranks (ties share their mean rank); NaN when either
    vector is constant. The same for ``x`` as for ``log(x + 1)``: ranks do not change. ``x`` and
    ``y`` are vectors or their :class:`Ranking`."""
    return pearson(_ranking(x).ranks, _ranking(y).ranks)


def log_pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of ``log(x + 1)`` vs ``log(y + 1)`` (x, y >= 0)."""
    return pearson(np.log1p(np.asarray(x, dtype=np.float64)), np.log1p(np.asarray(y, dtype=np.float64)))


def auroc(scores, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (a vector or its :class:`Ranking`) for binary
    ``labels``: the probability that a random positive scores above a random negative, ties
    counting one half (Mann-Whitney U / (P N)). NaN without a positive or a negative."""
    labels = np.asarray(labels, dtype=bool).ravel()
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    u = float(_ranking(scores).ranks[labels].sum()) - positives * (positives + 1) / 2.0
    return u / (positives * negatives)


def auprc(scores, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision: sum over score thresholds,
    highest first, of (recall gained) x (precision there), tied scores passing the threshold
    together (``sklearn.metrics.average_precision_score``). A random score gives about the
    fraction of positives. ``scores``: a vector or its :class:`Ranking`. NaN without a positive."""
    labels = np.asarray(labels, dtype=bool).ravel()
    positives = int(labels.sum())
    if positives == 0:
        return math.nan
    ranking = _ranking(scores)
    n = ranking.n
    hits = labels[ranking.order][::-1]  # highest score first
    # the runs of ties, highest first, end at these positions of the descending order
    last = (n - 1 - ranking.first)[::-1]
    tp = np.cumsum(hits, dtype=np.float64)[last]
    precision = tp / (last + 1.0)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def top_labels(target: np.ndarray, fraction: float) -> np.ndarray:
    """The bins among the top ``fraction`` of ``target`` (a vector): those at or above the k-th
    largest value, k = ceil(fraction x bins), and above 0 (an all-zero track has no peak). Ties
    at the threshold are all in, so a few more than k bins may be."""
    target = np.asarray(target).ravel()
    if target.size == 0:
        return np.zeros(0, dtype=bool)
    k = min(target.size, max(1, math.ceil(fraction * target.size)))
    threshold = np.partition(target, target.size - k)[target.size - k]
    return (target >= threshold) & (target > 0)


def track_matrix(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(tracks, tracks) Pearson r of ``log(pred_i + 1)`` (row i) vs ``log(target_j + 1)`` (column
    j) over all rows: the diagonal is each track's own r, an off-diagonal cell how well track i's
    predictions follow track j's observations. Summed in float64 chunks of :data:`CHUNK_ROWS` rows;
    NaN for a constant track.

    Args:
        pred, target: (bins, tracks).
    """
    pred, target = _pair(pred, target)
    n, tracks = pred.shape
    sx, sy = np.zeros(tracks), np.zeros(tracks)
    sxx, syy = np.zeros(tracks), np.zeros(tracks)
    sxy = np.zeros((tracks, tracks))
    # centre on the first rows' means: the sums then stay small and the covariance loses nothing
    shift_x = np.log1p(pred[:CHUNK_ROWS].astype(np.float64)).mean(0) if n else sx
    shift_y = np.log1p(target[:CHUNK_ROWS].astype(np.float64)).mean(0) if n else sy
    for lo in range(0, n, CHUNK_ROWS):
        x = np.log1p(pred[lo:lo + CHUNK_ROWS].astype(np.float64)) - shift_x
        y = np.log1p(target[lo:lo + CHUNK_ROWS].astype(np.float64)) - shift_y
        sx += x.sum(0)
        sy += y.sum(0)
        sxx += (x * x).sum(0)
        syy += (y * y).sum(0)
        sxy += x.T @ y
    if n < 2:
        return np.full((tracks, tracks), np.nan)
    cov = sxy / n - np.outer(sx, sy) / n**2
    vx = np.clip(sxx / n - (sx / n) ** 2, 0, None)
    vy = np.clip(syy / n - (sy / n) ** 2, 0, None)
    denom = np.sqrt(np.outer(vx, vy))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), np.nan)


def specificity(observed: np.ndarray, predicted: np.ndarray) -> Tuple[np.ndarray, float, int]:
    """Cell-type specificity at peaks: does the model put each peak's signal in the right tracks?

    Each peak's ``log(signal + 1)`` is z-scored across the tracks (minus the peak's mean over
    tracks, over their standard deviation), observed and predicted alike; then, per track, the
    Pearson r over peaks of predicted vs observed z-scores, and overall the r of all z-scores
    pooled. A peak whose observed or predicted signal is the same in every track has no z-scores
    and is left out.

    Args:
        observed, predicted: (peaks, tracks), signal summed over each peak's bins (>= 0).

    Returns:
        ``(per_track (tracks,), overall, peaks used)``; NaN with fewer than 2 tracks or 2 peaks.
    """
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if observed.shape != predicted.shape or observed.ndim != 2:
        raise ValueError(f"specificity of arrays {observed.shape} and {predicted.shape}")
    tracks = observed.shape[1]
    if tracks < 2:
        return np.full(tracks, np.nan), math.nan, 0
    zo, keep_o = _zscores(np.log1p(observed))
    zp, keep_p = _zscores(np.log1p(predicted))
    keep = keep_o & keep_p
    zo, zp = zo[keep], zp[keep]
    per_track = np.array([pearson(zp[:, t], zo[:, t]) for t in range(tracks)])
    return per_track, pearson(zp, zo), int(keep.sum())


def _zscores(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Row-wise z-scores of (peaks, tracks) and the rows that have them (standard deviation > 0)."""
    centred = values - values.mean(axis=1, keepdims=True)
    sd = np.sqrt((centred * centred).mean(axis=1))
    keep = sd > 0
    return centred / np.where(keep, sd, 1.0)[:, None], keep


def _pair(pred: np.ndarray, target: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"predictions {pred.shape} and targets {target.shape} must both be (bins, tracks)")
    return pred, target
