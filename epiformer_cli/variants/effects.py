"""Effect statistics of one variant on each track, from its ref and alt predictions.

Definitions (per track; ``ref_pred`` and ``alt_pred`` are (tracks, out_bins) predictions in
reference coordinates, after reverse-complement averaging when on):

* ``ref_sum``, ``alt_sum``: sum over the ``--score-bins`` bins centred on the variant;
* ``diff`` = alt_sum - ref_sum;  ``log2fc`` = log2((alt_sum + 1) / (ref_sum + 1));
* ``sad`` = sum over all output bins of (alt - ref);
* ``max_abs`` = the largest |alt - ref| over the output bins;
* ``l2`` = sqrt(sum over the output bins of (alt - ref)^2).
"""

from __future__ import annotations

import numpy as np

EFFECTS = ("ref_sum", "alt_sum", "diff", "log2fc", "sad", "max_abs", "l2")


def effects(ref_pred: np.ndarray, alt_pred: np.ndarray, first_bin: int, last_bin: int) -> np.ndarray:
    """(tracks, out_bins) ref and alt -> (tracks, len(EFFECTS)) float64, columns as in ``EFFECTS``."""
    ref = np.asarray(ref_pred, dtype=np.float64)
    alt = np.asarray(alt_pred, dtype=np.float64)
    delta = alt - ref
    ref_sum = ref[:, first_bin:last_bin].sum(-1)
    alt_sum = alt[:, first_bin:last_bin].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log2fc = np.log2((alt_sum + 1.0) / (ref_sum + 1.0))
    return np.stack([
        ref_sum, alt_sum, alt_sum - ref_sum, log2fc,
        delta.sum(-1), np.abs(delta).max(-1), np.sqrt((delta * delta).sum(-1)),
    ], axis=1)


def as_printed(values: np.ndarray) -> np.ndarray:
    """``values`` as the outputs print them (6 significant digits, ``%.6g``), back as float64.

    Calibration compares these, not the unrounded values: a variant sharing its window with null
    SNVs shares their exact ``ref_sum``, and the comparison must not hinge on digits the files do
    not hold (anyone recomputing a p-value from the output and the null file gets the same one).
    """
    values = np.asarray(values, dtype=np.float64)
    flat = [float(f"{v:.6g}") for v in values.ravel().tolist()]
    return np.asarray(flat, dtype=np.float64).reshape(values.shape)
