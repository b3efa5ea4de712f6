"""Demo variants: motif-breaking (causal) and neutral SNVs, plus the awkward records a VCF reader
must survive (indels, a multi-allelic site, a REF that disagrees with the genome, sites near a
chromosome end, a contig under its other name). Each comes with its truth row.

Positions are 0-based internally; the VCF and the truth table carry the VCF POS (1-based).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.bases import COMPLEMENT
from epiformer_cli.demo import rules
from epiformer_cli.demo.layout import Chrom, rng_for
from epiformer_cli.demo.pwm import Motif, scan

N_CAUSAL = 300
N_NEUTRAL = 300
#: the effect of a variant is the log2 ratio of expected coverage (alt over ref, +1 each) summed
#: over the EFFECT_HALF_WINDOW bp either side of the broken hit's centre.
EFFECT_HALF_WINDOW = 500
#: a track counts as affected when that log2 ratio is below this.
AFFECTED_LOG2 = -0.2
#: neutral variants lie at least this far from every motif hit and element.
NEUTRAL_DISTANCE = 1_500
#: the other name of one contig, used by one record.
ALIAS = ("chr2", "2")
LETTERS = "ACGT"


@dataclass
class Variant:
    """One VCF record and its truth. ``start`` is the 0-based position of the first REF base."""

    fasta_chrom: str
    start: int
    ref: str
    alt: str
    cls: str
    motif: str = "."
    tracks: Tuple[str, ...] = ()
    effects: Optional[Dict[str, float]] = None  # None: not computed (NA)
    vcf_chrom: str = ""
    ident: str = ""
    extra_flags: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def pos(self) -> int:
        """VCF POS (1-based)."""
        return self.start + 1


class _Builder:
    def __init__(self, chroms: Sequence[Chrom], motifs: Sequence[Motif], seed: int):
        self.chroms = {c.name: c for c in chroms}
        self.order = [c.name for c in chroms]
        self.motifs = motifs
        self.rng = rng_for(seed, "variants")
        self.blocked: Dict[str, Set[int]] = {c.name: set() for c in chroms}
        self.centres = {c.name: np.sort(c.hits.centre(motifs)) for c in chroms}
        self.el_starts = {c.name: np.array([e[0] for e in c.elements], np.int64) for c in chroms}
        self.el_ends = {c.name: np.array([e[1] for e in c.elements], np.int64) for c in chroms}
        self.variants: List[Variant] = []

    # ---------------------------------------------------------------- helpers
    def free(self, chrom: str, start: int, end: int) -> bool:
        return not any(p in self.blocked[chrom] for p in range(start - 2, end + 2))

    def block(self, chrom: str, start: int, end: int) -> None:
        self.blocked[chrom].update(range(start - 2, end + 2))

    def bad_region(self, c: Chrom, pos: int, pad: int = 1_000) -> bool:
        for s, e in c.gaps + c.artefacts:
            if s - pad <= pos < e + pad:
                return True
        return False

    def hit_windows(self, seq: np.ndarray) -> Set[Tuple[int, int]]:
        """(motif index, start) of every window at or above threshold in a short sequence."""
        out = set()
        for mi, m in enumerate(self.motifs):
            scores, _ = scan(seq, m)
            for s in np.flatnonzero(m.relative(scores) >= m.threshold).tolist():
                out.add((mi, s))
        return out

    def effects_without(self, c: Chrom, hit: int) -> Dict[str, float]:
        """log2 effect per track of removing one hit (the rule evaluated with and without it)."""
        centres = c.hits.centre(self.motifs)
        centre = float(centres[hit])
        a = max(0, int(centre) - 3 * EFFECT_HALF_WINDOW)
        b = min(c.size, int(centre) + 3 * EFFECT_HALF_WINDOW)
        near = np.flatnonzero(np.abs(centres - centre) < 4 * EFFECT_HALF_WINDOW)
        with_hit = rules.hit_signal(c.hits.select(near), self.motifs, a, b)
        without = rules.hit_signal(c.hits.select(near[near != hit]), self.motifs, a, b)
        w0 = max(a, int(centre) - EFFECT_HALF_WINDOW)
        w1 = min(b, int(centre) + EFFECT_HALF_WINDOW)
        out = {}
        for t in rules.TRACKS:
            base = float(c.expected[t][w0:w1].sum())
            delta = float((with_hit[t] - without[t])[w0 - a : w1 - a].sum())
            out[t] = float(np.log2((base - delta + 1.0) / (base + 1.0)))
        return out

    def far_from_everything(self, chrom: str, pos: int) -> bool:
        cen = self.centres[chrom]
        i = np.searchsorted(cen, pos)
        for j in (i - 1, i):
            if 0 <= j < cen.size and abs(cen[j] - pos) < NEUTRAL_DISTANCE:
                return False
        st, en = self.el_starts[chrom], self.el_ends[chrom]
        near = (st - NEUTRAL_DISTANCE <= pos) & (pos < en + NEUTRAL_DISTANCE)
        return not bool(near.any())

    # ---------------------------------------------------------------- kinds
    def motif_break(self, c: Chrom, hit: int) -> Optional[Tuple[int, int, List[int], Dict[str, float]]]:
        """Find a single base change that destroys hit ``hit`` and creates no other hit.

        Returns (position, ref code, alt codes ordered worst first, effects) or None.
        """
        mi = int(c.hits.motif[hit])
        m = self.motifs[mi]
        s, strand = int(c.hits.start[hit]), int(c.hits.strand[hit])
        if self.bad_region(c, s) or not self.free(c.name, s, s + m.width):
            return None
        lo, hi = max(0, s - 40), min(c.size, s + m.width + 40)
        before = self.hit_windows(c.codes[lo:hi])
        for j in np.argsort(-m.information, kind="stable")[:3].tolist():
            pos = s + j if strand > 0 else s + m.width - 1 - j
            ref = int(c.codes[pos])
            if ref > 3:
                continue
            motif_ref = ref if strand > 0 else int(COMPLEMENT[ref])
            if m.probabilities[j, motif_ref] < 0.5:
                continue
            alts_motif = [b for b in np.argsort(m.probabilities[j], kind="stable").tolist() if b != motif_ref]
            alts = [b if strand > 0 else int(COMPLEMENT[b]) for b in alts_motif]
            seq = c.codes[lo:hi].copy()
            seq[pos - lo] = alts[0]
            after = self.hit_windows(seq)
            broken = not any(
                mm == mi and s - m.width < lo + st < s + m.width for mm, st in after
            )
            if not broken or (after - before):
                continue
            return pos, ref, alts, self.effects_without(c, hit)
        return None

    def causal(self, c: Chrom, hit: int, cls: str = "causal", vcf_chrom: Optional[str] = None) -> bool:
        found = self.motif_break(c, hit)
        if found is None:
            return False
        pos, ref, alts, effects = found
        tracks = tuple(t for t in rules.TRACKS if effects[t] < AFFECTED_LOG2)
        if not tracks:
            return False
        m = self.motifs[int(c.hits.motif[hit])]
        self.variants.append(
            Variant(c.name, pos, LETTERS[ref], LETTERS[alts[0]], cls, m.name, tracks, effects,
                    vcf_chrom=vcf_chrom or c.name, extra_flags=("CAUSAL",))
        )
        self.block(c.name, pos, pos + 1)
        return True

    def random_background(self, n: int) -> List[Tuple[str, int]]:
        """Up to n background positions far from every hit and element (ACGT, free, not in gaps)."""
        sizes = np.array([self.chroms[name].size for name in self.order], np.float64)
        out: List[Tuple[str, int]] = []
        tries = 0
        while len(out) < n and tries < 50 * n + 1000:
            tries += 1
            name = self.order[int(self.rng.choice(len(self.order), p=sizes / sizes.sum()))]
            c = self.chroms[name]
            pos = int(self.rng.integers(5_000, c.size - 5_000))
            if c.codes[pos - 60 : pos + 60].max() > 3 or self.bad_region(c, pos):
                continue
            if not self.far_from_everything(name, pos) or not self.free(name, pos - 30, pos + 30):
                continue
            out.append((name, pos))
            self.block(name, pos - 30, pos + 30)
        return out

    def creates_no_hit(self, c: Chrom, pos: int, alt: int) -> bool:
        lo, hi = max(0, pos - 40), min(c.size, pos + 41)
        seq = c.codes[lo:hi].copy()
        before = self.hit_windows(seq)
        seq[pos - lo] = alt
        return not (self.hit_windows(seq) - before)

    def neutral_snv(self, name: str, pos: int, cls: str = "neutral") -> bool:
        c = self.chroms[name]
        ref = int(c.codes[pos])
        for _ in range(3):
            alt = int((ref + self.rng.integers(1, 4)) % 4)
            if self.creates_no_hit(c, pos, alt):
                self.variants.append(
                    Variant(name, pos, LETTERS[ref], LETTERS[alt], cls, effects={t: 0.0 for t in rules.TRACKS},
                            vcf_chrom=name, extra_flags=("NEUTRAL",) if cls == "neutral" else ())
                )
                return True
        return False

    def seq(self, c: Chrom, start: int, end: int) -> str:
        return "".join(LETTERS[int(b)] for b in c.codes[start:end])

    def deletion(self, c: Chrom, start: int, length: int, motif: str, tracks: Tuple[str, ...]) -> None:
        """Delete [start, start + length); VCF anchors on the base before."""
        anchor = start - 1
        self.variants.append(
            Variant(c.name, anchor, self.seq(c, anchor, start + length), self.seq(c, anchor, anchor + 1), "indel",
                    motif, tracks, None, vcf_chrom=c.name)
        )
        self.block(c.name, anchor, start + length)

    def insertion(self, c: Chrom, after: int, length: int, motif: str, tracks: Tuple[str, ...]) -> None:
        """Insert random bases after base ``after``."""
        ins = "".join(LETTERS[int(b)] for b in self.rng.integers(0, 4, length))
        ref = self.seq(c, after, after + 1)
        self.variants.append(Variant(c.name, after, ref, ref + ins, "indel", motif, tracks, None, vcf_chrom=c.name))
        self.block(c.name, after, after + 1)


def build_variants(chroms: Sequence[Chrom], motifs: Sequence[Motif], seed: int) -> Tuple[List[Variant], List[Dict[str, object]]]:
    """Choose the demo variants. Returns (records sorted as written to the VCF, truth rows)."""
    b = _Builder(chroms, motifs, seed)
    by_name = {c.name: c for c in chroms}

    # hits in shuffled order; a hit is used by at most one record
    pool = [(c.name, i) for c in chroms for i in range(len(c.hits))]
    order = b.rng.permutation(len(pool))
    pool = [pool[i] for i in order]
    cursor = 0

    def next_hits(chrom: Optional[str] = None):
        nonlocal cursor
        while cursor < len(pool):
            name, i = pool[cursor]
            cursor += 1
            if chrom is None or name == chrom:
                yield by_name[name], i

    # one causal record on chr2 written under the other contig name
    for c, i in next_hits(ALIAS[0]):
        if b.causal(c, i, cls="other_naming", vcf_chrom=ALIAS[1]):
            break
    # indels inside elements: 4 deletions and 4 insertions through motif hits
    made = 0
    for c, i in next_hits():
        if made >= 8:
            break
        m = motifs[int(c.hits.motif[i])]
        s = int(c.hits.start[i])
        if b.bad_region(c, s) or not b.free(c.name, s - 1, s + m.width + 25):
            continue
        driven = tuple(rules.tracks_driven_by(m.name))
        core = s + int(np.argmax(m.information)) if c.hits.strand[i] > 0 else s + m.width - 1 - int(np.argmax(m.information))
        if made % 2 == 0:
            b.deletion(c, core, int(b.rng.integers(1, 9)), m.name, driven)
        else:
            b.insertion(c, core, int(b.rng.integers(1, 11)), m.name, driven)
        made += 1
    # one multi-allelic site through a motif hit
    for c, i in next_hits():
        found = b.motif_break(c, i)
        if found is None:
            continue
        pos, ref, alts, _effects = found
        m = motifs[int(c.hits.motif[i])]
        b.variants.append(
            Variant(c.name, pos, LETTERS[ref], ",".join(LETTERS[a] for a in alts[:2]), "multiallelic", m.name,
                    tuple(rules.tracks_driven_by(m.name)), None, vcf_chrom=c.name)
        )
        b.block(c.name, pos, pos + 1)
        break
    # causal SNVs
    n_causal = 0
    for c, i in next_hits():
        if n_causal >= N_CAUSAL:
            break
        n_causal += b.causal(c, i)

    # background records: neutral SNVs, then the awkward ones
    spots = b.random_background(N_NEUTRAL + 12)
    n_neutral = 0
    rest = []
    for name, pos in spots:
        if n_neutral < N_NEUTRAL and b.neutral_snv(name, pos):
            n_neutral += 1
        else:
            rest.append((name, pos))
    awkward = iter(rest)
    # background indels: 2 deletions (one 25 bp), 2 insertions (one 15 bp)
    for length, kind in ((1, "del"), (25, "del"), (2, "ins"), (15, "ins")):
        name, pos = next(awkward)
        if kind == "del":
            b.deletion(by_name[name], pos, length, ".", ())
        else:
            b.insertion(by_name[name], pos, length, ".", ())
    # a background multi-allelic site
    name, pos = next(awkward)
    ref = int(by_name[name].codes[pos])
    alts = [(ref + k) % 4 for k in (1, 2)]
    b.variants.append(Variant(name, pos, LETTERS[ref], ",".join(LETTERS[a] for a in alts), "multiallelic",
                              effects=None, vcf_chrom=name))
    # REF that disagrees with the genome (two records)
    for _ in range(2):
        name, pos = next(awkward)
        ref = int(by_name[name].codes[pos])
        wrong, alt = (ref + 1) % 4, (ref + 2) % 4
        b.variants.append(Variant(name, pos, LETTERS[wrong], LETTERS[alt], "ref_mismatch", vcf_chrom=name))
    # near the chromosome ends: 16 bp before the end of chr3, and base 20 of chrX
    for name, pos in (("chr3", by_name["chr3"].size - 16), ("chrX", 19)):
        c = by_name[name]
        if c.codes[pos] > 3:  # pragma: no cover - the layout keeps these ends free of N
            continue
        b.neutral_snv(name, pos, cls="near_end")

    header_order = {name: k for k, name in enumerate([c.name for c in chroms] + [ALIAS[1]])}
    records = sorted(b.variants, key=lambda v: (header_order[v.vcf_chrom], v.start, v.ref, v.alt))
    counters: Dict[str, int] = {}
    for v in records:
        counters[v.cls] = counters.get(v.cls, 0) + 1
        v.ident = f"{v.cls}_{counters[v.cls]:04d}"
    truth = [truth_row(v) for v in records]
    return records, truth


def truth_row(v: Variant) -> Dict[str, object]:
    row: Dict[str, object] = {
        "chrom": v.vcf_chrom,
        "pos": v.pos,
        "id": v.ident,
        "ref": v.ref,
        "alt": v.alt,
        "class": v.cls,
        "motif": v.motif,
        "tracks": ",".join(v.tracks) if v.tracks else ".",
    }
    for t in rules.TRACKS:
        row[f"effect_{t}"] = "NA" if v.effects is None else f"{v.effects[t]:.4f}"
    row["fasta_chrom"] = v.fasta_chrom
    return row


def write_vcf(path: Path, chroms: Sequence[Chrom], records: Sequence[Variant]) -> None:
    """Write an uncompressed, sites-only VCF 4.2 (bgzip and index it afterwards)."""
    sizes = {c.name: c.size for c in chroms}
    lines = [
        "##fileformat=VCFv4.2",
        f"##source=epiformer-demo {__version__}",
        "##reference=genome.fa",
    ]
    lines += [f"##contig=<ID={c.name},length={c.size}>" for c in chroms]
    lines.append(f"##contig=<ID={ALIAS[1]},length={sizes[ALIAS[0]]}>")
    lines += [
        '##INFO=<ID=DEMO_CLASS,Number=1,Type=String,Description="Demo truth class: causal, neutral, indel, '
        'multiallelic, ref_mismatch, near_end or other_naming">',
        '##INFO=<ID=CAUSAL,Number=0,Type=Flag,Description="Breaks a motif hit that drives accessibility">',
        f'##INFO=<ID=NEUTRAL,Number=0,Type=Flag,Description="At least {NEUTRAL_DISTANCE} bp from every motif hit '
        'and element; no effect">',
        '##INFO=<ID=MOTIF,Number=1,Type=String,Description="Motif whose hit the variant breaks or overlaps">',
        '##INFO=<ID=TRACKS,Number=.,Type=String,Description="Tracks whose accessibility the variant lowers">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for v in records:
        info = [f"DEMO_CLASS={v.cls}", *v.extra_flags]
        if v.motif != ".":
            info.append(f"MOTIF={v.motif}")
        if v.tracks:
            info.append("TRACKS=" + ",".join(v.tracks))
        lines.append(f"{v.vcf_chrom}\t{v.pos}\t{v.ident}\t{v.ref}\t{v.alt}\t.\tPASS\t{';'.join(info)}")
    Path(path).write_text("\n".join(lines) + "\n")


def write_truth(path: Path, truth: Sequence[Dict[str, object]]) -> None:
    columns = list(truth[0].keys())
    with open(path, "w") as fh:
        fh.write("\t".join(columns) + "\n")
        for row in truth:
            fh.write("\t".join(str(row[k]) for k in columns) + "\n")
