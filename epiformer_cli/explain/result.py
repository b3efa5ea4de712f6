"""What explaining one span gives, whatever the method: per-base arrays in window order.

Shapes: L is the span's length in bp, T the number of tracks explained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Explanation:
    """One explained span.

    Attributes:
        codes: (L,) uint8 base codes of the span (A=0 C=1 G=2 T=3 N=4).
        matrix: (T, 4, L) float32: ISM effects (mutant minus reference of the summed prediction,
            0 at the reference base) or hypothetical contributions (gradient, mean over the four
            bases removed); NaN at N bases.
        contrib: (T, L) float32 contribution of each reference base (NaN at N bases).
        pred: (T, out_bins) float32 the window's reference prediction (views averaged).
        total: (T,) float64 the explained quantity: ``pred`` summed over the span's bins.
    """

    codes: np.ndarray
    matrix: np.ndarray
    contrib: np.ndarray
    pred: np.ndarray
    total: np.ndarray


def ism_contributions(effects: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(T, 4, L) ISM effects -> (T, L): minus the mean effect of the three mutations of each
    reference base (NaN at N bases)."""
    with np.errstate(invalid="ignore"):
        out = -np.asarray(effects, dtype=np.float64).sum(axis=1) / 3.0
    out[:, np.asarray(codes) > 3] = np.nan
    return out.astype(np.float32)


def project(matrix: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(T, 4, L) hypothetical contributions -> (T, L): the value at each reference base (NaN at N)."""
    codes = np.asarray(codes)
    known = codes < 4
    out = np.full(matrix.shape[::2], np.nan, dtype=np.float32)
    cols = np.flatnonzero(known)
    out[:, cols] = matrix[:, codes[cols], cols]
    return out
