"""TOMTOM, as ``memelite`` implements it: which database motifs each pattern resembles.

Each pattern's trimmed PPM (:attr:`~epiformer_cli.motifs.patterns.Pattern.trimmed_ppm`) is the
query; every motif of the database, on both strands, a target. TOMTOM gives the p-value of the best
alignment of each pair (the chance that a random database column set scores as well); the q-value
of a match is the Benjamini-Hochberg adjustment over that pattern's p-values against every motif of
the database (the false discovery rate if every match at least as good were called).
"""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np

from epiformer_cli.motifs.patterns import Match, Pattern

log = logging.getLogger(__name__)

#: matches kept per pattern
TOP_MATCHES = 3
#: memelite's p-values use the targets' columns as their background: below this many motifs they
#: depend on which motifs the database holds (memelite warns below 25; MEME's tomtom below 50)
FEW_TARGETS = 50


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """q-values of ``pvalues`` (1-D): ``min over j >= i of p_(j) * m / j`` in rank order, capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m, dtype=np.float64)
    q[order] = np.minimum(ranked, 1.0)
    return q


def match_patterns(patterns: Sequence[Pattern], motifs: Sequence, top: int = TOP_MATCHES) -> None:
    """Fill each pattern's :attr:`~Pattern.matches` with its ``top`` best database motifs (by
    p-value; ties by database order).

    Args:
        patterns: the patterns (their trimmed PPMs are the queries).
        motifs: the database's :class:`~epiformer_cli.motifs.database.Motif` objects ((4, L) pwm).
    """
    if not patterns or not motifs:
        return
    from memelite import tomtom

    if len(motifs) < FEW_TARGETS:
        log.warning("the motif database holds %d motif(s): TOMTOM's p-values use the database as their "
                    "background and are unreliable below %d motifs (use a whole database, e.g. the default "
                    "JASPAR)", len(motifs), FEW_TARGETS)
    queries = [np.ascontiguousarray(p.trimmed_ppm.T, dtype=np.float64) for p in patterns]
    targets = [np.ascontiguousarray(m.pwm, dtype=np.float64) for m in motifs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pvalues, _scores, offsets, _overlaps, strands = tomtom(queries, targets, n_nearest=None)[:5]
    for i, pattern in enumerate(patterns):
        q = benjamini_hochberg(pvalues[i])
        best = np.argsort(pvalues[i], kind="stable")[:top]
        pattern.matches = [Match(motif_id=motifs[j].motif_id, name=motifs[j].name, pvalue=float(pvalues[i, j]),
                                 qvalue=float(q[j]), strand="+-"[int(strands[i, j])],
                                 # memelite's offset is where the pattern starts along the motif
                                 offset=-int(offsets[i, j]),
                                 pwm=np.asarray(motifs[j].pwm)) for j in best]

