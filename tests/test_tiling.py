import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epiformer_cli.data.tiling import OUT_BINS, OUT_BP, WINDOW_BP, WindowGrid


def test_full_size_geometry():
    grid = WindowGrid()
    assert (grid.window_bp, grid.crop_bp, grid.bin_bp) == (98_304, 8_192, 128)
    assert grid.out_bp == OUT_BP == 81_920 and grid.out_bins == OUT_BINS == 640
    w = grid.window("chr1", 0)
    assert (w.start, w.end, w.out_start, w.out_end) == (-8_192, 90_112, 0, 81_920)
    assert w.end - w.start == WINDOW_BP
    w1 = grid.window("chr1", 1)
    assert w1.out_start == w.out_end and w1.start == w.start + OUT_BP


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 5_000),
    crop_bins=st.integers(0, 3),
    out_bins=st.integers(1, 6),
)
def test_outputs_tile_a_chromosome_exactly(length, crop_bins, out_bins):
    bin_bp = 16  # small bins so hypothesis explores many edge cases cheaply
    grid = WindowGrid(window_bp=(out_bins + 2 * crop_bins) * bin_bp, crop_bp=crop_bins * bin_bp, bin_bp=bin_bp)
    coverage = np.zeros(length, dtype=int)
    windows = list(grid.tile("c", length))
    assert len(windows) == grid.n_windows(length)
    for w in windows:
        assert w.end - w.start == grid.window_bp
        assert w.out_start - w.start == grid.crop_bp
        n = grid.bins_in_chrom(w, length)
        starts = grid.bin_starts(w)[:n]
        for s in starts:
            coverage[s : min(s + bin_bp, length)] += 1
        # every bin that is kept starts inside the chromosome; the first dropped one does not
        assert (starts < length).all()
        if n < grid.out_bins:
            assert grid.bin_starts(w)[n] >= length
    # every base in exactly one output bin
    assert (coverage == 1).all()
    # and the window index of each base is the one whose output holds it
    pos = length - 1
    w = grid.window("c", grid.window_index_for(pos))
    assert w.out_start <= pos < w.out_end


def test_tile_genome_keeps_chromosome_order():
    grid = WindowGrid(window_bp=512, crop_bp=128, bin_bp=128)
    chroms = [w.chrom for w in grid.tile_genome({"chrB": 300, "chrA": 10})]
    assert chroms == ["chrB", "chrB", "chrA"]


def test_invalid_geometry_is_refused():
    with pytest.raises(ValueError):
        WindowGrid(window_bp=1000, crop_bp=0, bin_bp=128)
    with pytest.raises(ValueError):
        WindowGrid(window_bp=256, crop_bp=128, bin_bp=128)
