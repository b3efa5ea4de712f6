"""Tiling chromosomes into model windows whose central outputs cover every base exactly once.

A window is ``window_bp`` of input (98,304 bp at full size); the model predicts 128 bp bins for its
centre, dropping ``crop_bp`` at each side (64 bins = 8,192 bp at full size) for lack of context.
Stepping windows by the output span (``window_bp - 2 * crop_bp`` = 81,920 bp) makes the central
outputs tile a chromosome with no gap and no overlap. The first window starts ``crop_bp`` before
the chromosome; windows running past either end are padded with N by the genome reader.

All coordinates are 0-based, half-open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

WINDOW_BP = 98_304
BIN_BP = 128
N_BINS = WINDOW_BP // BIN_BP  # 768
CROP_BINS = 64
OUT_BINS = N_BINS - 2 * CROP_BINS  # 640
OUT_BP = OUT_BINS * BIN_BP  # 81,920


@dataclass(frozen=True)
class Window:
    """One model window on a chromosome.

    Attributes:
        chrom: chromosome name.
        start, end: input interval (``end - start == window_bp``); may extend past the chromosome.
        out_start, out_end: the interval the central output bins cover (bins of ``bin_bp``).
        index: position of the window in its chromosome's tiling.
    """

    chrom: str
    start: int
    end: int
    out_start: int
    out_end: int
    index: int = 0


@dataclass(frozen=True)
class WindowGrid:
    """The window geometry of a model: input length, crop and bin size, all in bp.

    Args:
        window_bp: input length (a multiple of ``bin_bp``).
        crop_bp: bases dropped from the output at each side (a multiple of ``bin_bp``).
        bin_bp: output resolution (128 bp in every Epiformer preset).
    """

    window_bp: int = WINDOW_BP
    crop_bp: int = CROP_BINS * BIN_BP
    bin_bp: int = BIN_BP

    def __post_init__(self) -> None:
        if self.window_bp % self.bin_bp or self.crop_bp % self.bin_bp:
            raise ValueError("window and crop must be whole numbers of bins")
        if self.out_bp <= 0:
            raise ValueError("the crop leaves no output bins")

    @classmethod
    def from_config(cls, config) -> "WindowGrid":
        """The grid of a ``ModelConfig`` (anything with ``seq_len``, ``crop_bins``, ``bin_size``)."""
        return cls(window_bp=config.seq_len, crop_bp=config.crop_bins * config.bin_size, bin_bp=config.bin_size)

    @property
    def out_bp(self) -> int:
        """Bases covered by one window's output bins."""
        return self.window_bp - 2 * self.crop_bp

    @property
    def out_bins(self) -> int:
        return self.out_bp // self.bin_bp

    def n_windows(self, chrom_length: int) -> int:
        """Windows needed for the outputs to cover a chromosome of ``chrom_length`` bp."""
        return -(-chrom_length // self.out_bp)

    def window(self, chrom: str, index: int) -> Window:
        """The ``index``-th window of the exact tiling of ``chrom``."""
        out_start = index * self.out_bp
        start = out_start - self.crop_bp
        return Window(chrom, start, start + self.window_bp, out_start, out_start + self.out_bp, index)

    def tile(self, chrom: str, chrom_length: int) -> Iterator[Window]:
        """Windows whose outputs tile ``chrom`` exactly: ``[0, chrom_length)`` covered once.

        The last window's output may run past the chromosome end; callers drop those bins
        (see :meth:`bins_in_chrom`).
        """
        for index in range(self.n_windows(chrom_length)):
            yield self.window(chrom, index)

    def tile_genome(self, chrom_sizes: Mapping[str, int]) -> Iterator[Window]:
        """The exact tiling of every chromosome, in ``chrom_sizes`` order."""
        for chrom, length in chrom_sizes.items():
            yield from self.tile(chrom, length)

    def bins_in_chrom(self, window: Window, chrom_length: int) -> int:
        """How many of ``window``'s output bins start inside the chromosome (the last may be partial)."""
        remaining = chrom_length - window.out_start
        return int(min(self.out_bins, max(0, -(-remaining // self.bin_bp))))

    def bin_starts(self, window: Window) -> np.ndarray:
        """Start coordinate of each output bin of ``window``, shape (out_bins,)."""
        return window.out_start + np.arange(self.out_bins, dtype=np.int64) * self.bin_bp

    def window_index_for(self, position: int) -> int:
        """Index of the tiling window whose output holds base ``position`` (0-based)."""
        return position // self.out_bp
