"""The figures of ``evaluate``: the track-by-track heat map (``heatmap.png``), a density scatter of
predicted vs observed log(x + 1) per track (``scatter.png``) and example loci (``loci.png``).

matplotlib is imported lazily and each PNG saved atomically (:mod:`epiformer_cli.plotting`); names
from the user's files are drawn literally (:func:`~epiformer_cli.plotting.plain`). Each function
returns False, after one warning, when matplotlib is not installed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import List, Sequence

import numpy as np

from epiformer_cli.evaluate.bins import EvaluatedBins, Locus
from epiformer_cli.plotting import DPI, PLOTS_EXTRA, import_pyplot, plain, save_png

log = logging.getLogger(__name__)

#: tracks drawn at most in the scatter grid and in each locus (the table has them all).
MAX_SCATTER_TRACKS = 24
MAX_LOCUS_TRACKS = 8
#: hexagons across a scatter panel: a density, whatever the number of bins (millions draw in a second).
HEX_GRID = 60
#: heat-map cells get their value written in them up to this many tracks.
MAX_ANNOTATED = 12

_warned = False


def _pyplot():
    global _warned
    try:
        return import_pyplot()
    except ImportError:
        if not _warned:
            log.warning("evaluate's figures not drawn: matplotlib is not installed (%s)", PLOTS_EXTRA)
            _warned = True
        return None


def plot_heatmap(matrix: np.ndarray, tracks: Sequence[str], path: Path) -> bool:
    """Heat map of the (tracks, tracks) matrix: rows predicted tracks, columns observed tracks,
    colour Pearson r over the matrix's range (values written in the cells for up to
    :data:`MAX_ANNOTATED` tracks)."""
    plt = _pyplot()
    if plt is None:
        return False
    n = len(tracks)
    side = min(14.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    # the colours span the matrix's own range: what matters is whether each row peaks on the
    # diagonal, which a fixed -1..1 scale washes out when every r is 0.5-0.8
    finite = matrix[np.isfinite(matrix)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    image = ax.imshow(np.nan_to_num(matrix, nan=low), cmap="viridis", vmin=low, vmax=high)
    labels = [plain(t) for t in tracks]
    ax.set_xticks(range(n), labels, rotation=90 if n > 4 else 0, fontsize=8 if n > 12 else 10)
    ax.set_yticks(range(n), labels, fontsize=8 if n > 12 else 10)
    ax.set_xlabel("observed track")
    ax.set_ylabel("predicted track")
    ax.set_title("Pearson r of log(x + 1) per 128 bp bin")
    if n <= MAX_ANNOTATED:
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                text = "n/a" if math.isnan(value) else f"{value:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if np.nan_to_num(value, nan=low) > low + 0.6 * (high - low) else "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="r")
    save_png(fig, path, dpi=DPI, bbox_inches="tight")
    return True


def plot_scatter(bins: EvaluatedBins, pearson: Sequence[float], path: Path) -> bool:
    """One hexbin density panel per track (at most :data:`MAX_SCATTER_TRACKS`): observed log(x + 1)
    across, predicted log(x + 1) up, counts on a log colour scale, the track's r in the title."""
    plt = _pyplot()
    if plt is None:
        return False
    shown = list(range(min(len(bins.tracks), MAX_SCATTER_TRACKS)))
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for k, t in enumerate(shown):
        ax = axes[k // cols][k % cols]
        x = np.log1p(bins.target[:, t].astype(np.float64))
        y = np.log1p(bins.pred[:, t].astype(np.float64))
        if len(x):
            ax.hexbin(x, y, gridsize=HEX_GRID, bins="log", mincnt=1, cmap="viridis", linewidths=0)
            top = max(float(x.max()), float(y.max()), 1e-6)
            ax.plot([0, top], [0, top], color="0.5", linewidth=0.8, linestyle="--")
        ax.set_title(f"{plain(bins.tracks[t])}  r = {pearson[t]:.3f}", fontsize=9)
        ax.set_xlabel("observed log(x + 1)", fontsize=8)
        ax.set_ylabel("predicted log(x + 1)", fontsize=8)
        ax.tick_params(labelsize=7)
    for k in range(len(shown), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    save_png(fig, path, dpi=DPI)
    return True


def plot_loci(loci: List[Locus], tracks: Sequence[str], path: Path) -> bool:
    """Example loci side by side (columns), tracks stacked (rows, at most :data:`MAX_LOCUS_TRACKS`):
    observed signal filled grey, predicted as a line, per 128 bp bin."""
    plt = _pyplot()
    if plt is None or not loci:
        return False
    shown = list(range(min(len(tracks), MAX_LOCUS_TRACKS)))
    fig, axes = plt.subplots(len(shown), len(loci), figsize=(4.2 * len(loci), 1.3 * len(shown) + 0.8),
                             squeeze=False, sharex="col")
    for j, locus in enumerate(loci):
        x = locus.start + 128 * np.arange(len(locus.target)) + 64
        for i, t in enumerate(shown):
            ax = axes[i][j]
            ax.fill_between(x, locus.target[:, t], step="mid", color="0.75", linewidth=0, label="observed")
            ax.plot(x, locus.pred[:, t], color="tab:red", linewidth=1.0, drawstyle="steps-mid", label="predicted")
            ax.tick_params(labelsize=7)
            ax.margins(x=0)
            if j == 0:
                ax.set_ylabel(plain(tracks[t]), fontsize=8, rotation=0, ha="right", va="center")
        axes[0][j].set_title(f"{plain(locus.chrom)}:{locus.start:,}-{locus.end:,}", fontsize=9)
        axes[-1][j].set_xlabel("position (bp)", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    save_png(fig, path, dpi=DPI)
    return True
