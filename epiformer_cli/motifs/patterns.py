"""The patterns TF-MoDISco finds, and the database motifs TOMTOM matches them to.

Matrices are (L, 4) in A, C, G, T column order, L the pattern's length in bp, as modisco-lite
stores them; database motifs are kept as (4, L) probabilities the way memelite takes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

#: a pattern is named after its best database match when that match's q-value is at most this
NAMED_Q = 0.05


@dataclass
class Match:
    """One database motif matched to a pattern by TOMTOM.

    Attributes:
        motif_id: the motif's identifier (``MA0139.2``); name: its alternate name (``CTCF``), or ``""``.
        pvalue, qvalue: TOMTOM's p-value of the best alignment, and its q-value (Benjamini-Hochberg
            over the pattern's p-values against every motif of the database).
        strand: ``+`` the motif as stored aligns to the pattern, ``-`` its reverse complement does.
        offset: the position of the motif's first column (the motif on ``strand``) along the trimmed
            pattern (negative: the motif starts before the pattern).
        pwm: (4, L_motif) the motif's probabilities as stored (not reverse-complemented).
    """

    motif_id: str
    name: str
    pvalue: float
    qvalue: float
    strand: str
    offset: int
    pwm: np.ndarray

    @property
    def label(self) -> str:
        """``ID (NAME)``, or the bare id when the motif has no alternate name."""
        return f"{self.motif_id} ({self.name})" if self.name else self.motif_id

    @property
    def short(self) -> str:
        """The name a reader knows the factor by: the alternate name, else the id."""
        return self.name or self.motif_id


@dataclass
class Pattern:
    """One TF-MoDISco pattern of one track.

    Attributes:
        name: ``<track>_<sign>_<index>`` (``microglia_pos_0``): unique within a motifs run.
        track, sign (``pos``: the sites raise the prediction, ``neg``: they lower it), index: the
            pattern's number within its track and sign, as modisco-lite numbers them (by seqlets).
        ppm: (L, 4) base frequencies over the pattern's seqlets.
        cwm: (L, 4) mean contribution of each base at each position (contribution-weighted matrix).
        hcwm: (L, 4) mean hypothetical contribution.
        seqlets: how many seqlets the pattern holds.
        trim: (start, end) of the columns kept for matching and scanning (:func:`trim_span`: where
            the summed |cwm| reaches 30% of its maximum, modisco-lite's report convention, without
            near-uniform columns at the edges).
        matches: up to three best database matches, best first.
    """

    name: str
    track: str
    sign: str
    index: int
    ppm: np.ndarray
    cwm: np.ndarray
    hcwm: np.ndarray
    seqlets: int
    trim: Tuple[int, int]
    matches: List[Match] = field(default_factory=list)

    @property
    def best(self) -> Optional[Match]:
        return self.matches[0] if self.matches else None

    @property
    def factor(self) -> str:
        """The short name of the best match when its q-value is at most :data:`NAMED_Q`, else ``""``."""
        best = self.best
        return best.short if best is not None and best.qvalue <= NAMED_Q else ""

    @property
    def label(self) -> str:
        """``microglia_pos_0 (SPI1)``: the pattern and its :attr:`factor`, or the bare name."""
        return f"{self.name} ({self.factor})" if self.factor else self.name

    @property
    def trimmed_ppm(self) -> np.ndarray:
        """(L_trim, 4) frequencies of the trimmed columns."""
        return self.ppm[self.trim[0]:self.trim[1]]

    def consensus(self) -> str:
        """The trimmed pattern's most frequent base per position (lower case where its frequency
        is below 0.5)."""
        out = []
        for column in self.trimmed_ppm:
            base = "ACGT"[int(np.argmax(column))]
            out.append(base if column.max() >= 0.5 else base.lower())
        return "".join(out)


def trim_span(cwm: np.ndarray, ppm: Optional[np.ndarray] = None, fraction: float = 0.3,
              frequency: float = 0.5) -> Tuple[int, int]:
    """(start, end) of the columns kept for matching and scanning.

    First modisco-lite's report convention: from the first to the last column whose summed |cwm|
    reaches ``fraction`` of the largest. Then, with ``ppm``, columns at either end whose commonest
    base has a frequency below ``frequency`` are dropped: a pattern of noise has a flat |cwm| and
    would otherwise be matched over its whole width, where long runs of near-uniform columns
    resemble long database motifs (a 28 bp noise pattern "matched" CTCF at q 1e-10 in a test).

    Args:
        cwm: (L, 4) contribution-weighted matrix; ppm: (L, 4) base frequencies.
    """
    score = np.abs(np.asarray(cwm, dtype=np.float64)).sum(axis=1)
    keep = np.flatnonzero(score >= score.max() * fraction)
    if keep.size == 0:
        return 0, len(score)
    start, end = int(keep[0]), int(keep[-1]) + 1
    if ppm is not None:
        strong = np.flatnonzero(np.asarray(ppm, dtype=np.float64)[start:end].max(axis=1) >= frequency)
        if strong.size:
            start, end = start + int(strong[0]), start + int(strong[-1]) + 1
    return start, end
