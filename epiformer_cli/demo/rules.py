"""The demo's accessibility rule: expected coverage per cell type as a function of the sequence.

Everything here is a pure function of motif hits found by scanning the final genome (plus local GC
content), so a sequence model can learn it exactly; the only randomness added afterwards is count
noise (see ``generator.sample_coverage``). Coordinates are 0-based, half-open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from epiformer_cli.demo.pwm import MOTIF_DIR, Motif, read_jaspar

#: the pseudo-bulk ATAC tracks (cell types), in the order of the targets sheet.
TRACKS: Tuple[str, ...] = ("microglia", "neuron", "oligodendrocyte")

#: motif files and the relative score (0..1) a window needs to count as a hit. Shorter, lower-
#: information motifs get stricter thresholds.
MOTIF_FILES: Tuple[Tuple[str, float], ...] = (
    ("MA0139.1_CTCF.jaspar", 0.80),
    ("MA0080.4_SPI1.jaspar", 0.80),
    ("MA0466.2_CEBPB.jaspar", 0.85),
    ("MA0099.2_FOS_JUN.jaspar", 0.90),
    ("MA0035.3_GATA1.jaspar", 0.85),
)

#: peak height (expected coverage at the hit centre, before the track depth) per track and motif.
AMPLITUDE: Dict[str, Dict[str, float]] = {
    "microglia": {"CTCF": 18.0, "SPI1": 14.0, "CEBPB": 10.0, "FOS::JUN": 6.0, "GATA1": 0.0},
    "neuron": {"CTCF": 18.0, "SPI1": 0.0, "CEBPB": 0.0, "FOS::JUN": 28.0, "GATA1": 0.0},
    "oligodendrocyte": {"CTCF": 18.0, "SPI1": 0.0, "CEBPB": 0.0, "FOS::JUN": 0.0, "GATA1": 26.0},
}
#: extra height where SPI1 and CEBPB hits sit together (within a few hundred bp), per track.
COOPERATIVE: Dict[str, float] = {"microglia": 30.0, "neuron": 0.0, "oligodendrocyte": 0.0}
COOP_PAIR: Tuple[str, str] = ("SPI1", "CEBPB")
#: sequencing depth of each track: multiplies its whole expected coverage (deep pseudo-bulk, so
#: that 128 bp bins are noisy but learnable).
DEPTH: Dict[str, float] = {"microglia": 2.0, "neuron": 2.4, "oligodendrocyte": 1.6}

#: peak shape: a Gaussian of this standard deviation (bp) around each hit centre.
PEAK_SIGMA = 60.0
#: the cooperative term uses wider Gaussians so that hits up to ~300 bp apart cooperate.
COOP_SIGMA = 150.0
#: broad background: BACKGROUND_BASE + BACKGROUND_GC_SLOPE * clip(GC - 0.30, 0, 0.40), where GC is
#: the G+C fraction of the surrounding BACKGROUND_GC_WINDOW bp.
BACKGROUND_BASE = 0.25
BACKGROUND_GC_SLOPE = 1.0
BACKGROUND_GC_WINDOW = 1001
#: artefact ("sticky") regions: flat expected coverage in every track, regardless of sequence.
ARTEFACT_LEVEL = 150.0
#: count noise: reads of this length whose centres are Poisson insertion events.
READ_LENGTH = 100


def load_motifs() -> List[Motif]:
    """The demo's motifs with their hit thresholds; a GATA1 matrix named ``Gata1`` is renamed."""
    motifs = []
    for filename, threshold in MOTIF_FILES:
        m = read_jaspar(MOTIF_DIR / filename, threshold=threshold)
        name = "GATA1" if m.name.upper() == "GATA1" else m.name
        motifs.append(Motif(m.matrix_id, name, m.counts, threshold))
    return motifs


@dataclass
class Hits:
    """Motif hits on one chromosome (one row per hit, arrays of equal length).

    Attributes:
        start: 0-based start of the hit window (forward-strand coordinates).
        motif: index into the motif list.
        strand: +1 or -1.
        rel: relative score in [threshold, 1].
    """

    start: np.ndarray
    motif: np.ndarray
    strand: np.ndarray
    rel: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def centre(self, motifs: Sequence[Motif]) -> np.ndarray:
        widths = np.array([m.width for m in motifs])[self.motif]
        return self.start + widths / 2.0

    def weight(self, motifs: Sequence[Motif]) -> np.ndarray:
        """Affinity weight in [0.5, 1]: 0.5 at the threshold, 1 for a perfect match."""
        thr = np.array([m.threshold for m in motifs])[self.motif]
        return 0.5 + 0.5 * np.clip((self.rel - thr) / (1.0 - thr), 0.0, 1.0)

    def select(self, keep: np.ndarray) -> "Hits":
        return Hits(self.start[keep], self.motif[keep], self.strand[keep], self.rel[keep])

    @staticmethod
    def empty() -> "Hits":
        z = np.zeros(0, np.int64)
        return Hits(z, z.copy(), z.copy(), np.zeros(0, np.float64))


def _gaussian_density(
    centres: np.ndarray, weights: np.ndarray, start: int, end: int, sigma: float
) -> np.ndarray:
    """Sum of weighted Gaussians (peak value = weight) evaluated at bases [start, end)."""
    length = end - start
    out = np.zeros(length, np.float64)
    if centres.size == 0:
        return out
    reach = int(np.ceil(4 * sigma))
    offsets = np.arange(-reach, reach + 1)
    base = np.floor(centres).astype(np.int64)
    pos = base[:, None] + offsets[None, :]
    # evaluate at base midpoints (x + 0.5) so a motif and its reverse complement give mirrored peaks
    vals = weights[:, None] * np.exp(-0.5 * ((pos + 0.5 - centres[:, None]) / sigma) ** 2)
    pos = pos - start
    ok = (pos >= 0) & (pos < length)
    return np.bincount(pos[ok], weights=vals[ok], minlength=length)[:length]


def background_level(codes: np.ndarray) -> np.ndarray:
    """Per-base broad background (before depth): a function of local GC content; 0 over N."""
    acgt = codes < 4
    gc = ((codes == 1) | (codes == 2)).astype(np.float64)
    half = BACKGROUND_GC_WINDOW // 2
    cs_gc = np.concatenate([[0.0], np.cumsum(gc)])
    cs_n = np.concatenate([[0.0], np.cumsum(acgt.astype(np.float64))])
    idx = np.arange(codes.shape[0])
    lo = np.maximum(idx - half, 0)
    hi = np.minimum(idx + half + 1, codes.shape[0])
    frac = (cs_gc[hi] - cs_gc[lo]) / np.maximum(cs_n[hi] - cs_n[lo], 1.0)
    level = BACKGROUND_BASE + BACKGROUND_GC_SLOPE * np.clip(frac - 0.30, 0.0, 0.40)
    return np.where(acgt, level, 0.0)


def hit_signal(
    hits: Hits, motifs: Sequence[Motif], start: int, end: int
) -> Dict[str, np.ndarray]:
    """Expected coverage from motif hits alone (no background, depth applied), bases [start, end).

    For track t: depth_t * ( sum_m A[t, m] * D_m(x) + C_t * min(1, E_SPI1(x)) * min(1, E_CEBPB(x)) )
    where D_m sums, over hits h of motif m, w_h * exp(-(x - c_h)^2 / (2 * 60^2)) and E_m is the same
    with a 150 bp standard deviation; c_h is the hit centre and w_h its affinity weight.
    """
    names = [m.name for m in motifs]
    centres = hits.centre(motifs)
    weights = hits.weight(motifs)
    dens = {}
    for i, name in enumerate(names):
        sel = hits.motif == i
        dens[name] = _gaussian_density(centres[sel], weights[sel], start, end, PEAK_SIGMA)
    coop = None
    if any(COOPERATIVE.values()):
        wide = []
        for name in COOP_PAIR:
            sel = hits.motif == names.index(name)
            wide.append(np.minimum(_gaussian_density(centres[sel], weights[sel], start, end, COOP_SIGMA), 1.0))
        coop = wide[0] * wide[1]
    out = {}
    for track in TRACKS:
        sig = np.zeros(end - start, np.float64)
        for name in names:
            amp = AMPLITUDE[track].get(name, 0.0)
            if amp:
                sig += amp * dens[name]
        if COOPERATIVE.get(track) and coop is not None:
            sig += COOPERATIVE[track] * coop
        out[track] = DEPTH[track] * sig
    return out


def expected_coverage(
    codes: np.ndarray,
    hits: Hits,
    motifs: Sequence[Motif],
    artefacts: Sequence[Tuple[int, int]] = (),
) -> Dict[str, np.ndarray]:
    """Per-base expected coverage of every track over one whole chromosome; 0 over N."""
    n = codes.shape[0]
    bg = background_level(codes)
    sig = hit_signal(hits, motifs, 0, n)
    is_n = codes >= 4
    out = {}
    for track in TRACKS:
        lam = DEPTH[track] * bg + sig[track]
        for a_start, a_end in artefacts:
            lam[a_start:a_end] = DEPTH[track] * ARTEFACT_LEVEL
        lam[is_n] = 0.0
        out[track] = lam
    return out


def tracks_driven_by(motif_name: str) -> List[str]:
    """Tracks in which a hit of this motif raises accessibility."""
    return [t for t in TRACKS if AMPLITUDE[t].get(motif_name, 0.0) > 0 or (COOPERATIVE.get(t) and motif_name in COOP_PAIR)]
