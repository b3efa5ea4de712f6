"""The strongest peaks of a bigWig track as regions to explain (``explain --peaks``): the N highest
non-overlapping windows, chosen the same way by every shard of a run.

All coordinates are 0-based, half-open, on the FASTA's chromosome names. The track is read on the
genome-wide grid of the model's bins (128 bp, starting at 0: the bins of ``predict``'s
``pred.<track>.bw``, whose values are then read exactly); a bin's value is the mean over its bases
(a per-base target track is averaged, bases without data counting 0), and a bin without data (or
only NaN) is no peak.
Windows are chosen greedily: the highest bin, a window of ``width`` bp centred on it (shifted
inside near a chromosome end), every bin whose window would overlap it dropped, repeat. Equal
values are taken in genome order (the FASTA's chromosome order, then position), so the choice is a
function of the file and the options alone.
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import List, Mapping, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.explain.regions import Region, max_region_bp
from epiformer_cli.io.chroms import NameResolver

log = logging.getLogger(__name__)

#: bins read from the bigWig at a time (1 Mb of per-base values at 128 bp bins): memory stays
#: bounded whatever the chromosome; only one float64 value per bin of a chromosome is held
BLOCK_BINS = 8192
#: ranked bins turned into Python ints at a time (a few per chosen window are usually enough)
_SLICE = 1 << 16

#: one chosen window: (value, chromosome's rank in the FASTA, summit bin, chrom, start, end)
Peak = Tuple[float, int, int, str, int, int]


def peak_regions(path: str | Path, chrom_sizes: Mapping[str, int], config, top: int, width: int,
                 label: str = "--peaks bigWig") -> List[Region]:
    """The ``top`` highest non-overlapping windows of ``width`` bp of a bigWig track, as regions
    ``peak_1``, ``peak_2``, ... in rank order (highest value first; equal values in genome order).

    Args:
        path: the bigWig (per-base or binned values; NaN and positions without data are no peak).
        chrom_sizes: the FASTA's chromosomes (name -> bp), in the FASTA's order: the genome order of
            ties. Chromosomes of the bigWig the FASTA lacks (aliases such as chr1/1 resolved) are
            skipped with one warning.
        config: the model's config: its bin size is the grid, its output span the longest window.
        top: windows wanted (fewer, with a warning, when the track has fewer).
        width: bp of each window, centred on its bin (``[centre - width // 2, + width)``).

    Returns:
        Regions with ``index`` = rank - 1, in rank order.

    Raises:
        UsageError: ``width`` longer than a model window can explain.
        InputFileError: not a readable bigWig, no chromosome in common with the FASTA, or no value
            on them.
    """
    import pyBigWig

    from epiformer_cli.io.bigwig import BigWig

    longest = max_region_bp(config)
    if width > longest:
        raise UsageError(f"--peak-width {width:,} bp is longer than the model's output span allows ({longest:,} bp): "
                         "use a smaller --peak-width")
    path = Path(path)
    order = {name: rank for rank, name in enumerate(chrom_sizes)}
    with BigWig(path, label) as checked:  # its refusals: not found, not a bigWig, damaged
        file_sizes = dict(checked.chrom_sizes)
    handle = pyBigWig.open(str(path))
    try:
        resolve = NameResolver(list(chrom_sizes))
        pairs, skipped = [], []
        for name in file_sizes:
            found = resolve(name)
            if found is None:
                skipped.append(name)
            else:
                pairs.append((found, name))
        if not pairs:
            raise InputFileError(f"{path}: {label} has no chromosome of the FASTA (it has "
                                 f"{', '.join(list(file_sizes)[:5])}; the FASTA has {resolve.preview}): "
                                 "use the FASTA of the track's assembly")
        if skipped:
            log.warning("%s: %d chromosome(s) the FASTA lacks are skipped (%s%s)", path, len(skipped),
                        ", ".join(skipped[:5]), ", ..." if len(skipped) > 5 else "")
        best: List[Peak] = []
        for fasta_name, file_name in sorted(pairs, key=lambda pair: order[pair[0]]):
            size = chrom_sizes[fasta_name]
            values = bin_means(handle, file_name, size, config.bin_size, path)
            found = greedy_peaks(values, size, config.bin_size, width, top)
            rank = order[fasta_name]
            best.extend((v, rank, b, fasta_name, lo, hi) for v, b, lo, hi in found)
            # chromosomes never overlap: the genome's greedy choice is the best of each one's own
            best = sorted(best, key=_key)[:top]
    finally:
        handle.close()
    if not best:
        raise InputFileError(f"{path}: {label} has no value on the FASTA's chromosomes: no peak to explain "
                             "(give a track with data, e.g. a predict output)")
    if len(best) < top:
        log.warning("%s holds %d non-overlapping %d bp window(s), fewer than --top %d: explaining them", path,
                    len(best), width, top)
    return [Region(i, chrom, lo, hi, f"peak_{i + 1}", source=f"{path}: peak {i + 1} ({value:g})")
            for i, (value, _, _, chrom, lo, hi) in enumerate(best)]


def _key(peak: Peak):
    value, rank, b = peak[:3]
    return (-value, rank, b)


def bin_means(handle, chrom: str, size: int, bin_size: int, path: str | Path = "bigWig") -> np.ndarray:
    """Mean value of each ``bin_size`` bp bin of ``chrom`` (the file's name) over ``[0, size)``, read
    from the pyBigWig ``handle`` of ``path``.

    Bases without data (or NaN) count as 0 in a bin that holds data (a coverage track leaves out
    its zeros); a bin without any is NaN, no peak.

    Returns:
        (ceil(size / bin_size),) float64. Read :data:`BLOCK_BINS` bins at a time (the last bin of
        a chromosome may be shorter: its mean is over its own bases).
    """
    n = -(-size // bin_size)
    out = np.full(n, np.nan)
    for b0 in range(0, n, BLOCK_BINS):
        b1 = min(n, b0 + BLOCK_BINS)
        lo, hi = b0 * bin_size, min(size, b1 * bin_size)
        values = np.full((b1 - b0) * bin_size, np.nan, dtype=np.float32)
        values[: hi - lo] = _values(handle, path, chrom, lo, hi)
        values = values.reshape(b1 - b0, bin_size)
        finite = np.isfinite(values)
        held = finite.any(axis=1)
        # float64 sums: a bin of equal values (a predict output) reads back exactly, so equal bins stay equal
        sums = np.where(finite, values, 0).sum(axis=1, dtype=np.float64)
        bases = np.full(b1 - b0, bin_size)
        bases[-1] = hi - (b1 - 1) * bin_size
        out[b0:b1][held] = sums[held] / bases[held]
    return out


def _values(handle, path, chrom: str, lo: int, hi: int) -> np.ndarray:
    """Per-base values of ``chrom:[lo, hi)``, float32, NaN without data (``hi`` within the file's
    chromosome or past it)."""
    out = np.full(hi - lo, np.nan, dtype=np.float32)
    end = min(hi, handle.chroms(chrom))
    if end <= lo:
        return out
    try:
        got = handle.values(chrom, lo, end, numpy=True)
    except RuntimeError as exc:
        raise InputFileError(f"{path}: cannot read {chrom}:{lo}-{end} ({exc}): the file may be truncated") from exc
    if len(got) == end - lo:  # a file without any data reads as empty arrays: all missing
        out[: end - lo] = got
    return out


def window(b: int, size: int, bin_size: int, width: int) -> Tuple[int, int]:
    """The ``width`` bp window centred on bin ``b`` of a ``size`` bp chromosome, shifted inside
    its ends (the whole chromosome when it is shorter than ``width``); 0-based, half-open."""
    centre = (b * bin_size + min((b + 1) * bin_size, size)) // 2
    lo = centre - width // 2
    hi = lo + width
    if lo < 0:
        lo, hi = 0, width
    if hi > size:
        lo, hi = max(0, size - width), size
    return lo, min(hi, size)


def greedy_peaks(values: np.ndarray, size: int, bin_size: int, width: int, top: int
                 ) -> List[Tuple[float, int, int, int]]:
    """The first ``top`` windows of the greedy choice on one chromosome.

    Args:
        values: (n_bins,) bin values (NaN: no peak), as :func:`bin_means` returns them.

    Returns:
        ``(value, bin, start, end)`` per window, highest value first, equal values by position.
    """
    held = np.flatnonzero(~np.isnan(values))
    # a stable sort keeps equal values in genome order
    ranked = held[np.argsort(-values[held], kind="stable")]
    starts: List[int] = []  # the chosen windows, sorted; they never overlap, so ends sort too
    ends: List[int] = []
    out: List[Tuple[float, int, int, int]] = []
    for first in range(0, len(ranked), _SLICE):
        for b in ranked[first:first + _SLICE].tolist():
            lo, hi = window(b, size, bin_size, width)
            k = bisect.bisect_right(starts, lo)
            if (k > 0 and ends[k - 1] > lo) or (k < len(starts) and starts[k] < hi):
                continue
            starts.insert(k, lo)
            ends.insert(k, hi)
            out.append((float(values[b]), b, lo, hi))
            if len(out) >= top:
                return out
    return out


