"""The figures of ``score-variants --plots DIR``: how the input's calibrated scores compare with the
genome-wide null of random SNVs (``qq.png``, ``diff_vs_null.png``) and which alleles change the
prediction most (``top_variants.png``).

matplotlib is the ``plots`` extra: it is imported inside the functions (with the Agg backend, never a
display), so importing this module stays cheap; without it :func:`write_calibration_plots` raises
UsageError naming the extra. ``diff`` is the predicted alt_sum - ref_sum of a track (the track's
units: predicted accessibility summed over the scored 128 bp bins); ``diff_p`` is its two-sided
empirical p-value against N null SNVs, ``(1 + #null with |diff| >= |x|) / (1 + N)``, so it is never
below ``1 / (N + 1)`` (the "null floor": no null SNV changed the prediction as much).

The choices a reader relies on (the order of the top variants, the p-value written beside each
bar, lambda) are small pure functions, tested without looking at pixels. Every name from the user's
files goes through :func:`~epiformer_cli.plotting.plain` (no mathtext from a ``$``).
"""

from __future__ import annotations

import logging
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.errors import UsageError
from epiformer_cli.plotting import DPI, GRID_ALPHA, PLOTS_EXTRA, import_pyplot, plain, save_png

log = logging.getLogger(__name__)

PLOT_NAMES = ("qq.png", "diff_vs_null.png", "top_variants.png")
MISSING_MATPLOTLIB = f"--plots needs matplotlib: {PLOTS_EXTRA}"

#: At most this many tracks get a panel; the figure titles say how many were left out.
MAX_TRACKS = 16
#: Up to this many tracks share one Q-Q panel (one colour each, with a legend); more get a grid.
_SHARED_QQ_TRACKS = 6
#: The Q-Q plot keeps every one of this many smallest p-values (the tail a reader looks at) ...
QQ_EXACT = 10_000
#: ... and thins the rest so that a track never puts more than this many points on the axes: a
#: million markers make a slow, large PNG that shows nothing more than 20,000 do.
QQ_MAX_POINTS = 20_000
#: At most this many bars in top_variants.png.
MAX_TOP = 30
#: diff_vs_null.png: bins per panel, and the quantiles (of the input and of the null, each) that the
#: shared bins span; values beyond are counted in the end bins, so the long tails do not squash the
#: peak at 0 into one bin while the log-scaled density still shows them.
_HIST_BINS = 60
_HIST_QUANTILES = (0.001, 0.999)
#: The median of a chi-square with 1 degree of freedom: lambda = median chi2 / this.
_CHI2_1_MEDIAN = 0.454936423119572
_LABEL_LIMIT = 70
#: Inches: a grid figure is never narrower, so that its title fits.
_MIN_GRID_WIDTH = 7.5
_GAIN, _LOSS, _ZERO, _NULL = "tab:red", "tab:blue", "0.6", "0.35"
#: what ``diff`` is, when the caller does not say how many bins were scored.
DIFF_UNIT = "predicted accessibility summed over the scored 128 bp bins around the variant"
#: lambda as :func:`inflation` computes it, for the Q-Q plot's legend.
LAMBDA_TEXT = ("λ = genomic inflation: median observed χ² / median expected χ² (0.455), each diff_p read as "
               "a χ² with 1 df; 1 = calibrated (diff_p uniform, as for random SNVs), above 1 = the alleles "
               "change the prediction more than random SNVs do")


def diff_unit(score_bins: Optional[int] = None, bin_bp: int = 128) -> str:
    """The unit of ``diff`` for an axis label: what a run scored (``--score-bins``)."""
    if score_bins is None:
        return DIFF_UNIT
    return f"predicted accessibility summed over the {score_bins:,} scored {bin_bp} bp bins around the variant"


@dataclass
class TrackPlotData:
    """One track's values for the plots."""

    track: str
    diff: np.ndarray  # (n,) float64: the input's ok alleles' diff (track units); NaN allowed, not drawn
    diff_p: np.ndarray  # (n,) float64: their diff_p, in (0, 1]; NaN allowed, not drawn
    null_diff: np.ndarray  # (N,) float64: the null SNVs' diff (track units); NaN allowed, not drawn


@dataclass
class TopVariant:
    label: str  # e.g. "chr1:12,345 A>G rs123" (already formatted by the caller)
    track: str
    diff: float
    diff_p: float


def require_matplotlib():
    """``matplotlib.pyplot`` (Agg backend, config folder kept out of HOME), or UsageError with the
    extra to install. A caller can call it before hours of scoring, to fail first."""
    try:
        return import_pyplot()
    except ImportError as exc:
        raise UsageError(MISSING_MATPLOTLIB) from exc


def write_calibration_plots(folder: Path, tracks: Sequence[TrackPlotData], top: Sequence[TopVariant],
                            null_size: int, seed: int, unit: str = DIFF_UNIT) -> List[Path]:
    """Write qq.png, diff_vs_null.png and top_variants.png into folder (created if missing); return their paths.

    Args:
        folder: the output folder; each PNG is written atomically (replaced if it exists).
        tracks: one entry per track, in the output's track order; the first :data:`MAX_TRACKS` get
            a panel.
        top: the alleles with the largest |diff|; they are drawn in :func:`rank_top` order and the
            first :data:`MAX_TOP` get a bar.
        null_size: N, the number of null SNVs (the floor of diff_p is 1 / (N + 1)).
        seed: the seed that drew the null SNVs (shown in the titles).
        unit: what ``diff`` measures, for the axis labels (:func:`diff_unit`).
    Raises UsageError when matplotlib is missing or ``folder`` is a file.
    """
    plt = require_matplotlib()
    from epiformer_cli.runs import check_output_dir

    folder = Path(folder)
    check_output_dir(folder, option="--plots")
    folder.mkdir(parents=True, exist_ok=True)
    null_text = f"a genome-wide null of N = {null_size:,} SNVs (seed {seed})"
    floor = null_floor(null_size)
    shown, left_out = list(tracks[:MAX_TRACKS]), max(len(tracks) - MAX_TRACKS, 0)
    paths = [folder / name for name in PLOT_NAMES]
    _save(plt, _qq_figure(plt, shown, left_out, null_size, floor, null_text), paths[0])
    _save(plt, _diff_figure(plt, shown, left_out, null_size, null_text, unit), paths[1])
    _save(plt, _top_figure(plt, list(top), null_size, null_text, unit), paths[2])
    return paths


def null_floor(null_size: int) -> float:
    """-log10 of the smallest possible diff_p, 1 / (N + 1)."""
    return math.log10(max(int(null_size), 0) + 1)


def qq_points(diff_p: np.ndarray, exact: int = QQ_EXACT,
              max_points: int = QQ_MAX_POINTS) -> Tuple[np.ndarray, np.ndarray]:
    """The Q-Q plot's points of one track: (expected, observed), both -log10 p, smallest p first.

    Args:
        diff_p: (n,) p-values; NaN, non-positive and non-finite values are dropped, values above 1
            count as 1.
        exact: the points of this many smallest p-values are all kept.
        max_points: at most this many points are returned (``exact < max_points``).
    Returns two (m,) float64 arrays, m = min(n, max_points): ``expected[j]`` is -log10((i + 0.5) / n)
    for the 0-based rank i (ascending p) of point j, uniform order statistics; ``observed[j]`` is
    -log10 of the p of rank i. All ranks below ``exact`` and the largest p (rank n - 1) are kept;
    the other ranks are chosen evenly spaced in expected -log10 p, so the bulk near 0, where nearly
    all points fall on one spot, costs few of them.
    """
    if not 0 <= exact < max_points:
        raise ValueError(f"qq_points needs 0 <= exact < max_points, got {exact} and {max_points}")
    p = np.asarray(diff_p, dtype=np.float64).ravel()
    p = np.minimum(p[np.isfinite(p) & (p > 0)], 1.0)
    n = p.size
    if n == 0:
        return np.empty(0), np.empty(0)
    p.sort()
    if n <= max_points:
        keep = np.arange(n)
    else:
        # Rank i sits at expected e(i) = -log10((i + 0.5) / n), so the rank nearest to a grid value g
        # is n * 10**-g - 0.5: a grid evenly spaced between the last exact rank and the largest p.
        budget = max_points - exact - 1  # the largest p is added on its own
        grid = np.linspace(-math.log10((n - 0.5) / n), -math.log10((exact + 0.5) / n), budget)
        ranks = np.clip(np.rint(n * 10.0 ** -grid - 0.5).astype(np.int64), exact, n - 1)
        keep = np.unique(np.concatenate([np.arange(exact), ranks, [n - 1]]))
    expected = -np.log10((keep + 0.5) / n)
    observed = 0.0 - np.log10(p[keep])  # 0.0 - : p = 1 gives 0, not -0
    return expected, observed


def inflation(diff_p: np.ndarray) -> Optional[float]:
    """A genomic-inflation-like lambda of one track: the chi-square (1 df) quantile of the median
    p-value over the chi-square median (1 for p-values uniform like the null's; above 1 when the
    input scores higher than random SNVs). That is the median of the p-values read as chi-square
    values over the chi-square median (the transform is monotone; for an even count the two middle
    p-values are averaged first). None without a finite p-value."""
    p = np.asarray(diff_p, dtype=np.float64)
    p = p[np.isfinite(p) & (p > 0)]
    if p.size == 0:
        return None
    median = min(float(np.median(p)), 1.0)
    z = NormalDist().inv_cdf(1.0 - median / 2.0)
    return z * z / _CHI2_1_MEDIAN


def top_key(diff: float, diff_p: float, order: int) -> Tuple[float, float, int]:
    """How strong a (allele, track) row is for the top-variants chart, as a tuple that sorts
    weakest first: larger |diff| is stronger; at equal |diff| the smaller diff_p, then the row
    that came first in the output (``order``: its 0-based rank among the rows). A NaN diff_p
    counts as 1."""
    p = float(diff_p) if math.isfinite(diff_p) else 1.0
    return abs(float(diff)), -p, -int(order)


def rank_top(variants: Sequence[TopVariant]) -> List[TopVariant]:
    """``variants`` strongest first (:func:`top_key`; ``order`` is the position in ``variants``)."""
    keyed = [(top_key(v.diff, v.diff_p, i), i) for i, v in enumerate(variants)]
    return [variants[i] for _, i in sorted(keyed, reverse=True)]


def at_floor(diff_p: float, null_size: int) -> bool:
    """Whether ``diff_p`` is the null floor 1 / (N + 1), as printed (6 significant digits)."""
    return null_size > 0 and math.isfinite(diff_p) and diff_p <= (1.0 + 1e-5) / (null_size + 1)


def p_text(diff_p: float, null_size: int) -> str:
    """The p-value written beside a bar: ``p ≤ 1/10,001`` at the null floor (no null SNV changed
    the prediction as much: the p-value is at most that, the null cannot say how much smaller),
    else ``p = 0.0023`` (2 significant digits), ``p NA`` when missing."""
    if not math.isfinite(diff_p):
        return "p NA"
    if at_floor(diff_p, null_size):
        return f"p ≤ 1/{null_size + 1:,}"
    return f"p = {diff_p:.2g}"


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _grid(plt, count: int, width: float, height: float, *, gap: Tuple[float, float], top: float = 0.85,
          bottom: float = 0.75, **kwargs):
    """A figure with one panel of ``width`` x ``height`` inches per track (count >= 1), at most 4
    per row, unused panels hidden; ``gap`` is (across, down) between panels, ``top`` and ``bottom``
    the margins above and below the panels (title, legend; x labels), in inches.

    The margins are fixed rather than left to constrained layout: for 16 panels that layout costs
    several seconds per figure (it measures every tick label of every panel), and the panels here
    all have the same furniture, so fixed room for it is enough.
    """
    ncols = min(count, 4)
    nrows = math.ceil(count / ncols)
    left, right = 0.95, 0.25  # inches: y label and tick labels; the last tick label's overhang
    fig_w = left + right + ncols * width + (ncols - 1) * gap[0]
    if fig_w < _MIN_GRID_WIDTH:  # room for the title above a single narrow panel: centre it
        left, right = left + (_MIN_GRID_WIDTH - fig_w) / 2, right + (_MIN_GRID_WIDTH - fig_w) / 2
        fig_w = _MIN_GRID_WIDTH
    fig_h = top + bottom + nrows * height + (nrows - 1) * gap[1]
    fig, axes = plt.subplots(nrows, ncols, figsize=(fig_w, fig_h), squeeze=False, **kwargs)
    fig.subplots_adjust(left=left / fig_w, right=1 - right / fig_w, top=1 - top / fig_h, bottom=bottom / fig_h,
                        wspace=gap[0] / width, hspace=gap[1] / height)
    axes = axes.ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax in axes[max(count - ncols, 0):count]:
        # Shared x axes label only the bottom row; above a hidden panel a row is the bottom one.
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, axes[:count]


def _grid_ylabel(fig, ax, text: str) -> None:
    """The y label of a grid, 0.8 inch left of its first column (clear of the tick labels)."""
    fig.supylabel(text, x=ax.get_position().x0 - 0.8 / fig.get_figwidth(), fontsize=10)


def _title(what: str, null_text: str, shown: int, left_out: int) -> str:
    title = f"{what} against {null_text}"
    if left_out:
        title += f"\nfirst {shown} of {shown + left_out} tracks shown: {left_out} left out"
    return title


def _empty_text(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.3",
            bbox=dict(facecolor="white", edgecolor="0.8", alpha=0.9))


def _short(text: str, limit: int = _LABEL_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _qq_figure(plt, tracks: List[TrackPlotData], left_out: int, null_size: int, floor: float, null_text: str):
    """qq.png: expected against observed -log10 diff_p per track, with y = x and the null floor.

    The legend (with what lambda is) sits outside the data: beside the panel when the tracks share
    one, in the margins of a grid.
    """
    points = [qq_points(t.diff_p) for t in tracks]
    top = max([floor] + [float(v.max()) for pair in points for v in pair if v.size])
    limit = top * 1.05 + 0.05
    shared = len(tracks) <= _SHARED_QQ_TRACKS
    if shared:
        fig, ax = plt.subplots(figsize=(9.5, 6.0), layout="constrained")
        axes = [ax] * max(len(tracks), 1)
    else:
        title_lines = 1 + bool(left_out) + 2  # the title, what was left out, lambda's two lines
        fig, axes = _grid(plt, len(tracks), 3.0, 2.8, gap=(0.25, 0.45), top=0.45 + 0.2 * title_lines,
                          bottom=1.0, sharex=True, sharey=True)
    for i, (track, (expected, observed)) in enumerate(zip(tracks, points)):
        ax = axes[i]
        colour = f"C{i}" if shared else "C0"
        name = plain(_short(track.track, 40))
        if expected.size:
            label = f"{name} (n = {_plotted_count(track.diff_p):,}, λ = {inflation(track.diff_p):.2f})"
            ax.plot(expected, observed, ".", color=colour, markersize=3, alpha=0.7, label=label)
        elif shared:
            label = f"{name}: no scored alleles"
            ax.plot([], [], linestyle="none", label=label)  # the legend names the empty track
        if not shared:
            ax.set_title(label if expected.size else name, fontsize=9)
            if not expected.size:
                _empty_text(ax, "no scored alleles")
    if not tracks:
        _empty_text(axes[0], "no tracks")
    elif shared and not any(expected.size for expected, _ in points):
        _empty_text(axes[0], "no scored alleles")
    floor_label = (f"null floor: diff_p = 1/(N + 1) = 1/{null_size + 1:,}\n(no null SNV changed the prediction "
                   "as much)")
    for ax in (axes[:1] if shared else axes):
        ax.plot([0, limit], [0, limit], "-", color="0.5", linewidth=0.8, label="y = x (diff_p uniform)")
        ax.axhline(floor, linestyle="--", color="0.2", linewidth=0.9, label=floor_label)
        ax.set_xlim(0, limit)
        ax.set_ylim(0, limit)
        ax.grid(alpha=GRID_ALPHA)
    xlabel = "expected -log10 p (uniform order statistics of n p-values)"
    ylabel = "observed -log10 diff_p"
    suptitle = _title("diff_p Q-Q", null_text, len(tracks), left_out)
    if shared:
        axes[0].set_xlabel(xlabel)
        axes[0].set_ylabel(ylabel)
        # beside the axes (constrained layout makes room), never over the points at the floor
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8, markerscale=3,
                       title=textwrap.fill(LAMBDA_TEXT, 44), title_fontsize=8, alignment="left")
    else:
        fig.supxlabel(xlabel, y=0.15 / fig.get_figheight(), fontsize=10)
        _grid_ylabel(fig, axes[0], ylabel)
        fig.legend(*_lines_only(axes[0]), loc="lower right", fontsize=7, ncol=2, frameon=False,
                   bbox_to_anchor=(1 - 0.25 / fig.get_figwidth(), 0.02))
        suptitle += "\n" + textwrap.fill(LAMBDA_TEXT, 120)
    fig.suptitle(suptitle, fontsize=10)
    return fig


def _plotted_count(diff_p: np.ndarray) -> int:
    """How many of a track's p-values are plotted (finite and positive)."""
    p = np.asarray(diff_p, dtype=np.float64)
    return int(np.count_nonzero(np.isfinite(p) & (p > 0)))


def _lines_only(ax):
    """The legend entries of the reference lines (diagonal, floor), not of the track's points."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, l) for h, l in zip(handles, labels) if l.startswith(("y = x", "null floor"))]
    return [h for h, _ in keep], [l for _, l in keep]


def diff_bins(diff: np.ndarray, null_diff: np.ndarray, bins: int = _HIST_BINS) -> np.ndarray:
    """(bins + 1,) shared bin edges for one track, symmetric about 0 (so gains and losses read
    alike): out to the largest |value| among the 0.1% and 99.9% quantiles of the input and of the
    null, each taken on its own so that a million input values do not hide the null's tails.
    ``diff`` and ``null_diff`` are finite; at least one is non-empty. All zeros give [-1, 1]."""
    ends = [np.quantile(v, _HIST_QUANTILES) for v in (diff, null_diff) if v.size]
    half = float(np.max(np.abs(ends))) if ends else 0.0
    if not half > 0:
        half = float(max([np.max(np.abs(v)) for v in (diff, null_diff) if v.size] + [0.0])) or 1.0
    return np.linspace(-half, half, bins + 1)


def _density(values: np.ndarray, edges: np.ndarray) -> Tuple[np.ndarray, int]:
    """(bins,) density of ``values`` on ``edges`` (values beyond counted in the end bins), and how
    many were beyond."""
    beyond = int(np.count_nonzero((values < edges[0]) | (values > edges[-1])))
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return counts / (values.size * np.diff(edges)), beyond


def _diff_figure(plt, tracks: List[TrackPlotData], left_out: int, null_size: int, null_text: str,
                 unit: str = DIFF_UNIT):
    """diff_vs_null.png: per track, the density of the input's diff and of the null's on shared bins.

    One legend for every panel, under the title (the styles are the same in each); the counts are
    in each panel's title, the unit of diff under the panels.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullLocator

    title = _title("diff of the input's alleles", null_text, len(tracks), left_out)
    title_lines = title.count("\n") + 1
    fig, axes = _grid(plt, max(len(tracks), 1), 3.6, 2.6, gap=(0.75, 0.95), top=0.75 + 0.2 * title_lines,
                      bottom=1.05)
    if not tracks:
        _empty_text(axes[0], "no tracks")
    styles = {"null": (_NULL, "--"), "input": ("C1", "-")}
    for ax, track in zip(axes, tracks):
        diff, null = _finite(track.diff), _finite(track.null_diff)
        ax.set_title(f"{plain(_short(track.track, 40))} (n = {diff.size:,} alleles)", fontsize=9)
        if not diff.size and not null.size:
            _empty_text(ax, "no scored alleles, no null values")
            continue
        edges = diff_bins(diff, null)
        beyond = []
        for values, name in ((null, "null"), (diff, "input")):
            if not values.size:
                continue
            density, outside = _density(values, edges)
            colour, style = styles[name]
            ax.stairs(density, edges, color=colour, linestyle=style, linewidth=1.2)
            beyond.append(f"{outside:,} {name}")
        ax.set_yscale("log")  # the peak at 0 is orders of magnitude above the tails
        # No minor ticks: 16 log axes' worth of them took seconds to lay out, and add nothing here.
        ax.yaxis.set_minor_locator(NullLocator())
        ax.axvline(0.0, color="0.7", linewidth=0.6)
        ax.grid(alpha=GRID_ALPHA)
        ax.set_xlabel(f"diff (alt - ref)\nbeyond ±{edges[-1]:.3g}, in the end bins: " + ", ".join(beyond),
                      fontsize=7)
        if not diff.size:
            _empty_text(ax, "no scored alleles")
    _grid_ylabel(fig, axes[0], "density: fraction of alleles per unit of diff (log scale)")
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / fig.get_figheight(), va="top")
    handles = [Line2D([], [], color=_NULL, linestyle="--", label=f"null: N = {null_size:,} random SNVs"),
               Line2D([], [], color="C1", label="input: the scored alleles")]
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - (0.15 + 0.2 * title_lines) / fig.get_figheight()))
    width = max(int(fig.get_figwidth() * 13), 60)  # characters of 9 pt text that fit across the figure
    fig.supxlabel(textwrap.fill(f"diff = alt_sum - ref_sum: {unit}, in each track's units", width),
                  y=0.08 / fig.get_figheight(), va="bottom", fontsize=9)
    return fig


def _top_figure(plt, top: List[TopVariant], null_size: int, null_text: str, unit: str = DIFF_UNIT):
    """top_variants.png: the (allele, track) rows with the largest |diff| as bars of |diff|, largest
    at the top (:func:`rank_top`), coloured by the sign of diff, each labelled with its signed diff
    and its diff_p (:func:`p_text`). The legend is under the axes, clear of the bars."""
    from matplotlib.patches import Patch

    ranked = rank_top(top)
    shown = ranked[:MAX_TOP]
    fig, ax = plt.subplots(figsize=(10.0, 2.4 + 0.28 * max(len(shown), 3)), layout="constrained")
    what = f"The {len(shown)} largest |diff| over all alleles and tracks" + (
        f" (first {MAX_TOP} of {len(top):,})" if len(top) > MAX_TOP else "")
    fig.suptitle(f"{what}, with their diff_p against {null_text}", fontsize=10)
    if not shown:
        _empty_text(ax, "no variants to show")
        ax.set_axis_off()
        return fig
    diffs = np.array([v.diff for v in shown], dtype=np.float64)
    sizes = np.abs(diffs)
    colours = np.where(diffs > 0, _GAIN, np.where(diffs < 0, _LOSS, _ZERO))
    rows = np.arange(len(shown))
    ax.barh(rows, sizes, color=colours, height=0.7)
    ax.set_yticks(rows, [plain(_short(f"{v.label} ({v.track})")) for v in shown], fontsize=8)
    ax.invert_yaxis()  # strongest first, at the top
    for row, size, v in zip(rows, sizes, shown):
        ax.text(size, row, f" {v.diff:+.3g}, {p_text(v.diff_p, null_size)}", va="center", fontsize=7,
                color="0.25")
    ax.set_xlim(0, float(sizes.max()) * 1.3 or 1.0)  # room for the labels
    ax.set_xlabel(f"|diff| = |alt_sum - ref_sum|\n{unit}")
    ax.grid(axis="x", alpha=GRID_ALPHA)
    handles = [Patch(color=_GAIN, label="gain (alt > ref)"), Patch(color=_LOSS, label="loss (alt < ref)")]
    if np.any(colours == _ZERO):
        handles.append(Patch(color=_ZERO, label="no change"))
    note = "beside each bar: diff, and diff_p"
    if null_size > 0:
        note += f"; p ≤ 1/{null_size + 1:,}: no null SNV changed the prediction as much"
    handles.append(Patch(color="none", label=note))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False,
               handlelength=1.2)
    return fig


def _save(plt, fig, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically as PNG, and close it whatever happens."""
    save_png(fig, path, dpi=DPI)
