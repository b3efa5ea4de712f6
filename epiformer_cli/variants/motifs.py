"""The motif instance each variant overlaps (``score-variants --motif-db``): the sequences around
every scored allele, read from the run's FASTA and scanned by
:class:`~epiformer_cli.motifs.scan.MotifScanner`.

The variant's changed bases are REF and ALT without the bases they share: the common suffix is
dropped first, then the common prefix (VCF's anchor base of an indel), so ``CTT>CT`` is the
deletion of one T at the first T; an instance overlaps the variant when it covers one of the
changed bases (or, for an insertion, the junction it opens). See
:meth:`~epiformer_cli.motifs.scan.MotifScanner.strongest` for how the two alleles' instances are
paired (by offset from the first changed base).

Coordinates are 0-based, half-open, on the FASTA's chromosome names.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from epiformer_cli.bases import N, encode_sequence

#: allele keys, as the job keys its tasks: (record, allele).
Key = Tuple[int, int]


def changed_bases(start: int, ref: str, alt: str) -> Tuple[int, str, str]:
    """The bases REF and ALT do not share: the common suffix dropped, then the common prefix.

    Args:
        start: 0-based position of REF's first base.
    Returns (0-based start of the changed bases, changed REF, changed ALT); both empty when
    REF == ALT.
    """
    end = 0
    while end < min(len(ref), len(alt)) and ref[len(ref) - 1 - end] == alt[len(alt) - 1 - end]:
        end += 1
    ref, alt = ref[:len(ref) - end], alt[:len(alt) - end]
    first = 0
    while first < min(len(ref), len(alt)) and ref[first] == alt[first]:
        first += 1
    return start + first, ref[first:], alt[first:]


def local_sequences(genome, chrom: str, start: int, ref: str, alt: str,
                    flank: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """The reference and alternative sequences around one allele, as the scanner takes them.

    Args:
        genome: a :class:`~epiformer_cli.io.genome.Genome`; chrom: its name for the chromosome.
        start: 0-based position of REF's first base; ref, alt: the alleles (REF as the VCF gives
            it: the genome's bases unless the run uses the VCF's REF).
        flank: bases each side (the scanner's ``flank``, the longest motif - 1).
    Returns (ref codes, alt codes, span): ``flank`` bases before the changed bases, then the changed
    bases of each allele, then the bases after REF's, up to ``2 * flank + span`` in both
    (``span = max`` of the changed lengths; N past the chromosome's ends).
    """
    at, r, a = changed_bases(start, ref, alt)
    span = max(len(r), len(a))
    right = flank + span - min(len(r), len(a))  # the shorter allele reads further on
    around = genome.fetch(chrom, at - flank, at + len(r) + right)
    left, after = around[:flank], around[flank + len(r):]
    width = 2 * flank + span
    ref_codes = np.concatenate([left, encode_sequence(r), after])[:width]
    alt_codes = np.concatenate([left, encode_sequence(a), after])[:width]
    return ref_codes, alt_codes, span


def variant_motifs(tasks: Mapping[Key, object], genome, scanner) -> Dict[Key, Optional[object]]:
    """The strongest motif instance overlapping each ``ok`` allele (None when no instance passes
    its threshold in either allele, or REF == ALT); other statuses are left out.

    Args:
        tasks: (record, allele) -> :class:`~epiformer_cli.variants.scoring.Task`.
        genome: the run's genome; scanner: a :class:`~epiformer_cli.motifs.scan.MotifScanner`.
    Returns (record, allele) -> :class:`~epiformer_cli.motifs.scan.MotifHit` or None.
    """
    keys = [key for key, task in tasks.items() if task.status == "ok"]
    if not keys:
        return {}
    flank = scanner.flank
    seqs = [local_sequences(genome, tasks[k].chrom, tasks[k].allele.start, tasks[k].allele.ref,
                            tasks[k].allele.alt, flank) for k in keys]
    spans = np.array([s for _, _, s in seqs], dtype=np.int64)
    width = 2 * flank + max(1, int(spans.max()))
    ref = np.full((len(keys), width), N, dtype=np.uint8)
    alt = np.full((len(keys), width), N, dtype=np.uint8)
    for i, (r, a, _) in enumerate(seqs):
        ref[i, :len(r)] = r
        alt[i, :len(a)] = a
    return dict(zip(keys, scanner.strongest(ref, alt, spans)))
