"""epiformer_cli.variants.calibration_plots: the three figures of ``score-variants --plots`` are PNGs
for 1, 3 and 20 tracks; the Q-Q thinning keeps the 10,000 smallest p-values and the largest exactly
and at most 20,000 points per track, so a million alleles stay fast; empty inputs draw a figure that
says so; a missing matplotlib is one UsageError naming the extra; importing the module is cheap.
The top variants are ranked by |diff| (ties: smaller diff_p, then output order), each bar labelled
with its diff and diff_p ("p ≤ 1/(N+1)" at the null floor); legends sit outside the data; every axis
says its unit; names with ``$`` are drawn literally."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import epiformer_cli
from epiformer_cli.errors import UsageError
from epiformer_cli.variants import calibration_plots as cp
from epiformer_cli.variants.calibration_plots import (LAMBDA_TEXT, MAX_TOP, PLOT_NAMES, QQ_EXACT, QQ_MAX_POINTS,
                                                      TopVariant, TrackPlotData, at_floor, diff_bins, diff_unit,
                                                      inflation, null_floor, p_text, qq_points, rank_top,
                                                      write_calibration_plots)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NULL_SIZE = 2_000


def track(name: str, n: int, seed: int, null_size: int = NULL_SIZE) -> TrackPlotData:
    """A track whose diff_p is computed from its diff against its null exactly as score-variants
    does: (1 + #null with |diff| >= |x|) / (1 + N); heavy-tailed diffs peaked at 0."""
    rng = np.random.default_rng(seed)
    null = rng.standard_t(2, null_size) * 0.1
    diff = rng.standard_t(2, n) * 0.12
    sorted_abs = np.sort(np.abs(null))
    at_least = null_size - np.searchsorted(sorted_abs, np.abs(diff), side="left")
    return TrackPlotData(name, diff, (1.0 + at_least) / (1.0 + null_size), null)


def tops(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [TopVariant(f"chr1:{1000 * (i + 1):,} A>G rs{i}", "ATAC", float(rng.normal()) or 1.0,
                       (i + 1) / (NULL_SIZE + 1)) for i in range(count)]


@pytest.fixture
def figures(monkeypatch):
    """{file name: the matplotlib Figure written to it}, recorded as each is saved."""
    seen = {}
    save = cp._save

    def recording(plt, fig, path):
        seen[Path(path).name] = fig
        save(plt, fig, path)

    monkeypatch.setattr(cp, "_save", recording)
    return seen


@pytest.fixture
def no_warnings():
    """matplotlib warnings would reach the user's terminal: none are allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def assert_pngs(paths, folder: Path):
    assert [p.name for p in paths] == list(PLOT_NAMES)
    assert all(p.parent == folder for p in paths)
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    # Atomic writes leave no temporary file behind.
    assert sorted(p.name for p in folder.iterdir()) == sorted(PLOT_NAMES)


def qq_point_counts(fig):
    """Points drawn per track on the Q-Q axes (the marker-only lines; the diagonal and the floor
    are lines)."""
    return [len(line.get_xdata()) for ax in fig.axes for line in ax.lines if line.get_linestyle() == "None"
            and len(line.get_xdata())]


def legends(fig):
    return [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)


def texts(fig):
    found = [t.get_text() for ax in fig.axes for t in ax.texts]
    found += [t.get_text() for legend in legends(fig) for t in legend.get_texts()]
    found += [legend.get_title().get_text() for legend in legends(fig)]
    found += [ax.get_title() for ax in fig.axes]
    found += [label.get_text() for label in (fig._supxlabel, fig._supylabel) if label]
    return found + ([fig._suptitle.get_text()] if fig._suptitle else [])


def outside_the_data(fig):
    """Every legend's box is clear of every visible axes' box (drawn first, in pixels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the saved figure was closed: draw it on a canvas of its own
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]
    for legend in legends(fig):
        box = legend.get_window_extent(renderer)
        if any(box.overlaps(ax_box) for ax_box in boxes):
            return False
    return bool(legends(fig))


def test_one_track_writes_three_pngs(tmp_path, figures, no_warnings):
    folder = tmp_path / "plots" / "deeper"  # created, parents too
    paths = write_calibration_plots(folder, [track("ATAC", 3000, 1)], tops(12), NULL_SIZE, 7)
    assert_pngs(paths, folder)
    qq = figures["qq.png"]
    assert qq._suptitle.get_text() == "diff_p Q-Q against a genome-wide null of N = 2,000 SNVs (seed 7)"
    assert "null floor: diff_p = 1/(N + 1) = 1/2,001\n(no null SNV changed the prediction as much)" in texts(qq)
    floor_lines = [line for line in qq.axes[0].lines if line.get_linestyle() == "--"]
    assert [tuple(line.get_ydata()) for line in floor_lines] == [(null_floor(NULL_SIZE),) * 2]
    assert qq_point_counts(qq) == [3000]
    diff = figures["diff_vs_null.png"]
    assert "null: N = 2,000 random SNVs" in texts(diff) and "ATAC (n = 3,000 alleles)" in texts(diff)
    bars = figures["top_variants.png"].axes[0].patches
    assert len(bars) == 12
    assert [b.get_width() for b in bars] == [abs(v.diff) for v in rank_top(tops(12))]


def test_three_tracks_one_without_alleles(tmp_path, figures, no_warnings):
    empty = TrackPlotData("H3K27ac", np.empty(0), np.empty(0), track("x", 1, 2).null_diff)
    tracks = [track("ATAC", 2000, 1), empty, track("DNase", 500, 3)]
    paths = write_calibration_plots(tmp_path, tracks, tops(5), NULL_SIZE, 0)
    assert_pngs(paths, tmp_path)
    qq = figures["qq.png"]
    assert len(qq.axes) == 1  # <= 6 tracks share one panel, with a legend
    assert qq_point_counts(qq) == [2000, 500]
    assert "H3K27ac: no scored alleles" in texts(qq)
    diff = figures["diff_vs_null.png"]
    assert len([ax for ax in diff.axes if ax.get_visible()]) == 3
    assert "no scored alleles" in texts(diff)


def test_many_tracks_get_a_grid_capped_at_16(tmp_path, figures, no_warnings):
    tracks = [track(f"t{i}", 200, i) for i in range(20)]
    write_calibration_plots(tmp_path, tracks, tops(3), NULL_SIZE, 0)
    for name in ("qq.png", "diff_vs_null.png"):
        fig = figures[name]
        assert len([ax for ax in fig.axes if ax.get_visible()]) == 16
        assert "first 16 of 20 tracks shown: 4 left out" in fig._suptitle.get_text()
    assert qq_point_counts(figures["qq.png"]) == [200] * 16


def test_qq_points_keeps_the_smallest_and_the_largest_exactly():
    rng = np.random.default_rng(0)
    n = 1_000_000
    p = rng.uniform(size=n)
    p[:50] = 1.0  # exactly 1: observed -log10 p is 0
    p[50:60] = np.nan  # dropped
    expected, observed = qq_points(p)
    finite = np.sort(p[np.isfinite(p)])
    m = finite.size
    assert expected.size == observed.size <= QQ_MAX_POINTS
    assert expected.size > QQ_MAX_POINTS * 0.9  # the budget is used, not wasted on duplicates
    np.testing.assert_array_equal(observed[:QQ_EXACT], -np.log10(finite[:QQ_EXACT]))
    np.testing.assert_array_equal(expected[:QQ_EXACT], -np.log10((np.arange(QQ_EXACT) + 0.5) / m))
    assert observed[-1] == 0.0 and not np.signbit(observed[-1])  # the largest p, 1
    assert expected[-1] == -np.log10((m - 0.5) / m)
    assert np.all(np.diff(expected) < 0)  # distinct ranks, smallest p first
    assert np.all(np.diff(observed) <= 0)
    # The thinned ranks are evenly spaced in expected -log10 p: no gap much wider than the grid step.
    step = expected[QQ_EXACT] / (QQ_MAX_POINTS - QQ_EXACT - 2)
    assert np.max(-np.diff(expected[QQ_EXACT:])) < 3 * step


def test_qq_points_keeps_everything_when_small():
    p = np.array([0.5, 1.0, 0.01, np.nan, 0.2, 2.0])  # 2.0 counts as 1
    expected, observed = qq_points(p)
    np.testing.assert_array_equal(observed, -np.log10([0.01, 0.2, 0.5, 1.0, 1.0]) + 0.0)
    np.testing.assert_array_equal(expected, -np.log10((np.arange(5) + 0.5) / 5))
    assert [a.size for a in qq_points(np.array([np.nan]))] == [0, 0]
    assert [a.size for a in qq_points(np.empty(0))] == [0, 0]
    with pytest.raises(ValueError):
        qq_points(p, exact=10, max_points=10)


def test_a_million_alleles_stay_fast_and_small(tmp_path, figures):
    big = track("ATAC", 1_000_000, 5, null_size=10_000)
    t0 = time.perf_counter()
    write_calibration_plots(tmp_path, [big], tops(30), 10_000, 1)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20, elapsed  # ~2 s here; generous for a loaded CI machine
    assert qq_point_counts(figures["qq.png"]) == [qq_points(big.diff_p)[0].size]
    assert max(qq_point_counts(figures["qq.png"])) <= QQ_MAX_POINTS
    assert (tmp_path / "qq.png").stat().st_size < 500_000


def test_empty_inputs_draw_figures_that_say_so(tmp_path, figures, no_warnings):
    paths = write_calibration_plots(tmp_path, [], [], 0, 3)
    assert_pngs(paths, tmp_path)
    assert "no tracks" in texts(figures["qq.png"])
    assert "no tracks" in texts(figures["diff_vs_null.png"])
    assert "no variants to show" in texts(figures["top_variants.png"])


def test_nan_and_all_empty_track(tmp_path, figures, no_warnings):
    nan_track = TrackPlotData("ATAC", np.array([np.nan, 0.5, -0.2]), np.array([np.nan, 1.0, 1.0]),
                              np.array([0.0, np.nan, 0.1, -0.3]))
    nothing = TrackPlotData("CTCF", np.array([np.nan]), np.array([np.nan]), np.empty(0))
    paths = write_calibration_plots(tmp_path, [nan_track, nothing], tops(1), 3, 0)
    assert_pngs(paths, tmp_path)
    assert qq_point_counts(figures["qq.png"]) == [2]
    assert "CTCF: no scored alleles" in texts(figures["qq.png"])
    assert "no scored alleles, no null values" in texts(figures["diff_vs_null.png"])
    assert "ATAC (n = 2 alleles)" in texts(figures["diff_vs_null.png"])


def test_top_variants_ranked_by_effect_capped_and_coloured_by_sign(tmp_path, figures, no_warnings):
    from matplotlib.colors import to_rgba

    top = tops(40)
    top[0] = TopVariant("chr2:5 C>T", "DNase", -9.0, 1.0)  # the largest |diff|, whatever its p
    top[1] = TopVariant("chr2:9 G>A", "DNase", 0.0, 0.5)  # no change: the last bar
    write_calibration_plots(tmp_path, [track("ATAC", 100, 1)], top, NULL_SIZE, 0)
    fig = figures["top_variants.png"]
    ax = fig.axes[0]
    assert len(ax.patches) == MAX_TOP
    assert "first 30 of 40" in fig._suptitle.get_text()
    ranked = rank_top(top)[:MAX_TOP]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{v.label} ({v.track})" for v in ranked]
    assert ax.get_yticklabels()[0].get_text() == "chr2:5 C>T (DNase)"
    widths = [b.get_width() for b in ax.patches]
    assert widths == [abs(v.diff) for v in ranked] and widths == sorted(widths, reverse=True)
    expected = [to_rgba(cp._GAIN if v.diff > 0 else cp._LOSS if v.diff < 0 else cp._ZERO) for v in ranked]
    assert [b.get_facecolor() for b in ax.patches] == expected
    # each bar's label: its signed diff and its diff_p
    assert [t.get_text() for t in ax.texts] == [f" {v.diff:+.3g}, {p_text(v.diff_p, NULL_SIZE)}" for v in ranked]
    assert ax.texts[0].get_text() == " -9, p = 1"
    # the unit on the axis; the legend under the axes, not over a bar
    assert ax.get_xlabel() == f"|diff| = |alt_sum - ref_sum|\n{cp.DIFF_UNIT}"
    assert ax.get_legend() is None and outside_the_data(fig)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    note = f"beside each bar: diff, and diff_p; p ≤ 1/{NULL_SIZE + 1:,}: no null SNV changed the prediction as much"
    assert legend == ["gain (alt > ref)", "loss (alt < ref)", note]  # the no-change row ranks 40th: not shown
    write_calibration_plots(tmp_path, [track("ATAC", 100, 1)], top[:3], NULL_SIZE, 0)
    fig = figures["top_variants.png"]
    assert [b.get_facecolor() for b in fig.axes[0].patches][-1] == to_rgba(cp._ZERO)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["gain (alt > ref)", "loss (alt < ref)",
                                                                  "no change", note]


def test_rank_top_orders_by_abs_diff_then_p_then_input_order():
    rows = [TopVariant("a", "t", 1.0, 0.5), TopVariant("b", "t", -3.0, 0.5), TopVariant("c", "t", 3.0, 0.01),
            TopVariant("d", "t", 3.0, 0.01), TopVariant("e", "t", -3.0, float("nan")), TopVariant("f", "t", 0.0, 1e-4)]
    assert [v.label for v in rank_top(rows)] == ["c", "d", "b", "e", "a", "f"]
    assert rank_top([]) == []


def test_the_collector_keeps_the_rows_rank_top_would_keep():
    """The top variants kept while reading an output (a heap of 30) are the first 30 of all rows
    ranked by rank_top, ties included: in TSV and in VCF."""
    from epiformer_cli.variants.plot_data import TOP, PlotCollector

    rng = np.random.default_rng(2)
    n = 3 * TOP
    diffs = np.round(rng.normal(size=n), 1)  # one decimal: many ties in |diff|
    ps = rng.choice([1 / 101, 2 / 101, 0.5], size=n)
    header = "chrom\tpos\tid\tref\talt\ttrack\tstatus\tdiff\tdiff_p\n"
    rows = [f"chr1\t{1000 + i // 2}\tv{i // 2}\tA\tG\t{'ab'[i % 2]}\tok\t{diffs[i]:g}\t{ps[i]:.6g}\n"
            for i in range(n)]
    collector = PlotCollector(["a", "b"], "tsv")
    collector.feed(header + "".join(rows))
    _, top = collector.plot_inputs(type("Null", (), {"tracks": {"a": {"diff": []}, "b": {"diff": []}}})())
    every = [TopVariant(f"chr1:{1000 + i // 2:,} A>G v{i // 2}", "ab"[i % 2], float(f"{diffs[i]:g}"),
                        float(f"{ps[i]:.6g}")) for i in range(n)]
    assert [(v.label, v.track) for v in top] == [(v.label, v.track) for v in rank_top(every)[:TOP]]
    # the same rows as VCF INFO fields (one record per variant, both tracks in it)
    vcf = collector.__class__(["a", "b"], "vcf")
    vcf.feed("".join(f"chr1\t{1000 + j}\tv{j}\tA\tG\t.\t.\tEPI_STATUS=ok;EPI_DIFF_a={diffs[2 * j]:g};"
                     f"EPI_DIFF_P_a={ps[2 * j]:.6g};EPI_DIFF_b={diffs[2 * j + 1]:g};EPI_DIFF_P_b={ps[2 * j + 1]:.6g}\n"
                     for j in range(n // 2)))
    _, vcf_top = vcf.plot_inputs(type("Null", (), {"tracks": {"a": {"diff": []}, "b": {"diff": []}}})())
    assert [(v.label, v.track) for v in vcf_top] == [(v.label, v.track) for v in top]


def test_p_text_at_the_null_floor_and_above():
    assert p_text(1 / 10_001, 10_000) == "p ≤ 1/10,001"
    assert p_text(float("9.999e-05"), 10_000) == "p ≤ 1/10,001"  # as printed, 6 significant digits
    assert p_text(2 / 10_001, 10_000) == "p = 0.0002"
    assert p_text(0.0123, 10_000) == "p = 0.012"
    assert p_text(float("nan"), 10_000) == "p NA"
    assert p_text(1.0, 0) == "p = 1"  # no null: no floor
    assert at_floor(1 / 101, 100) and not at_floor(1.5 / 101, 100) and not at_floor(1.0, 0)


def test_legends_sit_outside_the_data_and_lambda_is_explained(tmp_path, figures, no_warnings):
    tracks = [track("ATAC", 500, 1), track("DNase", 400, 2)]
    write_calibration_plots(tmp_path, tracks, tops(5), NULL_SIZE, 0, unit=diff_unit(5))
    for name in PLOT_NAMES:
        assert outside_the_data(figures[name]), name
    qq = figures["qq.png"]
    legend = qq.axes[0].get_legend()
    assert legend.get_title().get_text().replace("\n", " ") == LAMBDA_TEXT
    assert f"ATAC (n = 500, λ = {inflation(tracks[0].diff_p):.2f})" in texts(qq)
    unit = "predicted accessibility summed over the 5 scored 128 bp bins around the variant"
    assert diff_unit(5) == unit
    diff = figures["diff_vs_null.png"]
    assert diff._supxlabel.get_text().replace("\n", " ") == f"diff = alt_sum - ref_sum: {unit}, in each track's units"
    assert diff._supylabel.get_text() == "density: fraction of alleles per unit of diff (log scale)"
    assert figures["top_variants.png"].axes[0].get_xlabel() == f"|diff| = |alt_sum - ref_sum|\n{unit}"
    write_calibration_plots(tmp_path / "grid", [track(f"t{i}", 50, i) for i in range(8)], tops(2), NULL_SIZE, 0)
    grid = figures["qq.png"]
    assert outside_the_data(grid)
    assert grid._suptitle.get_text().endswith(__import__("textwrap").fill(LAMBDA_TEXT, 120))


def test_names_with_dollars_are_drawn_literally(tmp_path, figures, no_warnings):
    """A track or variant name from the user's file is text, never mathtext."""
    from matplotlib.text import Text

    name = "ATAC $x$ 5$"
    tracks = [track(name, 100, 1)]
    write_calibration_plots(tmp_path, tracks, [TopVariant("chr1:5 A>G $rs$1", name, 2.0, 0.5)], NULL_SIZE, 0)
    shown = [t for fig in figures.values() for t in texts(fig) if "$" in t]
    assert shown
    for text in shown:
        plain, math = Text(text=text)._preprocess_math(text)
        assert not math and ("$x$" in plain or "$rs$" in plain), text
    labels = [t.get_text() for t in figures["top_variants.png"].axes[0].get_yticklabels()]
    assert Text()._preprocess_math(labels[0]) == (f"chr1:5 A>G $rs$1 ({name})", False)


def test_missing_matplotlib_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(UsageError) as info:
        write_calibration_plots(tmp_path / "plots", [track("ATAC", 10, 1)], [], NULL_SIZE, 0)
    assert str(info.value) == "--plots needs matplotlib: pip install 'epiformer[plots]'"
    assert info.value.exit_code == 2
    assert not (tmp_path / "plots").exists()  # nothing made before the check


def test_a_file_as_folder_is_a_usage_error(tmp_path):
    target = tmp_path / "plots"
    target.write_text("")
    with pytest.raises(UsageError, match="is a file"):
        write_calibration_plots(target, [track("ATAC", 10, 1)], [], NULL_SIZE, 0)


def test_diff_bins_are_symmetric_and_cover_both_tails():
    rng = np.random.default_rng(3)
    diff = rng.normal(0, 0.1, 100_000)
    null = rng.normal(0, 1.0, 1_000)  # wider: its own quantiles decide the range
    edges = diff_bins(diff, null)
    assert edges[0] == -edges[-1]
    assert edges[-1] == pytest.approx(np.max(np.abs(np.quantile(null, [0.001, 0.999]))))
    np.testing.assert_array_equal(diff_bins(np.zeros(5), np.zeros(3), bins=2), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(diff_bins(np.zeros(5), np.array([0.0] * 5000 + [4.0]), bins=2),
                                  [-4.0, 0.0, 4.0])  # all quantiles 0: the largest |value|


def test_inflation_is_one_for_uniform_p_values():
    rng = np.random.default_rng(4)
    assert inflation(rng.uniform(size=200_001)) == pytest.approx(1.0, abs=0.02)
    assert inflation(np.array([np.nan])) is None
    assert null_floor(9) == pytest.approx(1.0)


def test_import_does_not_import_matplotlib():
    code = ("import sys, epiformer_cli.variants.calibration_plots\n"
            "assert 'matplotlib' not in sys.modules\n")
    root = Path(epiformer_cli.__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
