"""Calibrated variant scores: empirical p-values and quantiles against a genome-wide null.

For a track whose null holds ``N`` scored SNVs, comparing values as the outputs print them (6
significant digits; :func:`~epiformer_cli.variants.effects.as_printed`):

* ``diff_p`` = (1 + #null with |diff| >= |x|) / (1 + N): two-sided; how often a random SNV of the
  genome changes the prediction at least this much, in either direction. Never below 1 / (1 + N).
* ``log2fc_p``: the same for ``log2fc``.
* ``max_abs_p`` = (1 + #null with max_abs >= x) / (1 + N): one-sided (``max_abs`` is never negative).
* ``ref_quantile`` = #null with ref_sum <= x / N, for the allele's ``ref_sum``: where the site's
  predicted accessibility falls among random sites of the genome (0.99: more accessible than 99%
  of them). ``alt_quantile``: the same for ``alt_sum``, against the same null reference sums.

These are per-test p-values: a user testing many variants corrects for that (e.g. Benjamini-Hochberg).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from epiformer_cli.variants.effects import EFFECTS, as_printed
from epiformer_cli.variants.null import NullTable

#: calibrated columns, in output order.
CALIBRATED = ("diff_p", "log2fc_p", "max_abs_p", "ref_quantile", "alt_quantile")
_REF, _ALT, _DIFF, _LOG2FC, _MAX_ABS = (EFFECTS.index(n) for n in ("ref_sum", "alt_sum", "diff", "log2fc", "max_abs"))


class Calibration:
    """Turns effects into :data:`CALIBRATED` columns against one :class:`NullTable`.

    Args:
        null: the scored null.
        tracks: the tracks being scored, in result-row order (each must be in the null).
    """

    def __init__(self, null: NullTable, tracks) -> None:
        null.check_tracks(tracks)
        self.null = null
        self.tracks = list(tracks)
        self._sorted: Dict[str, Dict[str, np.ndarray]] = {}
        for track in self.tracks:
            values = null.tracks[track]
            self._sorted[track] = {
                "abs_diff": _finite_sorted(np.abs(values["diff"])),
                "abs_log2fc": _finite_sorted(np.abs(values["log2fc"])),
                "max_abs": _finite_sorted(values["max_abs"]),
                "ref_sum": _finite_sorted(values["ref_sum"]),
            }

    def sizes(self) -> Dict[str, int]:
        """Null SNVs per track (the N of the p-values)."""
        return {t: int(v["abs_diff"].size) for t, v in self._sorted.items()}

    def columns(self, result: np.ndarray) -> np.ndarray:
        """(tracks, len(EFFECTS)) effects -> (tracks, len(CALIBRATED)) float64; NaN where the effect is."""
        return self.columns_many(np.asarray(result)[None])[0]

    def columns_many(self, results: np.ndarray) -> np.ndarray:
        """(alleles, tracks, len(EFFECTS)) -> (alleles, tracks, len(CALIBRATED)) float64, vectorised."""
        results = np.array(results, dtype=np.float64)
        used = [_REF, _ALT, _DIFF, _LOG2FC, _MAX_ABS]
        results[..., used] = as_printed(results[..., used])
        out = np.empty(results.shape[:2] + (len(CALIBRATED),), dtype=np.float64)
        for t, track in enumerate(self.tracks):
            s, rows = self._sorted[track], results[:, t]
            out[:, t, 0] = upper_tail_p(s["abs_diff"], np.abs(rows[:, _DIFF]))
            out[:, t, 1] = upper_tail_p(s["abs_log2fc"], np.abs(rows[:, _LOG2FC]))
            out[:, t, 2] = upper_tail_p(s["max_abs"], rows[:, _MAX_ABS])
            out[:, t, 3] = quantile(s["ref_sum"], rows[:, _REF])
            out[:, t, 4] = quantile(s["ref_sum"], rows[:, _ALT])
        return out


    def for_tasks(self, tasks) -> Dict:
        """Calibrated columns of every scored task: {key: (tracks, len(CALIBRATED))} for a mapping
        of :class:`~epiformer_cli.variants.scoring.Task` (tasks without a result are left out)."""
        keys = [k for k, task in tasks.items() if task.result is not None]
        if not keys:
            return {}
        values = self.columns_many(np.stack([tasks[k].result for k in keys]))
        return dict(zip(keys, values))


def _finite_sorted(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.sort(values[np.isfinite(values)])


def upper_tail_p(null_sorted: np.ndarray, x) -> np.ndarray:
    """(1 + #null >= x) / (1 + N) for an ascending ``null_sorted``, elementwise; NaN where ``x`` is
    not finite or the null is empty."""
    x = np.asarray(x, dtype=np.float64)
    at_least = null_sorted.size - np.searchsorted(null_sorted, x, side="left")
    p = (1.0 + at_least) / (1.0 + null_sorted.size)
    return np.where(np.isfinite(x) & (null_sorted.size > 0), p, np.nan)


def quantile(null_sorted: np.ndarray, x) -> np.ndarray:
    """#null <= x / N for an ascending ``null_sorted``, elementwise; NaN where ``x`` is not finite
    or the null is empty."""
    x = np.asarray(x, dtype=np.float64)
    q = np.searchsorted(null_sorted, x, side="right") / max(null_sorted.size, 1)
    return np.where(np.isfinite(x) & (null_sorted.size > 0), q, np.nan)
