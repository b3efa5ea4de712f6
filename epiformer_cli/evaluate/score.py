"""All of ``evaluate``'s numbers from the evaluated bins: the per-track table, the track-by-track
matrix, cell-type specificity and the example loci (:func:`score_bins`).

Per bin (every evaluated row, as ``train`` scores them): Pearson and Spearman of log(x + 1), and
peak-vs-background AUROC/AUPRC of the predicted signal. A bin is a peak bin when it overlaps a
``--peaks`` interval, else when its target is among the track's top ``top_fraction`` of bins
(:func:`~epiformer_cli.evaluate.metrics.top_labels`). Per peak: the signal summed over the peak's
bins, correlated across peaks; the peaks are ``--peaks``' intervals, else the runs of consecutive
bins that are top bins of any track. A peak counts only when every one of its bins was evaluated.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from epiformer_cli.evaluate import metrics as M
from epiformer_cli.evaluate.bins import EvaluatedBins, Locus, Peaks, chosen_loci, runs

log = logging.getLogger(__name__)

#: metrics.tsv's columns, in order (``track`` is the row's track, or ``mean`` for the mean row).
COLUMNS = ("track", "bins", "pearson", "spearman", "positive_bins", "auroc", "auprc", "peaks", "peak_pearson",
           "peak_spearman", "specificity")
#: the columns averaged over tracks in the mean row (counts are not averaged: they are summed or
#: the same for every track).
AVERAGED = ("pearson", "spearman", "auroc", "auprc", "peak_pearson", "peak_spearman", "specificity")


@dataclass
class Scores:
    """Everything ``evaluate`` reports.

    Attributes:
        tracks: track names.
        table: one dict per track, keyed by :data:`COLUMNS`.
        matrix: (tracks, tracks) Pearson r of log(x + 1), predicted track i (row) vs observed track j.
        specificity: the overall cell-type specificity (pooled z-scores); specificity_peaks: peaks it used.
        rows: evaluated rows (bins, with a store's overlapping windows counted per window);
        bins: distinct bins. peaks: peaks scored; peaks_source: ``--peaks FILE`` or the top bins;
        peaks_partial: peaks left out because some of their bins were not evaluated.
        loci: example loci for the report.
    """

    tracks: List[str]
    table: List[Dict[str, Any]]
    matrix: np.ndarray
    specificity: float
    specificity_peaks: int
    rows: int
    bins: int
    peaks: int
    peaks_source: str
    peaks_partial: int = 0
    loci: List[Locus] = field(default_factory=list)

    def mean_row(self) -> Dict[str, Any]:
        """The mean over tracks of each averaged column (NaN values left out); counts as the
        tracks have them (``bins``, ``peaks``) or summed (``positive_bins``)."""
        row: Dict[str, Any] = {"track": "mean", "bins": self.rows, "peaks": self.peaks,
                               "positive_bins": int(sum(r["positive_bins"] for r in self.table))}
        for column in AVERAGED:
            values = [r[column] for r in self.table if not math.isnan(r[column])]
            row[column] = float(np.mean(values)) if values else math.nan
        return row


def score_bins(bins: EvaluatedBins, peaks: Optional[Peaks] = None, *, top_fraction: float = 0.01,
               loci: int = 3) -> Scores:
    """Score ``bins`` (see the module docstring).

    Args:
        bins: the evaluated bins.
        peaks: ``--peaks`` intervals as bin spans, or None (each track's top bins).
        top_fraction: without ``peaks``: the fraction of bins that are a track's peak bins.
        loci: example loci to pick (centred on the peaks of highest observed signal).

    Memory: beyond ``bins``, a few float64 vectors of its rows (ranks) and one chromosome's bins x
    tracks at a time.
    """
    tracks = bins.tracks
    n_tracks = len(tracks)
    r = M.bin_pearson(bins.pred, bins.target)
    thresholds = None
    if peaks is None:
        labels = np.stack([M.top_labels(bins.target[:, t], top_fraction) for t in range(n_tracks)], axis=1)
        # a bin is in a peak when it is a top bin of any track: the threshold of each track
        thresholds = np.array([bins.target[labels[:, t], t].min() if labels[:, t].any() else np.inf
                               for t in range(n_tracks)])
    else:
        labels = np.zeros((len(bins), 1), dtype=bool)
        for ci in np.unique(bins.chrom):
            rows = np.flatnonzero(bins.chrom == ci)
            labels[rows, 0] = peaks.mask(int(ci), bins.n_bins(bins.chroms[ci]))[bins.bin[rows]]
    peak_chrom: List[np.ndarray] = []
    peak_span: List[np.ndarray] = []
    observed: List[np.ndarray] = []
    predicted: List[np.ndarray] = []
    partial = 0
    for genome in bins.on_genome():
        ci = bins.chroms.index(genome.chrom)
        if peaks is None:
            spans = runs(genome.covered & (genome.target >= thresholds).any(axis=1))  # thresholds are > 0
        else:
            spans = peaks.span[peaks.chrom == ci]
            spans = spans[(spans[:, 0] < len(genome.covered))]
            spans = np.minimum(spans, len(genome.covered))
        whole, obs, pred = genome.sums(spans)
        partial += int((~whole).sum())
        peak_chrom.append(np.full(int(whole.sum()), ci, dtype=np.int32))
        peak_span.append(spans[whole])
        observed.append(obs[whole])
        predicted.append(pred[whole])
    scored = Peaks(np.concatenate(peak_chrom) if peak_chrom else np.zeros(0, np.int32),
                   np.concatenate(peak_span) if peak_span else np.zeros((0, 2), np.int64),
                   peaks.source if peaks is not None else f"top {top_fraction:g} of each track's bins")
    obs_sum = np.concatenate(observed) if observed else np.zeros((0, n_tracks))
    pred_sum = np.concatenate(predicted) if predicted else np.zeros((0, n_tracks))
    per_track, overall, used = M.specificity(obs_sum, pred_sum)

    table = []
    for t, name in enumerate(tracks):
        label = labels[:, t if peaks is None else 0]
        ranked = M.Ranking(bins.pred[:, t])  # one sort of the predictions for rho, AUROC and AUPRC
        table.append({
            "track": name, "bins": len(bins), "pearson": float(r[t]),
            "spearman": M.spearman(ranked, bins.target[:, t]),
            "positive_bins": int(label.sum()),
            "auroc": M.auroc(ranked, label), "auprc": M.auprc(ranked, label),
            "peaks": len(scored),
            "peak_pearson": M.log_pearson(pred_sum[:, t], obs_sum[:, t]),
            "peak_spearman": M.spearman(pred_sum[:, t], obs_sum[:, t]),
            "specificity": float(per_track[t]),
        })
    order = np.argsort(-np.log1p(obs_sum).sum(axis=1), kind="stable")
    return Scores(tracks=list(tracks), table=table, matrix=M.track_matrix(bins.pred, bins.target),
                  specificity=overall, specificity_peaks=used, rows=len(bins), bins=bins.distinct_bins(),
                  peaks=len(scored), peaks_source=scored.source, peaks_partial=partial,
                  loci=chosen_loci(bins, scored, order, loci))
