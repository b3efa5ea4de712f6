"""The regions ``explain`` works on, read from a BED or built around VCF variants, and the model
window each one is explained in.

All coordinates are 0-based, half-open, on the FASTA's chromosome names. A region is explained in
ONE window whose output span holds all of it, as centred as the genome-wide 128 bp bin grid allows
(the output span starts on a multiple of 128, so the predicted bins of ``explain`` are the bins
of ``predict``'s ``pred.<track>.bw``). The explained quantity of a region is the prediction summed
over the output bins that overlap it, per track.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.bed import bed_lines
from epiformer_cli.io.chroms import NameResolver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """The allele a variant region explains (the reference allele is explained too).

    Attributes:
        id: the VCF ID (``.`` when missing); pos: VCF POS (1-based, for output).
        start: 0-based start of REF on the FASTA's chromosome; ref, alt: upper-case alleles.
    """

    id: str
    pos: int
    start: int
    ref: str
    alt: str

    @property
    def label(self) -> str:
        """``chr1:12345:A>G`` style (1-based POS, as in the VCF)."""
        return f"{self.pos}:{self.ref}>{self.alt}"


@dataclass(frozen=True)
class Region:
    """One region to explain.

    Attributes:
        index: position in the input (0-based); the output order.
        chrom: the FASTA's name of the chromosome.
        start, end: the reference span explained (0-based, half-open).
        name: the BED name column, or ``chrom:start-end``; for variants the VCF ID or
            ``chrom:POS:REF>ALT``.
        variant: the variant explained in this region (None for BED regions).
        source: where it came from, for messages (``regions.bed:12``).
    """

    index: int
    chrom: str
    start: int
    end: int
    name: str
    variant: Optional[Variant] = None
    source: str = ""

    @property
    def length(self) -> int:
        return self.end - self.start

    def key(self) -> str:
        """A short digest of what the region is: a changed input never reuses a stale piece."""
        v = self.variant
        text = f"{self.index}\t{self.chrom}\t{self.start}\t{self.end}\t{self.name}"
        if v is not None:
            text += f"\t{v.start}\t{v.ref}\t{v.alt}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Placement:
    """Where a span sits in its model window.

    Attributes:
        window: genome coordinate of the window's first input base (may be negative near a
            chromosome start; bases past the ends read as N with conservation 0).
        out_start: genome coordinate of the first output bin (``window + crop_bp``; a multiple of 128).
        first, last: window offsets of the span (``first = start - window``).
        bins: ``(b0, b1)`` output bins that overlap the span (summed for the explained value).
    """

    window: int
    out_start: int
    first: int
    last: int
    bins: Tuple[int, int]


def place(start: int, end: int, config) -> Placement:
    """The window that explains ``[start, end)``: its output span (on the 128 bp grid) holds the
    whole span and is as centred on it as the grid allows.

    Raises:
        UsageError: the span does not fit in the model's output span.
    """
    bin_bp = config.bin_size
    out_bp = config.out_bins * bin_bp
    lo = -(-(end - out_bp) // bin_bp) * bin_bp  # the earliest grid start still covering `end`
    hi = (start // bin_bp) * bin_bp  # the latest grid start still covering `start`
    if lo > hi:
        raise UsageError(f"{end - start:,} bp do not fit in the model's output span of {out_bp:,} bp")
    ideal = (start + end - out_bp) / 2
    out_start = int(min(max(round(ideal / bin_bp) * bin_bp, lo), hi))
    window = out_start - config.crop_bp
    b0 = (start - out_start) // bin_bp
    b1 = -(-(end - out_start) // bin_bp)
    return Placement(window, out_start, start - window, end - window, (b0, b1))


def max_region_bp(config) -> int:
    """The longest region every placement can hold (one bin less than the output span: a region
    that does not start on a bin edge needs part of one more bin)."""
    return (config.out_bins - 1) * config.bin_size + 1


def read_regions(path: str | Path, chrom_sizes: Dict[str, int], config) -> List[Region]:
    """Regions of a BED file (columns chrom, start, end and an optional name).

    Raises:
        InputFileError: a chromosome the FASTA lacks, an interval past its chromosome's end, an
            empty or inverted interval, or one longer than the model's output span: one line
            naming the BED line and the fix.
    """
    path = Path(path)
    resolve = NameResolver(chrom_sizes)
    regions: List[Region] = []
    longest = max_region_bp(config)
    for lineno, fields in bed_lines(path, "regions BED"):
        chrom, start, end = fields[0], int(fields[1]), int(fields[2])
        where = f"{path}:{lineno}"
        label = f"{chrom}:{start}-{end}"
        fasta_chrom = resolve(chrom)
        if fasta_chrom is None:
            raise InputFileError(f"{where}: region {label} is on {chrom!r}, which the FASTA lacks (it has "
                                 f"{resolve.preview}): drop the line or use the FASTA of the BED's assembly")
        if start < 0 or end <= start:
            raise InputFileError(f"{where}: region {label} is empty or inverted (need 0 <= start < end)")
        size = chrom_sizes[fasta_chrom]
        if end > size:
            raise InputFileError(f"{where}: region {label} runs past the end of {fasta_chrom} ({size:,} bp): "
                                 "fix the BED or use the FASTA of its assembly")
        if end - start > longest:
            raise InputFileError(f"{where}: region {label} is {end - start:,} bp, longer than the model's output "
                                 f"span allows ({longest:,} bp): split it into shorter regions")
        name = fields[3].strip() if len(fields) > 3 and fields[3].strip() not in ("", ".") else label
        regions.append(Region(len(regions), fasta_chrom, start, end, name, source=where))
    if not regions:
        raise InputFileError(f"{path}: no regions (a BED line is chrom, start, end[, name])")
    return regions


def variant_region(index: int, chrom: str, size: int, variant: Variant, flank: int, config, source: str) -> Region:
    """The region around a variant: ``flank`` bases each side of its REF allele (clipped to the
    chromosome). The span must fit in the output span with the ALT allele too.

    Raises:
        UsageError: flank plus allele longer than the output span.
    """
    start = max(0, variant.start - flank)
    end = min(size, variant.start + len(variant.ref) + flank)
    longest = max_region_bp(config)
    span = end - start + max(0, len(variant.alt) - len(variant.ref))
    if span > longest:
        raise UsageError(f"{source}: {chrom}:{variant.label} with --flank {flank} spans {span:,} bp, longer than "
                         f"the model's output span allows ({longest:,} bp): use a smaller --flank")
    name = variant.id if variant.id not in ("", ".") else f"{chrom}:{variant.label}"
    return Region(index, chrom, start, end, name, variant=variant, source=source)


def count_bases(regions: Sequence[Region]) -> int:
    """Bases explained over all regions, both alleles of variant regions counted."""
    total = 0
    for r in regions:
        total += r.length
        if r.variant is not None:
            total += r.length - len(r.variant.ref) + len(r.variant.alt)
    return total
