"""What ``qc.tsv`` and the QC figures say about each pseudo-bulk: its cells and fragments, their
duplicates and lengths, and how concentrated the signal is.

* ``cells``: barcodes of the table with at least one fragment; ``fragments``: their fragments on
  the FASTA's chromosomes (lines of the files); ``read_pairs``: the same weighed by the count
  column; ``duplicate_fraction``: ``1 - fragments / read_pairs`` (PCR duplicates among read pairs);
* ``fragments_per_cell``: the median over cells;
* ``top1pct_fraction``: the fraction of Tn5 insertions in the 1% of the genome's 128 bp bins with
  the most (a FRiP-like enrichment: ~0.01 for uniform noise, 0.2-0.5 for good ATAC);
* ``nucleosome_ratio``: fragments of 180-300 bp (one nucleosome) per fragment below 150 bp
  (nucleosome-free): the banding of a good library shows as a clear mono-nucleosome peak.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np

log = logging.getLogger(__name__)

QC_COLUMNS = ("cell_type", "cells", "fragments", "read_pairs", "duplicate_fraction", "fragments_per_cell",
              "top1pct_fraction", "nucleosome_ratio", "bigwig")


@dataclass
class CellTypeQC:
    """One row of ``qc.tsv`` (see the module docstring)."""

    cell_type: str
    cells: int
    fragments: int
    read_pairs: int
    fragments_per_cell: float
    top1pct_fraction: float
    nucleosome_ratio: float
    bigwig: str

    @property
    def duplicate_fraction(self) -> float:
        return 1.0 - self.fragments / self.read_pairs if self.read_pairs else float("nan")

    def cells_tsv(self) -> List[str]:
        def number(x: float) -> str:
            return "NA" if not np.isfinite(x) else f"{x:.4g}"

        return [self.cell_type, str(self.cells), str(self.fragments), str(self.read_pairs),
                number(self.duplicate_fraction), number(self.fragments_per_cell), number(self.top1pct_fraction),
                number(self.nucleosome_ratio), self.bigwig]


def nucleosome_ratio(lengths: np.ndarray) -> float:
    """(lengths,) fragments by length -> fragments of 180-300 bp per fragment below 150 bp."""
    free = float(lengths[:150].sum())
    mono = float(lengths[180:301].sum())
    return mono / free if free else float("nan")


def write_qc(path: Path, rows: Sequence[CellTypeQC]) -> None:
    from epiformer_cli.io.files import atomic_output

    with atomic_output(path, "w") as handle:
        handle.write("\t".join(QC_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(row.cells_tsv()) + "\n")


def plot_lengths(path: Path, types: Sequence[str], lengths: np.ndarray) -> None:
    """Fragment-length distribution per cell type (fraction of its fragments per bp, 0-1000 bp):
    the nucleosome-free peak below 150 bp and the mono-/di-nucleosome bands at ~200 and ~400."""
    from epiformer_cli.plotting import GRID_ALPHA, import_pyplot, plain, save_png

    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, counts in zip(types, lengths):
        total = counts.sum()
        if total:
            ax.plot(np.arange(len(counts) - 1), counts[:-1] / total, lw=1, label=plain(name))
    ax.set_xlabel("fragment length (bp)")
    ax.set_ylabel("fraction of fragments")
    ax.set_title("Fragment lengths per cell type (nucleosome banding)")
    ax.grid(alpha=GRID_ALPHA)
    if len(types) <= 20:
        ax.legend(fontsize=8, ncol=2 if len(types) > 8 else 1)
    save_png(fig, path, bbox_inches="tight")


def plot_fragments_per_cell(path: Path, types: Sequence[str], per_cell: Sequence[np.ndarray]) -> None:
    """Fragments per cell, one box per cell type (log scale), with the cells of each type."""
    from epiformer_cli.plotting import GRID_ALPHA, import_pyplot, plain, save_png

    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(types) + 2), 4.2))
    data = [np.maximum(np.asarray(c, dtype=np.float64), 1) for c in per_cell]
    shown = [d if len(d) else np.array([np.nan]) for d in data]
    ax.boxplot(shown, showfliers=False)
    rng = np.random.default_rng(0)  # a fixed jitter: the same inputs give the same figure
    for i, d in enumerate(data, 1):
        if len(d):
            sample = d if len(d) <= 2000 else rng.choice(d, 2000, replace=False)
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(sample)), sample, s=2, alpha=0.3, color="C0")
    ax.set_yscale("log")
    ax.set_xticks(range(1, len(types) + 1))
    ax.set_xticklabels([f"{plain(t)}\n({len(d):,} cells)" for t, d in zip(types, data)], rotation=45, ha="right",
                       fontsize=8)
    ax.set_ylabel("fragments per cell")
    ax.set_title("Fragments per cell")
    ax.grid(alpha=GRID_ALPHA, axis="y")
    save_png(fig, path, bbox_inches="tight")
