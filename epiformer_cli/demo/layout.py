"""The demo genome's layout, shared by every step that builds or describes it: the chromosomes and
their split, the sizes of gaps, repeats and isochores, the classes of planted elements, the record
of one chromosome that the steps fill in, and the seeded random streams they draw from.

Coordinates are 0-based, half-open.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from epiformer_cli.demo import rules

#: chromosome names and lengths (none a multiple of 128, so the last bin is always partial).
CHROM_SIZES: Tuple[Tuple[str, int], ...] = (
    ("chr1", 1_600_037),
    ("chr2", 1_200_011),
    ("chr3", 1_000_093),
    ("chrX", 800_059),
)
TRAIN_CHROMS: Tuple[str, ...] = ("chr1", "chrX")
VALID_CHROMS: Tuple[str, ...] = ("chr2",)
TEST_CHROMS: Tuple[str, ...] = ("chr3",)

#: per chromosome: N bases at its start, and how many N gaps, artefact regions and unaligned
#: (conservation-less) regions it holds.
LAYOUT: Dict[str, Dict[str, int]] = {
    "chr1": {"start_n": 10_000, "gaps": 1, "artefacts": 1, "unaligned": 0},
    "chr2": {"start_n": 0, "gaps": 1, "artefacts": 1, "unaligned": 1},
    "chr3": {"start_n": 0, "gaps": 1, "artefacts": 0, "unaligned": 1},
    "chrX": {"start_n": 0, "gaps": 1, "artefacts": 0, "unaligned": 1},
}
GAP_SIZE = (5_000, 50_000)
ARTEFACT_SIZE = (3_000, 8_000)
UNALIGNED_SIZE = (20_000, 60_000)
ISOCHORE_SIZE = (50_000, 300_000)
ISOCHORE_GC = (0.30, 0.60)
REPEAT_FRACTION = 0.12

#: planted element classes: (probability, motif sets to choose from). ``decoy`` elements are
#: conserved but carry only sub-threshold (broken) motifs, so they stay closed.
ELEMENT_CLASSES: Tuple[Tuple[str, float, Tuple[Tuple[str, ...], ...]], ...] = (
    ("ctcf", 0.14, (("CTCF",), ("CTCF", "CTCF"))),
    ("microglia_spi1", 0.10, (("SPI1",), ("SPI1", "SPI1"))),
    ("microglia_cebpb", 0.07, (("CEBPB",), ("CEBPB", "CEBPB"))),
    ("microglia_coop", 0.13, (("SPI1", "CEBPB"), ("SPI1", "CEBPB", "SPI1"), ("SPI1", "CEBPB", "CEBPB"))),
    ("neuron_ap1", 0.17, (("FOS::JUN",), ("FOS::JUN", "FOS::JUN"), ("FOS::JUN", "FOS::JUN", "FOS::JUN"))),
    ("oligodendrocyte_gata", 0.17, (("GATA1",), ("GATA1", "GATA1"), ("GATA1", "GATA1", "GATA1"))),
    ("neuron_oligodendrocyte", 0.06, (("FOS::JUN", "GATA1"),)),
    (
        "promoter_mixed",
        0.08,
        (("CTCF", "SPI1"), ("CTCF", "FOS::JUN"), ("CTCF", "GATA1", "FOS::JUN"), ("SPI1", "CEBPB", "FOS::JUN", "CTCF")),
    ),
    ("decoy", 0.08, (("SPI1", "CEBPB"), ("FOS::JUN", "GATA1"), ("CTCF",), ("GATA1", "GATA1"))),
)
ELEMENT_LENGTH = (200, 500)
#: spacing between element centres: ELEMENT_MIN_SPACING + exponential(ELEMENT_MEAN_EXTRA) bp.
ELEMENT_MIN_SPACING = 1_000
ELEMENT_MEAN_EXTRA = 2_000
#: lone motif instances (unconserved, outside elements) per Mb.
LONE_PER_MB = 40


@dataclass
class Chrom:
    """Everything built for one chromosome (arrays are per base, 0-based)."""

    name: str
    size: int
    codes: np.ndarray
    lower: np.ndarray
    conservation: np.ndarray  # float32, NaN where missing
    gaps: List[Tuple[int, int]] = field(default_factory=list)
    artefacts: List[Tuple[int, int]] = field(default_factory=list)
    unaligned: List[Tuple[int, int]] = field(default_factory=list)
    elements: List[Tuple[int, int, str]] = field(default_factory=list)
    planted: List[Tuple[int, int, int, str]] = field(default_factory=list)  # start, motif, strand, kind
    hits: rules.Hits = field(default_factory=rules.Hits.empty)
    expected: Dict[str, np.ndarray] = field(default_factory=dict)
    coverage: Dict[str, np.ndarray] = field(default_factory=dict)


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """An independent random stream for one part of the build, stable under unrelated changes."""
    return np.random.default_rng([seed] + [zlib.crc32(k.encode()) for k in keys])
