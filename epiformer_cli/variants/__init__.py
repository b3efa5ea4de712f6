"""Variant effect scoring: windows, indel re-alignment, effects, output formats, resumable chunks.

The job that ties them together is :func:`epiformer_cli.jobs.score_variants.score_variants`.
"""

from epiformer_cli.variants.effects import EFFECTS, effects
from epiformer_cli.variants.windows import WINDOW_MODES, build_alt, realign, score_bin_range, window_start

__all__ = ["EFFECTS", "WINDOW_MODES", "build_alt", "effects", "realign", "score_bin_range", "window_start"]
