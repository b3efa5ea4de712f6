"""epiformer_cli.explain.plots: the region and variant figures are valid PNGs that depend on the
data, edge cases (N bases, 1 bp, indels) draw without warnings, a missing logomaker skips the figure
with one warning and no file, and importing the module does not import matplotlib."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from epiformer_cli.explain.plots import plot_name, plot_region, plot_variant
from tests.helpers import assert_imports_none_of, float_tolerance

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START = 123_456_700  # 9 digits: the tick labels must stay plain integers


def explained(length: int, seed: int, n_at=()):
    """(codes, contrib, matrix) shaped like an ISM result: matrix (4, L) 0 at the reference base,
    contrib (L,) minus the mean of the three mutations, NaN at N bases (``n_at``)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, length).astype(np.uint8)
    codes[list(n_at)] = 4
    matrix = rng.normal(size=(4, length)).astype(np.float32)
    known = np.flatnonzero(codes < 4)
    matrix[codes[known], known] = 0.0
    matrix[:, codes == 4] = np.nan
    contrib = (-matrix.sum(axis=0) / 3.0).astype(np.float32)
    return codes, contrib, matrix


def region_kwargs(length: int, seed: int, n_at=()):
    codes, contrib, matrix = explained(length, seed, n_at)
    bins = length // 128 + 5
    return dict(chrom="chr7", start=START, codes=codes, contrib=contrib, matrix=matrix,
                matrix_label="ISM effect (alt - ref)", track="ATAC", title=f"chr7:{START}-{START + length}",
                pred=np.random.default_rng(seed).gamma(2.0, size=bins).astype(np.float32),
                pred_start=START - 2 * 128)


def variant_kwargs(ref_len: int, alt_len: int, seed: int):
    ref_codes, ref_contrib, _ = explained(ref_len, seed, n_at=(3,))
    alt_codes, alt_contrib, _ = explained(alt_len, seed + 1)
    rng = np.random.default_rng(seed)
    ref_pred = rng.gamma(2.0, size=6).astype(np.float32)
    # VCF-style alleles sharing their first base; their length difference is the indel's.
    ref_allele = "A" + "C" * max(ref_len - alt_len, 0)
    alt_allele = "A" + "G" * max(alt_len - ref_len, 0)
    return dict(chrom="chr7", track="ATAC", title=f"rs1 chr7:{START + 8} {ref_allele}>{alt_allele}",
                variant_pos=START + 8, ref_allele=ref_allele, alt_allele=alt_allele,
                ref_start=START, ref_codes=ref_codes, ref_contrib=ref_contrib, alt_codes=alt_codes,
                alt_contrib=alt_contrib, ref_pred=ref_pred, alt_pred=ref_pred * 0.7, pred_start=START - 2 * 128)


def png_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return data


@pytest.fixture
def no_warnings():
    """matplotlib/logomaker warnings would reach the user's terminal: none are allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def only_pngs(folder: Path):
    """The folder holds only finished PNGs: no temporary file of the atomic write is left."""
    names = sorted(p.name for p in folder.iterdir())
    assert all(name.endswith(".png") and not name.startswith(".") for name in names), names
    return names


def test_region_png_depends_on_the_data(tmp_path, no_warnings):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    assert plot_region(first, **region_kwargs(24, seed=0)) is True
    assert plot_region(second, **region_kwargs(24, seed=1)) is True
    assert png_bytes(first) != png_bytes(second)
    assert only_pngs(tmp_path) == ["a.png", "b.png"]


def test_region_with_n_bases_and_explicit_region(tmp_path, no_warnings):
    kwargs = region_kwargs(50, seed=2, n_at=(0, 10, 11, 12, 49))
    assert np.isnan(kwargs["contrib"][[0, 10, 49]]).all() and np.isnan(kwargs["matrix"][:, 11]).all()
    assert plot_region(tmp_path / "n.png", region=(START + 5, START + 45), **kwargs)
    png_bytes(tmp_path / "n.png")


def test_region_overwrites_an_existing_file(tmp_path, no_warnings):
    out = tmp_path / "r.png"
    out.write_bytes(b"old")
    assert plot_region(out, **region_kwargs(20, seed=3))
    png_bytes(out)
    assert only_pngs(tmp_path) == ["r.png"]


@pytest.mark.parametrize("n_at", [(), (0,)], ids=["base", "N"])
def test_one_base_region(tmp_path, no_warnings, n_at):
    """One letter (or none, at an N): logomaker's y range would be empty without ours."""
    out = tmp_path / "one.png"
    assert plot_region(out, **region_kwargs(1, seed=4, n_at=n_at))
    png_bytes(out)


def test_all_zero_matrix(tmp_path, no_warnings):
    kwargs = region_kwargs(10, seed=5)
    kwargs.update(contrib=np.zeros(10, np.float32), matrix=np.zeros((4, 10), np.float32))
    assert plot_region(tmp_path / "zero.png", **kwargs)


def test_region_rejects_mismatched_shapes(tmp_path):
    kwargs = region_kwargs(10, seed=6)
    with pytest.raises(ValueError, match=r"\(4, 10\)"):
        plot_region(tmp_path / "x.png", **dict(kwargs, matrix=kwargs["matrix"][:, :9]))
    with pytest.raises(ValueError, match="contrib"):
        plot_region(tmp_path / "x.png", **dict(kwargs, contrib=kwargs["contrib"][:9]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ref_len, alt_len", [(16, 16), (16, 21), (19, 16)], ids=["snv", "insertion", "deletion"])
def test_variant_png(tmp_path, no_warnings, ref_len, alt_len):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    assert plot_variant(first, **variant_kwargs(ref_len, alt_len, seed=0)) is True
    assert plot_variant(second, **variant_kwargs(ref_len, alt_len, seed=7)) is True
    assert png_bytes(first) != png_bytes(second)
    assert only_pngs(tmp_path) == ["a.png", "b.png"]


def test_variant_rejects_tracks_of_different_bins(tmp_path):
    kwargs = variant_kwargs(16, 16, seed=0)
    with pytest.raises(ValueError, match="same bins"):
        plot_variant(tmp_path / "v.png", **dict(kwargs, alt_pred=kwargs["alt_pred"][:-1]))


def test_plot_name_is_safe():
    name = plot_name("chr1:100-200 (x/y)", "ATAC/rep 1")
    assert name == "chr1_100-200__x_y_.ATAC_rep_1.png"
    assert not set(name) & set(":/ ()")
    assert plot_name("rs123", "DNase") == "rs123.DNase.png"
    assert not plot_name(".hidden", "t").startswith(".")


def test_plot_name_is_short_and_keeps_long_labels_apart():
    first, second = plot_name("x" * 300 + "a", "ATAC"), plot_name("x" * 300 + "b", "ATAC")
    assert first != second
    for name in (first, second):
        assert name.endswith(".ATAC.png") and len(name) - len(".png") == 120
    assert len(plot_name("x", "t" * 300)) - len(".png") <= 120


@pytest.mark.parametrize("plot, kwargs", [(plot_region, region_kwargs(20, seed=0)),
                                          (plot_variant, variant_kwargs(16, 19, seed=0))],
                         ids=["region", "variant"])
def test_missing_logomaker_skips_the_plot_with_one_warning(tmp_path, monkeypatch, caplog, plot, kwargs):
    monkeypatch.setitem(sys.modules, "logomaker", None)  # `import logomaker` raises ImportError
    out = tmp_path / "skipped.png"
    with caplog.at_level(logging.WARNING, logger="epiformer_cli.explain.plots"):
        assert plot(out, **kwargs) is False
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "pip install 'epiformer[plots]'" in message and str(out) in message and "logomaker" in message
    assert list(tmp_path.iterdir()) == []  # neither the PNG nor a temporary file


def test_import_does_not_import_matplotlib():
    assert_imports_none_of(["epiformer_cli.explain.plots"], ["matplotlib", "logomaker", "pandas"])


def test_logo_letters_are_logomakers_for_the_nonzero_reference_bases():
    """_draw_logo draws, per base, one patch holding exactly the letters logomaker.Logo draws
    (same outlines, classic colours, upright below the axis) for the finite non-zero reference
    contributions, and nothing for N, NaN or 0; the x range is Logo's."""
    pytest.importorskip("logomaker")
    from epiformer_cli.explain.plots import _draw_logo, _import_plotting

    plt, logomaker = _import_plotting("test")
    import pandas as pd
    from matplotlib.patches import PathPatch
    from matplotlib.colors import to_rgb

    codes = np.array([0, 1, 2, 3, 4, 0, 3, 1, 2, 2], np.uint8)
    contrib = np.array([0.5, -1.2, 0.0, 2.0, np.nan, -0.3, np.nan, 0.8, -0.01, 1e-3])
    start = 1_000
    fig, (ours, theirs) = plt.subplots(2, 1)
    try:
        _draw_logo(ours, logomaker, start, codes, contrib, (-2.0, 3.0))
        heights = np.zeros((len(codes), 4))
        known = np.flatnonzero((codes < 4) & np.isfinite(contrib))
        heights[known, codes[known]] = contrib[known]
        frame = pd.DataFrame(heights, columns=list("ACGT"), index=start + np.arange(len(codes)))
        logo = logomaker.Logo(frame, ax=theirs, color_scheme="classic", flip_below=False)

        patches = [p for p in ours.patches if isinstance(p, PathPatch)]
        assert len(patches) == 4  # one per base letter, each with all of that letter's copies
        classic = {"A": "green", "C": "blue", "G": "orange", "T": "red"}  # logomaker's G: (1, 0.65, 0)
        for patch in patches:
            vertices = patch.get_path().vertices
            # Which base: the colour; which positions: logomaker's glyphs of that base.
            base = next(b for b, c in classic.items() if np.allclose(patch.get_facecolor()[:3], to_rgb(c), atol=0.01))
            glyphs = [g for g in logo.glyph_list if g.c == base and g.patch is not None]
            assert glyphs
            expected = np.concatenate([g.patch.get_path().vertices for g in glyphs])
            assert vertices.shape == expected.shape
            # two float64 chains of affine maps (2 x 2 matrix and shift: 3 terms, about 3 deep) at
            # x ~ 1,000: 1.2e-12 (seen 1.1e-13, one ulp); a glyph of the wrong height is >= 1e-3 off
            tol = float_tolerance(np.abs(expected).max(), terms=3, depth=3, dtype=np.float64)
            np.testing.assert_allclose(np.sort(vertices, axis=0), np.sort(expected, axis=0), rtol=0, atol=tol)
            for g in glyphs:
                assert not g.flip  # upright below the axis too
        assert ours.get_xlim() == pytest.approx(theirs.get_xlim())
        assert ours.get_ylim() == (-2.0, 3.0)
        assert len(ours.lines) == 1 and ours.lines[0].get_ydata()[0] == 0  # the baseline
    finally:
        plt.close(fig)


def test_region_panels_stack_without_a_band(tmp_path, monkeypatch):
    """The heatmap sits as close under the logo panel as the track panel sits under the heatmap:
    a colourbar label longer than the heatmap is high would push the heatmap down."""
    import epiformer_cli.explain.plots as plots

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (save(fig, path), figures.append(fig)))
    kwargs = region_kwargs(300, seed=0)
    kwargs["matrix_label"] = "ISM effect (alt - ref, summed bins)"  # what the explain command passes
    assert plot_region(tmp_path / "r.png", **kwargs)
    logo, heat, track = (ax.get_position() for ax in figures[0].axes[:3])
    above, below = logo.y0 - heat.y1, heat.y0 - track.y1
    assert 0 < above <= 1.2 * below, (above, below)


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, in order."""
    import epiformer_cli.explain.plots as plots

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (save(fig, path), figures.append(fig)))
    return figures


@pytest.mark.parametrize("start, end, pred_start, expected", [
    (3_345, 3_634, 2_304, (3_328, 3_712)),  # the demo's first element: 3 bins
    (3_328, 3_456, 2_304, (3_328, 3_456)),  # on the bin edges: exactly its one bin
    (3_455, 3_457, 0, (3_328, 3_584)),      # 2 bp across an edge: both bins
    (130, 131, 2, (130, 258)),              # a grid starting off the multiples of 128: its bins
])
def test_summed_extent_is_the_bins_overlapping_the_region(start, end, pred_start, expected):
    from epiformer_cli.explain.plots import summed_extent

    assert summed_extent(start, end, pred_start, 128) == expected


def test_summed_extent_matches_explains_summed_bins():
    """On explain's grid (the output span starts on a multiple of 128) the shaded span is
    start // 128 * 128 .. ceil(end / 128) * 128, and it is the span of the bins place() sums."""
    from epiformer_cli.explain.plots import summed_extent
    from epiformer_cli.explain.regions import place
    from epiformer_cli.model.config import preset

    cfg = preset("tiny")
    rng = np.random.default_rng(0)
    for _ in range(200):
        start = int(rng.integers(10_000, 50_000))
        end = start + int(rng.integers(1, 3_000))
        placed = place(start, end, cfg)
        out_start = placed.out_start
        b0, b1 = placed.bins
        assert summed_extent(start, end, out_start, 128) == (out_start + 128 * b0, out_start + 128 * b1)
        assert summed_extent(start, end, out_start, 128) == (start // 128 * 128, -(-end // 128) * 128)


def test_region_shades_exactly_the_summed_bins_and_says_their_sum(tmp_path, drawn, no_warnings):
    kwargs = region_kwargs(300, seed=0)  # START .. START + 300
    # 7 bins on the genome-wide 128 bp grid, 2 bins before the one holding START, as explain draws them
    kwargs.update(pred=np.arange(1, 8, dtype=np.float32), pred_start=START // 128 * 128 - 256)
    assert plot_region(tmp_path / "r.png", **kwargs)
    track_ax = drawn[0].axes[2]
    lo, hi = START // 128 * 128, -(-(START + 300) // 128) * 128
    assert (lo, hi) == (START - 60, START + 324)  # START is 60 bp into its bin: 3 bins
    spans = [p for p in track_ax.patches if p.get_label().startswith("bins summed")]
    assert len(spans) == 1
    x0, x1 = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    assert (x0, x1) == (lo, hi)
    legend = [t.get_text() for t in track_ax.get_legend().get_texts()]
    assert legend == [f"bins summed for the explained value: 3 x 128 bp, chr7:{lo:,}-{hi:,}",
                      f"region chr7:{START:,}-{START + 300:,} (300 bp)"]
    # the first summed bin is bin 2 of pred: values 3, 4, 5
    assert drawn[0]._suptitle.get_text().splitlines()[1] == (
        "explained value: predicted ATAC summed over the 3 shaded 128 bp bins = 12; contributions and effects "
        "are in its units")
    assert track_ax.get_ylabel() == "predicted ATAC\n(per 128 bp bin)"
    # the legend is above the panel, not over the steps
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(drawn[0])
    canvas.draw()
    renderer = canvas.get_renderer()
    assert not track_ax.get_legend().get_window_extent(renderer).overlaps(track_ax.get_window_extent(renderer))


@pytest.mark.parametrize("ref, alt, origin, label, note", [
    ("A", "G", START, "chr7 position (0-based, bp)", None),
    ("AC", "GT", START, "chr7 position (0-based, bp)", None),
    ("ACC", "A", 0, f"position along the ALT sequence (bp; 0 = chr7:{START:,}, 0-based)",
     f"2 bp deletion: ALT position p = chr7:{START:,} + p to the allele's end, {START + 2:,} + p after"),
    ("A", "AGGGGG", 0, f"position along the ALT sequence (bp; 0 = chr7:{START:,}, 0-based)",
     f"5 bp insertion: ALT position p = chr7:{START:,} + p to the allele's end, {START - 5:,} + p after"),
], ids=["snv", "mnv", "deletion", "insertion"])
def test_alt_axis(ref, alt, origin, label, note):
    from epiformer_cli.explain.plots import alt_axis

    assert alt_axis("chr7", START, ref, alt) == (origin, label, note)


@pytest.mark.parametrize("ref, alt", [("ACC", "A"), ("A", "AGGGGG"), ("TT", "TTT")])
def test_alt_axis_note_maps_alt_positions_to_the_genome(ref, alt):
    """The note's mapping is right: on a genome built here, ALT base p after the allele is the
    genome's base at the position the note gives."""
    from epiformer_cli.explain.plots import alt_axis

    rng = np.random.default_rng(1)
    genome = "".join(rng.choice(list("ACGT"), 200))
    ref_start, offset = 40, 30  # the region starts at 40, the variant 30 bp into it
    genome = genome[:ref_start + offset] + ref + genome[ref_start + offset + len(ref):]
    alt_seq = genome[ref_start:ref_start + offset] + alt + genome[ref_start + offset + len(ref):ref_start + 100]
    _, _, note = alt_axis("chrZ", ref_start, ref, alt)
    after = int(note.rsplit(", ", 1)[1].split(" + p")[0].replace(",", ""))
    before = int(note.split("chrZ:")[1].split(" + p")[0].replace(",", ""))
    for p in range(offset + len(alt), len(alt_seq)):
        assert alt_seq[p] == genome[after + p]
    for p in range(offset):
        assert alt_seq[p] == genome[before + p]


@pytest.mark.parametrize("ref_len, alt_len", [(16, 16), (16, 21), (19, 16)], ids=["snv", "insertion", "deletion"])
def test_variant_alt_panel_is_in_the_alt_sequences_coordinates(tmp_path, drawn, no_warnings, ref_len, alt_len):
    from epiformer_cli.explain.plots import alt_axis

    kwargs = variant_kwargs(ref_len, alt_len, seed=0)
    assert plot_variant(tmp_path / "v.png", **kwargs)
    ax_ref, ax_alt = drawn[0].axes[:2]
    origin, label, note = alt_axis("chr7", START, kwargs["ref_allele"], kwargs["alt_allele"])
    longest = max(ref_len, alt_len)
    assert ax_ref.get_xlabel() == "chr7 position (0-based, bp)"
    assert ax_ref.get_xlim() == (START - 0.5, START + longest - 0.5)
    assert ax_alt.get_xlabel() == label
    assert ax_alt.get_xlim() == (origin - 0.5, origin + longest - 0.5)
    # the variant's line sits at its own base in both panels: 8 bp into each sequence
    assert [line.get_xdata()[0] for line in ax_ref.lines if line.get_linewidth() == 0.6] == [START + 8]
    assert [line.get_xdata()[0] for line in ax_alt.lines if line.get_linewidth() == 0.6] == [origin + 8]
    assert ax_alt.get_title(loc="left") == f"alt allele {kwargs['alt_allele']}" + (f" ({note})" if note else "")


def test_names_from_the_users_files_are_drawn_literally(tmp_path, drawn, no_warnings):
    from matplotlib.text import Text

    kwargs = region_kwargs(20, seed=0)
    kwargs.update(title="peak $1$ of chr_7", track="ATAC $x$", chrom="chr$7")
    assert plot_region(tmp_path / "r.png", **kwargs)
    fig = drawn[0]
    title = fig._suptitle.get_text().splitlines()[0]
    assert Text()._preprocess_math(title) == ("peak $1$ of chr_7", False)
    ylabel = fig.axes[2].get_ylabel()
    assert Text()._preprocess_math(ylabel) == ("predicted ATAC $x$\n(per 128 bp bin)", False)
    assert Text()._preprocess_math(fig.axes[2].get_xlabel()) == ("chr$7 position (0-based, bp)", False)
