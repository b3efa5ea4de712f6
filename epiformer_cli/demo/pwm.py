"""Position weight matrices for the demo genome: read JASPAR count matrices, score, scan, sample.

Sequences here are uint8 base codes (A=0 C=1 G=2 T=3 N=4, see ``epiformer_cli.bases``);
positions are 0-based and a hit at ``start`` covers ``[start, start + width)`` on the forward strand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from epiformer_cli.bases import N
from epiformer_cli.errors import InputFileError

MOTIF_DIR = Path(__file__).resolve().parent / "motifs"

#: probability mixed into every column before taking log-odds, so that a base never seen in the
#: JASPAR sites costs a finite amount (about -4.7 bits) instead of minus infinity.
FLOOR = 0.01
#: the log-odds score given to an N inside a motif window (it can never be part of a hit).
N_SCORE = -50.0

_JASPAR_ROW = re.compile(r"^\s*([ACGT])\s*\[([^\]]*)\]\s*$")


@dataclass(frozen=True)
class Motif:
    """One JASPAR motif.

    Attributes:
        matrix_id: JASPAR ID, e.g. ``MA0139.1``.
        name: the factor, e.g. ``CTCF``.
        counts: (width, 4) position count matrix, columns A, C, G, T.
        threshold: relative score (0..1 between the worst and best possible log-odds) a window
            must reach to be a hit; set by the demo rules.
    """

    matrix_id: str
    name: str
    counts: np.ndarray
    threshold: float = 0.85

    @property
    def width(self) -> int:
        return int(self.counts.shape[0])

    @property
    def probabilities(self) -> np.ndarray:
        """(width, 4) base probabilities (columns sum to 1)."""
        return self.counts / self.counts.sum(axis=1, keepdims=True)

    @property
    def log_odds(self) -> np.ndarray:
        """(width, 5) log2-odds against a uniform background; column 4 (N) is ``N_SCORE``."""
        p = (self.probabilities + FLOOR) / (1.0 + 4 * FLOOR)
        table = np.full((self.width, 5), N_SCORE, dtype=np.float64)
        table[:, :4] = np.log2(p / 0.25)
        return table

    @property
    def information(self) -> np.ndarray:
        """(width,) information content of each column in bits."""
        p = self.probabilities
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)
        return 2.0 - h

    def score_range(self) -> Tuple[float, float]:
        lo = self.log_odds[:, :4].min(axis=1).sum()
        hi = self.log_odds[:, :4].max(axis=1).sum()
        return float(lo), float(hi)

    def relative(self, scores: np.ndarray) -> np.ndarray:
        """Raw log-odds scores -> relative scores in [0, 1] (N-containing windows go below 0)."""
        lo, hi = self.score_range()
        return (scores - lo) / (hi - lo)


def read_jaspar(path: Path, threshold: float = 0.85) -> Motif:
    """Read one motif in JASPAR format (``>ID<tab>name`` then rows ``A [ counts ]`` ... ``T``)."""
    text = Path(path).read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith(">"):
        raise InputFileError(f"{path}: not a JASPAR matrix (first line must start with '>')")
    fields = lines[0][1:].split(None, 1)
    matrix_id, name = fields[0], (fields[1].strip() if len(fields) > 1 else fields[0])
    rows: Dict[str, list] = {}
    for line in lines[1:5]:
        m = _JASPAR_ROW.match(line)
        if not m:
            raise InputFileError(f"{path}: cannot read matrix row {line!r}")
        rows[m.group(1)] = [float(x) for x in m.group(2).split()]
    if sorted(rows) != ["A", "C", "G", "T"] or len({len(v) for v in rows.values()}) != 1:
        raise InputFileError(f"{path}: needs four rows A, C, G, T of equal length")
    counts = np.array([rows[b] for b in "ACGT"], dtype=np.float64).T
    return Motif(matrix_id=matrix_id, name=name, counts=counts, threshold=threshold)


def reverse_complement_table(table: np.ndarray) -> np.ndarray:
    """(width, 5) score table of a motif -> table of its reverse complement (N stays N)."""
    rc = table[::-1].copy()
    rc[:, :4] = rc[:, 3::-1]
    return rc


def scan(codes: np.ndarray, motif: Motif) -> Tuple[np.ndarray, np.ndarray]:
    """Best-strand log-odds score of every window of a sequence.

    Args:
        codes: (length,) uint8 base codes.
        motif: the motif to score.

    Returns:
        (scores, strands): float32 arrays of shape (length - width + 1,); ``scores[i]`` scores the
        window ``[i, i + width)``, the better of the two strands; ``strands[i]`` is +1 or -1.
    """
    width = motif.width
    n = codes.shape[0] - width + 1
    if n <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int8)
    fwd_table = motif.log_odds.astype(np.float32)
    rev_table = reverse_complement_table(motif.log_odds).astype(np.float32)
    idx = np.minimum(codes, N).astype(np.intp)
    fwd = np.zeros(n, np.float32)
    rev = np.zeros(n, np.float32)
    for j in range(width):  # a loop over motif columns, not bases
        window = idx[j : j + n]
        fwd += fwd_table[j][window]
        rev += rev_table[j][window]
    strands = np.where(rev > fwd, -1, 1).astype(np.int8)
    return np.maximum(fwd, rev), strands


def score_at(codes: np.ndarray, motif: Motif, starts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Best-strand relative scores of the windows starting at ``starts`` (all must fit in codes).

    Returns:
        (relative scores, strands) for each start, like :func:`scan` but only where asked.
    """
    starts = np.asarray(starts, dtype=np.int64)
    cols = np.arange(motif.width)
    window = np.minimum(codes[starts[:, None] + cols[None, :]], N).astype(np.intp)
    fwd = motif.log_odds[cols[None, :], window].sum(axis=1)
    rev = reverse_complement_table(motif.log_odds)[cols[None, :], window].sum(axis=1)
    strands = np.where(rev > fwd, -1, 1).astype(np.int8)
    return motif.relative(np.maximum(fwd, rev)), strands


def window_score(codes: np.ndarray, motif: Motif) -> float:
    """Best relative score of the motif anywhere (either strand) in a short sequence."""
    scores, _ = scan(codes, motif)
    if scores.size == 0:
        return float("-inf")
    return float(motif.relative(scores).max())


def sample_sites(
    motif: Motif, count: int, rng: np.random.Generator, sharpen: float = 2.0, margin: float = 0.05
) -> np.ndarray:
    """Sample motif instances from the PWM, sharpened so that every instance is a clear hit.

    Columns are sampled independently from ``p ** sharpen`` (renormalised); instances whose relative
    score falls below ``threshold + margin`` are rejected and redrawn.

    Returns:
        (count, width) uint8 base codes, forward strand.
    """
    p = motif.probabilities ** sharpen
    p /= p.sum(axis=1, keepdims=True)
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0
    table = motif.log_odds[:, :4]
    cols = np.arange(motif.width)
    kept = []
    have = 0
    while have < count:
        draw = max(64, 2 * (count - have))
        u = rng.random((draw, motif.width))
        sites = (u[:, :, None] > cum[None, :, :]).sum(axis=2).astype(np.uint8)
        rel = motif.relative(table[cols[None, :], sites].sum(axis=1))
        good = sites[rel >= motif.threshold + margin]
        kept.append(good)
        have += good.shape[0]
    return np.concatenate(kept)[:count]
