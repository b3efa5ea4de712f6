"""The explain figures: a region's contribution logo, effect heatmap and predicted track, and a
variant's reference and alternative contribution logos with both predicted tracks.

matplotlib and logomaker (which imports pandas) are imported inside the functions (the ``plots``
extra; matplotlib through :mod:`epiformer_cli.plotting`, which also saves the PNGs), so importing
this module stays cheap; without them a figure is skipped with one warning.
Coordinates are 0-based, half-open genome coordinates throughout; the x axes show the 0-based
coordinate of each base (``start + i``), not a 1-based browser position, except the ALT panel of an
indel, whose bases after the allele have no genome coordinate of their own: it is labelled in
positions along the ALT sequence (:func:`alt_axis`). The region figure shades the whole 128 bp bins
whose predictions are summed into the explained value (:func:`summed_extent`), not just the region.
Names from the user's files (region, track, chromosome) are drawn literally
(:func:`~epiformer_cli.plotting.plain`).
"""

from __future__ import annotations

import hashlib
import logging
import textwrap
from typing import Optional, Tuple

import numpy as np

from epiformer_cli.names import file_part
from epiformer_cli.plotting import PLOTS_EXTRA, import_pyplot, plain, save_png

log = logging.getLogger(__name__)

_BASES = "ACGT"
#: Figure width per base (inches), and the clamp that keeps short regions legible and long ones
#: within what an image viewer shows without scrolling.
_INCH_PER_BASE = 0.035
_MIN_WIDTH, _MAX_WIDTH = 8.0, 24.0
_DPI = 110
#: Above this many bases the reference-base dots of the heatmap are smaller than a pixel: clutter.
_MAX_DOTTED = 200
_NAME_LIMIT = 120
#: logomaker's letter width (Glyph's default): letters of neighbouring bases do not touch.
_GLYPH_WIDTH = 0.95
#: Characters per line of the heatmap's colourbar label (small font), so that it is no taller than
#: the heatmap.
_LABEL_WRAP = 14


def _cut(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` bytes of UTF-8, never inside a character."""
    return text.encode("utf-8")[:size].decode("utf-8", errors="ignore")


def plot_name(label: str, track: str) -> str:
    """A safe file name ``<label>.<track>.png``: each part as :func:`epiformer_cli.names.file_part`
    makes it (characters other than letters, digits, '.', '_', '+', '-' become '_'), at most 120
    bytes (UTF-8) before the suffix.

    A leading '.' becomes '_' so that a plot is never a hidden file. A name that would be longer
    is cut, keeping the track name when it is short, and ends with 8 hex digits of a hash of the
    label and track, so that two long labels sharing their first 100 characters still get two
    files. (Different labels that differ only in replaced characters, such as ``chr1:5`` and
    ``chr1/5``, still share a name: the caller's labels should be unique after sanitising.)
    """
    safe_label, safe_track = file_part(label), file_part(track)
    stem = f"{safe_label}.{safe_track}"
    if len(stem.encode("utf-8")) > _NAME_LIMIT:
        digest = hashlib.sha1(f"{label}\0{track}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
        room = _NAME_LIMIT - len(digest) - 2 - len(safe_track.encode("utf-8"))  # "_" + digest, and "."
        if room >= 16:
            stem = f"{_cut(safe_label, room)}_{digest}.{safe_track}"
        else:
            stem = f"{_cut(stem, _NAME_LIMIT - len(digest) - 1)}_{digest}"
    if stem.startswith("."):
        stem = "_" + stem[1:]
    return stem + ".png"


def summed_extent(start: int, end: int, pred_start: int, bin_size: int = 128) -> Tuple[int, int]:
    """The 0-based, half-open genome span of the bins whose predictions are summed for the region
    ``[start, end)``: every bin of the grid starting at ``pred_start`` (every ``bin_size`` bp) that
    overlaps it. On explain's grid (``pred_start`` a multiple of 128) that is
    ``(start // 128 * 128, ceil(end / 128) * 128)``."""
    lo = pred_start + ((start - pred_start) // bin_size) * bin_size
    hi = pred_start + -(-(end - pred_start) // bin_size) * bin_size
    return lo, hi


def alt_axis(chrom: str, ref_start: int, ref_allele: str, alt_allele: str) -> Tuple[int, str, Optional[str]]:
    """Where the ALT sequence's bases are drawn and how its x axis is labelled:
    ``(origin, label, note)``: base ``i`` of the ALT sequence is drawn at ``origin + i``.

    Alleles of one length (SNV, MNV): every ALT base sits at its genome coordinate, so origin is
    ``ref_start`` and the label the genome's. An indel shifts the bases after it by
    ``len(alt) - len(ref)``: they have no genome coordinate of their own, so the axis counts
    positions along the ALT sequence from 0 (= ``ref_start``), and ``note`` says how to map them
    back (ALT position p is genome ``ref_start + p`` up to the end of the allele, and
    ``ref_start - (len(alt) - len(ref)) + p`` after it).
    """
    shift = len(alt_allele) - len(ref_allele)
    if shift == 0:
        return ref_start, f"{plain(chrom)} position (0-based, bp)", None
    kind = f"{shift:,} bp insertion" if shift > 0 else f"{-shift:,} bp deletion"
    label = f"position along the ALT sequence (bp; 0 = {plain(chrom)}:{ref_start:,}, 0-based)"
    note = (f"{kind}: ALT position p = {plain(chrom)}:{ref_start:,} + p to the allele's end, "
            f"{ref_start - shift:,} + p after")
    return 0, label, note


def plot_region(path, *, chrom: str, start: int, codes: np.ndarray, contrib: np.ndarray, matrix: np.ndarray,
                matrix_label: str, track: str, title: str, pred: np.ndarray, pred_start: int,
                bin_size: int = 128, region: Optional[Tuple[int, int]] = None,
                contrib_label: str = "contribution\n(reference base)") -> bool:
    """Write one PNG of a region's explanation: contribution logo, matrix heatmap, predicted track.

    Args:
        path: the PNG to write (atomically; replaced if it exists).
        chrom, start: the first base's chromosome and 0-based coordinate; base ``i`` is at
            ``start + i``.
        codes: (L,) uint8 reference base codes, A=0 C=1 G=2 T=3 N=4.
        contrib: (L,) float32 contribution of each reference base (NaN at N: nothing drawn).
        matrix: (4, L) float32, rows A,C,G,T: ISM effects (alternative minus reference, 0 at the
            reference base) or hypothetical contributions; NaN allowed (drawn grey).
        matrix_label: the heatmap colourbar's label (what ``matrix`` holds, with its unit).
        track: the track's name, for the y label "predicted <track>".
        title: the figure's title.
        pred: (n,) predicted accessibility of n consecutive bins of ``bin_size`` bp, the first
            starting at genome coordinate ``pred_start``.
        region: the 0-based half-open (start, end) span explained; default ``(start, start + L)``.
            The track panel shades the bins summed for it (:func:`summed_extent`), marks the
            region's own ends, and the subtitle gives the sum of ``pred`` over those bins (the
            explained value, in the units of the contributions).
        contrib_label: the logo's y label (what a contribution is).
    Returns True when the PNG was written, False when matplotlib or logomaker is missing (one
    warning is logged and nothing is written).
    """
    codes, contrib = _check_bases(codes, contrib, "codes", "contrib")
    matrix = np.asarray(matrix, dtype=np.float64)
    length = len(codes)
    if matrix.shape != (4, length):
        raise ValueError(f"matrix has shape {matrix.shape}, expected (4, {length}) for {length} bases")
    pred = _check_pred(pred, "pred")
    if region is None:
        region = (start, start + length)
    libs = _import_plotting(path)
    if libs is None:
        return False
    plt, logomaker = libs

    lo, hi = summed_extent(region[0], region[1], pred_start, bin_size)
    n_bins = (hi - lo) // bin_size
    first = (lo - pred_start) // bin_size
    explained = (f" = {float(np.sum(pred[first:first + n_bins], dtype=np.float64)):.4g}"
                 if 0 <= first and first + n_bins <= len(pred) else "")
    subtitle = (f"explained value: predicted {plain(track)} summed over the {n_bins:,} shaded {bin_size} bp "
                f"bins{explained}; contributions and effects are in its units")

    fig, (ax_logo, ax_heat, ax_track) = plt.subplots(
        3, 1, figsize=(_figure_width(length), 5.8), height_ratios=[1.6, 1.2, 1.4], layout="constrained")
    try:
        fig.suptitle(f"{plain(title)}\n{subtitle}", fontsize="medium")
        _draw_logo(ax_logo, logomaker, start, codes, contrib, _value_limits(contrib))
        ax_logo.set_ylabel(contrib_label)
        _genome_axis(ax_logo, chrom, fig.get_figwidth())

        _draw_heatmap(plt, fig, ax_heat, start, codes, matrix, matrix_label)
        _genome_axis(ax_heat, chrom, fig.get_figwidth())

        edges = pred_start + bin_size * np.arange(len(pred) + 1)
        if len(pred):
            ax_track.stairs(pred, edges, color="C0", linewidth=1.2, baseline=None)
        ax_track.axvspan(lo, hi, color="C1", alpha=0.2, linewidth=0,
                         label=f"bins summed for the explained value: {n_bins:,} x {bin_size} bp, "
                               f"{plain(chrom)}:{lo:,}-{hi:,}")
        region_label = f"region {plain(chrom)}:{region[0]:,}-{region[1]:,} ({region[1] - region[0]:,} bp)"
        for i, x in enumerate(region):
            ax_track.axvline(x, color="C1", linestyle="--", linewidth=0.9, label=region_label if i else None)
        ax_track.set_xlim(min(edges[0], lo), max(edges[-1], hi))
        _track_axis(ax_track, pred, track, bin_size)
        _genome_axis(ax_track, chrom, fig.get_figwidth())
        _save(fig, path)
    finally:
        plt.close(fig)
    return True


def plot_variant(path, *, chrom: str, track: str, title: str, variant_pos: int, ref_allele: str, alt_allele: str,
                 ref_start: int, ref_codes: np.ndarray, ref_contrib: np.ndarray,
                 alt_codes: np.ndarray, alt_contrib: np.ndarray,
                 ref_pred: np.ndarray, alt_pred: np.ndarray, pred_start: int, bin_size: int = 128,
                 motif: Optional[Tuple[int, int, str]] = None) -> bool:
    """Write one PNG of a variant's explanation: the reference and the alternative allele's
    contribution logos (same y limits, so heights compare) and both predicted tracks.

    Args:
        path: the PNG to write (atomically; replaced if it exists).
        chrom: the chromosome, for the axis labels.
        track, title: the track's name (y label "predicted <track>") and the figure's title.
        variant_pos: the variant's 0-based genome coordinate (its first reference base), marked by a
            thin line in every panel.
        ref_allele, alt_allele: the alleles as text, for the labels and the shaded allele spans.
        ref_start: 0-based genome coordinate of the first base of both sequences.
        ref_codes, ref_contrib: (Lr,) uint8 codes (A=0 C=1 G=2 T=3 N=4) and float32 contributions
            of the reference sequence; base ``i`` is at ``ref_start + i``.
        alt_codes, alt_contrib: (La,) the same for the alternative sequence, whose base ``i`` is
            base ``i`` after ``ref_start`` on the ALT haplotype; La may differ from Lr. After an
            indel its bases no longer sit at their genome coordinates: the panel is then drawn
            and labelled in positions along the ALT sequence (:func:`alt_axis`).
        ref_pred, alt_pred: (n,) predictions of the same n bins of ``bin_size`` bp, the first
            starting at genome coordinate ``pred_start``.
        motif: the motif instance the variant overlaps (``explain --motif-db``): (start, end, label),
            start and end its reference-sequence coordinates (0-based, half-open; for an indel the
            alt panel shows it at the same distance from the first base), drawn as a band with the
            label above both logos.
    Returns True when the PNG was written, False when matplotlib or logomaker is missing (one
    warning is logged and nothing is written).
    """
    ref_codes, ref_contrib = _check_bases(ref_codes, ref_contrib, "ref_codes", "ref_contrib")
    alt_codes, alt_contrib = _check_bases(alt_codes, alt_contrib, "alt_codes", "alt_contrib")
    ref_pred, alt_pred = _check_pred(ref_pred, "ref_pred"), _check_pred(alt_pred, "alt_pred")
    if ref_pred.shape != alt_pred.shape:
        raise ValueError(f"ref_pred {ref_pred.shape} and alt_pred {alt_pred.shape} must cover the same bins")
    libs = _import_plotting(path)
    if libs is None:
        return False
    plt, logomaker = libs

    longest = max(len(ref_codes), len(alt_codes))
    # One y range for both logos: the point of the figure is comparing their heights.
    limits = _value_limits(np.concatenate([ref_contrib, alt_contrib]))
    alt_origin, alt_label, alt_note = alt_axis(chrom, ref_start, ref_allele, alt_allele)
    fig, (ax_ref, ax_alt, ax_track) = plt.subplots(
        3, 1, figsize=(_figure_width(longest), 5.8), height_ratios=[1.6, 1.6, 1.4], layout="constrained")
    try:
        fig.suptitle(plain(title))
        ref_label = f"{plain(chrom)} position (0-based, bp)"
        panels = ((ax_ref, ref_start, ref_codes, ref_contrib, ref_allele, "ref", "reference sequence", ref_label,
                   None),
                  (ax_alt, alt_origin, alt_codes, alt_contrib, alt_allele, "alt", "alt allele sequence", alt_label,
                   alt_note))
        for ax, origin, codes, contrib, allele, which, what, label, note in panels:
            _draw_logo(ax, logomaker, origin, codes, contrib, limits)
            # Both logos span the longer sequence from their first base, so that the bases before
            # the variant line up vertically.
            ax.set_xlim(origin - 0.5, origin + longest - 0.5)
            # Shade the allele's own bases (an indel's span differs between the two sequences),
            # behind the letters.
            at = origin + variant_pos - ref_start
            ax.axvspan(at - 0.5, at + max(len(allele), 1) - 0.5, color="0.85", linewidth=0, zorder=-2)
            if motif is not None:
                first = origin + motif[0] - ref_start
                ax.axvspan(first - 0.5, first + motif[1] - motif[0] - 0.5, color="#f6c28b", alpha=0.45, linewidth=0,
                           zorder=-3)
                ax.text(first - 0.5, 0.98, plain(motif[2]), transform=ax.get_xaxis_transform(), ha="left",
                        va="top", fontsize="small", color="#8a4b08")
            ax.axvline(at, color="0.3", linewidth=0.6, zorder=-1)
            ax.set_ylabel(f"contribution\n{what}")
            ax.set_title(f"{which} allele {plain(_short(allele))}" + (f" ({note})" if note else ""), loc="left",
                         fontsize="medium")
            _genome_axis(ax, chrom, fig.get_figwidth(), xlabel=label)

        edges = pred_start + bin_size * np.arange(len(ref_pred) + 1)
        if len(ref_pred):
            ax_track.stairs(ref_pred, edges, color="C0", linewidth=1.2, label="ref", baseline=None)
            ax_track.stairs(alt_pred, edges, color="C3", linewidth=1.2, label="alt", baseline=None)
        ax_track.axvline(variant_pos, color="0.3", linewidth=0.6)
        ax_track.set_xlim(min(edges[0], variant_pos), max(edges[-1], variant_pos + 1))
        _track_axis(ax_track, np.concatenate([ref_pred, alt_pred]), track, bin_size)
        _genome_axis(ax_track, chrom, fig.get_figwidth())
        _save(fig, path)
    finally:
        plt.close(fig)
    return True


def _import_plotting(path):
    """(pyplot, logomaker), or None after one warning naming ``path`` and the fix."""
    try:
        # pyplot first: logomaker imports pyplot itself, and must get the Agg backend and the
        # throw-away config folder that import_pyplot sets up.
        plt = import_pyplot()
        import logomaker
    except ImportError as exc:
        missing = exc.name or "matplotlib or logomaker"
        log.warning("%s not written: %s is not installed (%s)", path, missing, PLOTS_EXTRA)
        return None
    return plt, logomaker


def _check_bases(codes, contrib, codes_name: str, contrib_name: str):
    """codes as (L,) integers and contrib as (L,) float64, L >= 1, or ValueError."""
    codes = np.asarray(codes)
    contrib = np.asarray(contrib, dtype=np.float64)
    if codes.ndim != 1 or len(codes) == 0:
        raise ValueError(f"{codes_name} must be a non-empty (L,) array of base codes, got shape {codes.shape}")
    if contrib.shape != codes.shape:
        raise ValueError(f"{contrib_name} has shape {contrib.shape}, expected {codes.shape} like {codes_name}")
    return codes, contrib


def _check_pred(pred, name: str) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 1:
        raise ValueError(f"{name} must be a (n,) array of bin predictions, got shape {pred.shape}")
    return pred


def _figure_width(length: int) -> float:
    return float(min(max(_INCH_PER_BASE * length, _MIN_WIDTH), _MAX_WIDTH))


def _value_limits(values: np.ndarray) -> Tuple[float, float]:
    """y limits that hold every finite value and 0, with a little room; (-1, 1) when all are 0/NaN
    (a zero-height range would make the axis singular)."""
    finite = values[np.isfinite(values)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(0.0, float(finite.max())) if finite.size else 0.0
    if high - low == 0.0:
        return -1.0, 1.0
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def _draw_logo(ax, logomaker, start: int, codes: np.ndarray, contrib: np.ndarray,
               limits: Tuple[float, float]) -> None:
    """Draw ``contrib`` as letters of the reference bases at genome positions ``start + i``: what
    ``logomaker.Logo(..., color_scheme="classic", flip_below=False, baseline_width=0.5)`` draws for
    the (L, 4) matrix holding ``contrib`` at each reference base, in a fraction of the time.

    Only the reference base of each position has a height; N bases, NaN and 0 contributions get no
    letter. A positive letter stands on the axis, a negative one hangs below it, upright (a flipped
    letter is hard to read; its place below the axis says the sign).

    ``Logo`` builds a ``Glyph`` for each of the 4 x L cells, zeros included, each one laying out two
    ``TextPath`` s and adding a patch whose Bezier extents matplotlib computes, and then builds the
    below-axis letters a second time: about 6 ms per base. A Glyph's letter depends on its
    position and height only through the affine map from its unit box, so one ``logomaker.Glyph``
    per base letter (height 1 at position 0, logomaker's defaults: bold sans, width 0.95, no
    padding, stretched no wider than 'E') gives the outline, and each of that letter's positions
    gets a copy scaled to its height and moved to its place. The copies of one letter are one
    compound path in one patch with the Glyph's style, added without the per-letter extents (the
    axis limits are set here).
    """
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    colors = _classic_colors()
    drawn = (codes < 4) & np.isfinite(contrib) & (contrib != 0)
    for code, base in enumerate(_BASES):
        where = np.flatnonzero(drawn & (codes == code))
        if where.size == 0:
            continue
        glyph = logomaker.Glyph(0, base, floor=0.0, ceiling=1.0, ax=ax, width=_GLYPH_WIDTH,
                                color=colors[base], zorder=0)
        # The Glyph added its unit letter to the axes: the letter's outline is all that is needed.
        glyph.patch.remove()
        unit = glyph.patch.get_path()
        values = contrib[where]
        # Unit box [0, 1] -> [min(v, 0), max(v, 0)]: scale by |v|, lift by the floor.
        scale = np.stack([np.ones_like(values), np.abs(values)], axis=1)
        shift = np.stack([start + where.astype(np.float64), np.minimum(values, 0.0)], axis=1)
        vertices = unit.vertices[None, :, :] * scale[:, None, :] + shift[:, None, :]
        path = Path(vertices.reshape(-1, 2), np.tile(unit.codes, where.size))
        letters = PathPatch(path, facecolor=glyph.color, edgecolor=glyph.edgecolor, linewidth=glyph.edgewidth,
                            alpha=glyph.alpha, zorder=glyph.zorder)
        # add_artist, not add_patch: add_patch would compute the Bezier extents of every letter to
        # update the data limits, which the limits set below make useless.
        ax.add_artist(letters)
    ax.axhline(0.0, color="black", linewidth=0.5, zorder=-1)  # Logo's baseline
    # Logo's x range: from the first letter's left edge to the last one's right edge.
    half = _GLYPH_WIDTH / 2.0
    ax.set_xlim(start - half, start + len(codes) - 1 + half)
    ax.set_ylim(*limits)


def _classic_colors() -> dict:
    """logomaker's 'classic' colours of A, C, G, T as RGB (green, blue, orange, red)."""
    from logomaker.src.colors import get_color_dict

    return {base: tuple(float(x) for x in rgb) for base, rgb in get_color_dict("classic", _BASES).items()
            if base in _BASES}


def _draw_heatmap(plt, fig, ax, start: int, codes: np.ndarray, matrix: np.ndarray, label: str) -> None:
    """(4, L) ``matrix`` as rows A,C,G,T over genome positions, diverging colours centred on 0."""
    length = matrix.shape[1]
    finite = np.abs(matrix[np.isfinite(matrix)])
    # Symmetric limits so that white is exactly 0 (no effect) and the two signs compare.
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.8")
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=cmap, vmin=-vmax, vmax=vmax,
                      extent=(start - 0.5, start + length - 0.5, 3.5, -0.5))
    if length <= _MAX_DOTTED:
        # ISM effects are 0 at the reference base: a dot tells it from a base with no effect.
        known = np.flatnonzero(codes < 4)
        ax.scatter(start + known, codes[known], s=4, color="k", marker="o", linewidths=0)
    ax.set_xlim(start - 0.5, start + length - 0.5)
    ax.set_ylim(3.5, -0.5)
    ax.set_yticks(range(4), list(_BASES))
    ax.set_ylabel("base")
    # The colourbar in an inset beside the heatmap, not taken from its width, so that the heatmap's
    # columns stay under the logo's letters.
    cax = ax.inset_axes([1.01, 0.0, 0.012, 1.0])
    colorbar = fig.colorbar(image, cax=cax)
    # The label runs along the colourbar. On one line the explain command's "ISM effect (alt - ref,
    # summed bins)" is 2.4 in tall, over twice the heatmap's 1 in, and the constrained layout then
    # keeps a band as high as the overflow between the heatmap and the logo above it. Wrapped onto
    # short lines in a small font it stays within the heatmap's height (0.9 in).
    colorbar.set_label(textwrap.fill(label, _LABEL_WRAP), fontsize="small")


def _track_axis(ax, values: np.ndarray, track: str, bin_size: int = 128) -> None:
    """y label and legend of a predicted-track panel; the y axis starts at 0 (or below, for a
    track that goes negative) so that a step's height reads as accessibility, not as a difference.
    The legend sits above the panel, clear of the steps."""
    finite = values[np.isfinite(values)]
    if finite.size:
        ax.set_ylim(bottom=min(0.0, float(finite.min())))
    ax.set_ylabel(f"predicted {plain(track)}\n(per {bin_size} bp bin)")
    if ax.get_legend_handles_labels()[0]:  # none without bins (variant): matplotlib would warn
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize="small", frameon=False,
                  borderaxespad=0.1)


def _genome_axis(ax, chrom: str, width: float, xlabel: Optional[str] = None) -> None:
    """Integer genome coordinates with thousands separators: no offset, no scientific notation.

    ``width`` is the figure's width in inches: 9-digit coordinates need about 1.3 in per tick, and
    matplotlib's default tick count would overlap them on a narrow figure. ``xlabel``: the x label,
    by default the chromosome's 0-based positions.
    """
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    label = f"{int(max(abs(x) for x in ax.get_xlim())):,}"
    # DejaVu Sans at 10 pt: a digit is about 0.088 in wide, a comma half that; 0.4 in between labels.
    label_inches = 0.088 * sum(ch.isdigit() for ch in label) + 0.044 * label.count(",") + 0.4
    nbins = max(1, int((width - 1.3) / label_inches))  # 1.3 in: the y label and tick labels
    ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins, integer=True, min_n_ticks=1))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(round(x)):,}"))
    # 0-based as in BED and bigWig; a VCF POS is one more
    ax.set_xlabel(xlabel if xlabel is not None else f"{plain(chrom)} position (0-based, bp)")


def _short(allele: str, limit: int = 20) -> str:
    """An allele for a label: long insertions and deletions are cut, with their length."""
    return allele if len(allele) <= limit else f"{allele[:limit]}… ({len(allele):,} bp)"


def _save(fig, path) -> None:
    save_png(fig, path, dpi=_DPI, bbox_inches="tight")

