"""Reading model inputs from a genome FASTA and a conservation bigWig, a span at a time.

Consecutive windows overlap (each window carries ``crop_bp`` of context on both sides), so inputs
are read once per span of consecutive windows and the windows are sliced out of it.
All coordinates are 0-based, half-open.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.io.bigwig import BigWig
from epiformer_cli.io.genome import Genome


class WindowReader:
    """Bases and conservation of genome intervals, N and 0 beyond chromosome ends.

    Args:
        genome: the FASTA.
        conservation: the conservation bigWig, already bound to the genome's names
            (``BigWig.bind``), or None (all zero).
        context: extra bases on each side of every window (the engine's ``context``).
    """

    def __init__(self, genome: Genome, conservation: Optional[BigWig], context: int = 0) -> None:
        self.genome = genome
        self.conservation = conservation
        self.context = int(context)

    def read(self, chrom: str, start: int, end: int) -> Tuple[np.ndarray, np.ndarray]:
        """Codes (uint8) and conservation (float32, missing = 0) of ``chrom:[start, end)``."""
        codes = self.genome.fetch(chrom, start, end)
        if self.conservation is None:
            cons = np.zeros(end - start, dtype=np.float32)
        else:
            cons = self.conservation.values(chrom, start, end, missing=0.0)
        return codes, cons

    def windows(self, chrom: str, starts: Sequence[int], window_bp: int) -> Tuple[np.ndarray, np.ndarray]:
        """Inputs of the windows ``[s - context, s + window_bp + context)`` for ``s`` in ``starts``.

        Reads the covering span once. Returns codes (n, window_bp + 2 context) uint8 and
        conservation of the same shape, float32.
        """
        starts = np.asarray(starts, dtype=np.int64)
        length = window_bp + 2 * self.context
        lo = int(starts.min()) - self.context
        hi = int(starts.max()) + window_bp + self.context
        codes, cons = self.read(chrom, lo, hi)
        offsets = starts - self.context - lo
        # rows of a strided view: one copy per window, no (n, length) index array
        view = np.lib.stride_tricks.sliding_window_view
        return view(codes, length)[offsets], view(cons, length)[offsets]
