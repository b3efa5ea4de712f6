"""Build the demo genome: sequence, planted regulatory elements, tracks, single-cell fragments,
blacklist, VCF and truth.

``generate_demo(out_dir, seed)`` writes a small synthetic genome (4 chromosomes, ~4.6 Mb) whose
chromatin accessibility is a known function of its sequence (see ``rules.py`` and the RULES.md it
writes), so that training, prediction and variant scoring can be checked end to end on a laptop.
Same seed, same bytes. Coordinates are 0-based, half-open everywhere except VCF POS (1-based).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyBigWig
import pysam

from epiformer_cli import __version__
from epiformer_cli.bases import COMPLEMENT, N
from epiformer_cli.demo import pwm, rules
from epiformer_cli.demo.layout import (
    ARTEFACT_SIZE,
    CHROM_SIZES,
    ELEMENT_CLASSES,
    ELEMENT_LENGTH,
    ELEMENT_MEAN_EXTRA,
    ELEMENT_MIN_SPACING,
    GAP_SIZE,
    ISOCHORE_GC,
    ISOCHORE_SIZE,
    LAYOUT,
    LONE_PER_MB,
    REPEAT_FRACTION,
    TEST_CHROMS,
    TRAIN_CHROMS,
    UNALIGNED_SIZE,
    VALID_CHROMS,
    Chrom,
    rng_for,
)
from epiformer_cli.demo.fragments import write_fragments
from epiformer_cli.demo.pwm import Motif, sample_sites, scan
from epiformer_cli.demo.readme import render_rules
from epiformer_cli.demo.variants import build_variants, write_truth, write_vcf
from epiformer_cli.errors import UsageError
from epiformer_cli.progress import Progress

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class DemoData:
    """Paths and facts of a generated demo genome (all paths inside ``out_dir``)."""

    out_dir: Path
    fasta: Path
    fai: Path
    conservation: Path
    targets: Dict[str, Path]
    targets_sheet: Path
    fragments: Path
    cell_types: Path
    blacklist: Path
    vcf: Path
    vcf_index: Path
    truth: Path
    elements: Path
    motif_hits: Path
    rules: Path
    manifest: Path
    chrom_sizes: Dict[str, int]
    train_chroms: Tuple[str, ...]
    valid_chroms: Tuple[str, ...]
    test_chroms: Tuple[str, ...]
    tracks: Tuple[str, ...]
    seed: int


# ----------------------------------------------------------------------------------- sequence


def random_bases(gc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """i.i.d. bases with a per-base G+C probability: (length,) float -> (length,) uint8 codes."""
    u = rng.random(gc.shape[0])
    at = (1.0 - gc) / 2.0
    return ((u >= at).astype(np.uint8) + (u >= 0.5) + (u >= 0.5 + gc / 2.0)).astype(np.uint8)


def mutate(codes: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = codes.copy()
    hit = rng.random(out.shape[0]) < rate
    out[hit] = (out[hit] + rng.integers(1, 4, hit.sum())) % 4
    return out


def _place(
    rng: np.random.Generator, size: int, length: int, taken: List[Tuple[int, int]], margin: int = 20_000
) -> Tuple[int, int]:
    """A random interval of ``length`` bp not within ``margin`` of the ends or of ``taken``."""
    for _ in range(1000):
        start = int(rng.integers(margin, size - margin - length))
        end = start + length
        if all(end + margin <= s or start >= e + margin for s, e in taken):
            return start, end
    raise RuntimeError("demo layout: no room left to place a region")  # pragma: no cover


def repeat_families(seed: int) -> List[Tuple[str, np.ndarray]]:
    """A few interspersed-repeat consensus sequences shared by all chromosomes."""
    rng = rng_for(seed, "repeat-families")
    specs = (("AluLike", 300, 0.55), ("MIRLike", 200, 0.50), ("L1Like", 6_000, 0.40), ("LTRLike", 500, 0.45))
    return [(name, random_bases(np.full(length, gc), rng)) for name, length, gc in specs]


def build_sequence(name: str, size: int, seed: int, families) -> Chrom:
    """Background sequence of one chromosome: isochores, soft-masked repeats, gaps, artefacts."""
    rng = rng_for(seed, "sequence", name)
    # isochores: blocks of constant G+C probability
    gc = np.empty(size, np.float64)
    pos = 0
    while pos < size:
        length = int(rng.integers(*ISOCHORE_SIZE))
        gc[pos : pos + length] = rng.uniform(*ISOCHORE_GC)
        pos += length
    codes = random_bases(gc, rng)
    lower = np.zeros(size, bool)

    # interspersed repeats (lowercase), mutated copies of the families, either strand
    covered = 0
    weights = np.array([0.45, 0.2, 0.15, 0.1, 0.1])
    simple_units = [np.array(u, np.uint8) for u in ([1, 0], [3, 3, 0, 2, 2, 2], [2, 0, 0], [0, 3])]
    while covered < REPEAT_FRACTION * size:
        kind = int(rng.choice(5, p=weights))
        if kind == 4:
            unit = simple_units[int(rng.integers(len(simple_units)))]
            length = int(rng.integers(30, 300))
            copy = np.tile(unit, length // unit.size + 1)[:length]
            rate = rng.uniform(0.0, 0.05)
        else:
            consensus = families[kind][1]
            length = int(rng.integers(consensus.size // 2, consensus.size + 1))
            copy = consensus[consensus.size - length :]  # 5'-truncated, as L1 copies are
            rate = rng.uniform(0.03, 0.20)
            if rng.random() < 0.5:
                copy = COMPLEMENT[copy[::-1]]
        start = int(rng.integers(0, size - length))
        codes[start : start + length] = mutate(copy, rate, rng)
        lower[start : start + length] = True
        covered += length

    chrom = Chrom(name, size, codes, lower, np.zeros(0, np.float32))
    layout = LAYOUT[name]
    taken: List[Tuple[int, int]] = []
    for _ in range(layout["gaps"]):
        taken.append(_place(rng, size, int(rng.integers(*GAP_SIZE)), taken))
        chrom.gaps.append(taken[-1])
    for _ in range(layout["artefacts"]):
        a = _place(rng, size, int(rng.integers(*ARTEFACT_SIZE)), taken)
        taken.append(a)
        chrom.artefacts.append(a)
        unit = random_bases(np.full(171, 0.38), rng)  # an alpha-satellite-like monomer
        length = a[1] - a[0]
        codes[a[0] : a[1]] = mutate(np.tile(unit, length // 171 + 1)[:length], 0.03, rng)
        lower[a[0] : a[1]] = True
    for _ in range(layout["unaligned"]):
        u = _place(rng, size, int(rng.integers(*UNALIGNED_SIZE)), taken)
        taken.append(u)
        chrom.unaligned.append(u)
    if layout["start_n"]:
        chrom.gaps.insert(0, (0, layout["start_n"]))
    for g_start, g_end in chrom.gaps:
        codes[g_start:g_end] = N
        lower[g_start:g_end] = False
    return chrom


# ----------------------------------------------------------------------------------- elements


def _degrade(site: np.ndarray, motif: Motif) -> np.ndarray:
    """Break a sampled site: set its most informative columns to their least likely base."""
    site = site.copy()
    order = np.argsort(-motif.information, kind="stable")
    table = motif.log_odds[:, :4]
    for j in order:
        site[j] = int(np.argmin(motif.probabilities[j]))
        rel = motif.relative(table[np.arange(motif.width), site].sum())
        if rel < motif.threshold - 0.15:
            break
    return site


def plant_elements(chrom: Chrom, motifs: Sequence[Motif], seed: int) -> None:
    """Plant regulatory elements, decoys and lone motif sites; fill in the conservation track."""
    rng = rng_for(seed, "elements", chrom.name)
    by_name = {m.name: i for i, m in enumerate(motifs)}
    size = chrom.size
    forbidden = np.zeros(size, bool)
    forbidden[:3_000] = forbidden[-3_000:] = True
    for s, e in chrom.gaps + chrom.artefacts:
        forbidden[max(0, s - 2_000) : e + 2_000] = True

    # conservation: low phastCons-like noise in blocks, high over elements and motifs
    lengths = rng.geometric(1 / 60.0, size // 20 + 10)
    values = (rng.beta(1.0, 6.0, lengths.size) * 0.2).round(3)
    cons = np.repeat(values, lengths)[:size].astype(np.float32)

    class_names = [c[0] for c in ELEMENT_CLASSES]
    class_p = np.array([c[1] for c in ELEMENT_CLASSES])
    class_p /= class_p.sum()
    centres = np.cumsum(ELEMENT_MIN_SPACING + rng.exponential(ELEMENT_MEAN_EXTRA, size // ELEMENT_MIN_SPACING))
    centres = centres[centres < size - 3_000].astype(np.int64)
    site_cache: Dict[str, List[np.ndarray]] = {}

    def next_site(name: str) -> np.ndarray:
        pool = site_cache.setdefault(name, [])
        if not pool:
            pool.extend(sample_sites(motifs[by_name[name]], 256, rng))
        return pool.pop()

    occupied = np.zeros(size, bool)
    for centre in centres:
        length = int(rng.integers(*ELEMENT_LENGTH))
        start = int(centre - length // 2)
        end = start + length
        if start < 0 or forbidden[start:end].any():
            continue
        cls = int(rng.choice(len(class_names), p=class_p))
        cls_name, _, choices = ELEMENT_CLASSES[cls]
        names = list(choices[int(rng.integers(len(choices)))])
        rng.shuffle(names)
        chrom.codes[start:end] = random_bases(np.full(length, 0.5), rng)
        chrom.lower[start:end] = False
        cons[start:end] = round(float(rng.uniform(0.6, 0.85)), 3)
        seg = length // len(names)
        for k, name in enumerate(names):
            m = motifs[by_name[name]]
            site = next_site(name)
            if cls_name == "decoy":
                site = _degrade(site, m)
            strand = 1 if rng.random() < 0.5 else -1
            if strand < 0:
                site = COMPLEMENT[site[::-1]]
            offset = start + k * seg + int(rng.integers(0, seg - m.width + 1))
            chrom.codes[offset : offset + m.width] = site
            cons[offset : offset + m.width] = round(float(rng.uniform(0.9, 1.0)), 3)
            chrom.planted.append((offset, by_name[name], strand, "decoy" if cls_name == "decoy" else "element"))
        chrom.elements.append((start, end, cls_name))
        occupied[max(0, start - 1_500) : end + 1_500] = True

    # lone sites: single motif instances in unconserved background
    n_lone = int(round(LONE_PER_MB * size / 1e6))
    free = ~(forbidden | occupied)
    candidates = np.flatnonzero(free[:-50])
    picks = rng.choice(candidates, size=min(n_lone * 3, candidates.size), replace=False)
    placed = 0
    for p in picks.tolist():
        if placed >= n_lone:
            break
        if not free[p : p + 50].all():
            continue
        name = motifs[int(rng.integers(len(motifs)))].name
        m = motifs[by_name[name]]
        site = next_site(name)
        strand = 1 if rng.random() < 0.5 else -1
        if strand < 0:
            site = COMPLEMENT[site[::-1]]
        chrom.codes[p : p + m.width] = site
        chrom.lower[p : p + m.width] = False
        chrom.planted.append((int(p), by_name[name], strand, "lone"))
        chrom.elements.append((int(p), int(p) + m.width, f"lone_{name}"))
        free[max(0, p - 3_000) : p + 3_000] = False
        placed += 1

    chrom.planted.sort()
    chrom.elements.sort()
    for s, e in chrom.gaps:
        cons[s:e] = np.nan
    for s, e in chrom.unaligned:
        cons[s:e] = np.nan
    chrom.conservation = cons


def erase_chance_hits(chrom: Chrom, motifs: Sequence[Motif], seed: int, rounds: int = 30) -> int:
    """Mutate background windows that reach a motif threshold by chance; returns bases changed.

    Only planted sites should drive accessibility, so that planted truth and the sequence rule agree;
    the rule itself is still evaluated on the final sequence (``find_hits``). The first round scans
    the whole chromosome; later rounds rescore only the windows touching a base just changed.
    """
    rng = rng_for(seed, "erase", chrom.name)
    protected = np.zeros(chrom.size, bool)
    planted_at: Dict[int, np.ndarray] = {}
    for start, mi, _strand, _kind in chrom.planted:
        protected[start : start + motifs[mi].width] = True
    for mi in range(len(motifs)):
        planted_at[mi] = np.array(sorted(p[0] for p in chrom.planted if p[1] == mi), np.int64)
    changed = 0
    touched: Optional[np.ndarray] = None
    for round_index in range(rounds):
        new_targets = []
        for mi, m in enumerate(motifs):
            if touched is None:
                scores, strands = scan(chrom.codes, m)
                rel = m.relative(scores)
                cand = np.flatnonzero(rel >= m.threshold)
                strand = strands[cand]
            else:
                starts = np.unique((touched[:, None] - np.arange(m.width)[None, :]).ravel())
                starts = starts[(starts >= 0) & (starts <= chrom.size - m.width)]
                rel, strands = pwm.score_at(chrom.codes, m, starts)
                keep = rel >= m.threshold
                cand, strand = starts[keep], strands[keep]
            illegit = ~np.isin(cand, planted_at[mi])
            cand, strand = cand[illegit], strand[illegit]
            if cand.size == 0:
                continue
            # break each window at its most informative column that still matches the motif, by
            # writing the base the motif likes least there (strand-aware)
            cols = np.arange(m.width)
            pos = np.where(strand[:, None] > 0, cand[:, None] + cols, cand[:, None] + m.width - 1 - cols)
            genome = np.minimum(chrom.codes[pos], N)
            motif_base = np.where(strand[:, None] > 0, genome, COMPLEMENT[genome])
            probs = np.concatenate([m.probabilities, np.zeros((m.width, 1))], axis=1)
            gain = m.information[None, :] * probs[cols[None, :], motif_base]
            gain[protected[pos]] = -1.0
            if round_index >= 3:
                # two overlapping windows can undo each other's fix: randomise to break the cycle
                gain = np.where(gain > 0, rng.random(gain.shape) + 0.01, gain)
            best = np.argmax(gain, axis=1)
            has = gain[np.arange(cand.size), best] > 0
            two_worst = np.argsort(m.probabilities, axis=1, kind="stable")[best, :2]
            pick = (rng.random(cand.size) < 0.5).astype(np.intp) if round_index >= 3 else 0
            worst = two_worst[np.arange(cand.size), pick]
            new_base = np.where(strand > 0, worst, COMPLEMENT[worst]).astype(np.uint8)
            new_targets.append((pos[np.arange(cand.size), best][has], new_base[has]))
        if not new_targets:
            break
        targets = np.concatenate([t for t, _ in new_targets])
        chrom.codes[targets] = np.concatenate([b for _, b in new_targets])
        targets = np.unique(targets)
        if targets.size == 0:
            break
        changed += targets.size
        touched = targets
    return changed


def find_hits(codes: np.ndarray, motifs: Sequence[Motif]) -> rules.Hits:
    """All motif hits of one sequence: windows at or above threshold, best first within a motif
    width (non-maximum suppression), sorted by start."""
    starts, mids, strands_out, rels = [], [], [], []
    for mi, m in enumerate(motifs):
        scores, strands = scan(codes, m)
        rel = m.relative(scores)
        cand = np.flatnonzero(rel >= m.threshold)
        order = cand[np.argsort(-rel[cand], kind="stable")]
        kept: List[int] = []
        taken = set()
        for c in order.tolist():
            if any((c + d) in taken for d in range(-m.width + 1, m.width)):
                continue
            kept.append(c)
            taken.add(c)
        kept_arr = np.array(sorted(kept), np.int64)
        starts.append(kept_arr)
        mids.append(np.full(kept_arr.size, mi, np.int64))
        strands_out.append(strands[kept_arr].astype(np.int64))
        rels.append(rel[kept_arr].astype(np.float64))
    start = np.concatenate(starts)
    order = np.argsort(start, kind="stable")
    return rules.Hits(start[order], np.concatenate(mids)[order], np.concatenate(strands_out)[order], np.concatenate(rels)[order])


def sample_coverage(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Count noise: Poisson read centres at rate expected / READ_LENGTH, each read covering
    READ_LENGTH bp around its centre; the mean coverage equals ``expected``."""
    centres = rng.poisson(expected / rules.READ_LENGTH)
    csum = np.concatenate([[0], np.cumsum(centres)])
    n = expected.shape[0]
    half = rules.READ_LENGTH // 2
    idx = np.arange(n)
    hi = np.minimum(idx + half, n)
    lo = np.maximum(idx - half, 0)
    return (csum[hi] - csum[lo]).astype(np.float32)


# ----------------------------------------------------------------------------------- writers


def write_fasta(path: Path, chroms: Sequence[Chrom], width: int = 60) -> None:
    letters = np.frombuffer(b"ACGTN", np.uint8)
    with open(path, "wb") as fh:
        for c in chroms:
            text = letters[c.codes].copy()
            text[c.lower & (c.codes < 4)] += 32  # soft-masked repeats in lowercase
            fh.write(f">{c.name}\n".encode())
            full = c.size // width
            body = np.empty((full, width + 1), np.uint8)
            body[:, :width] = text[: full * width].reshape(full, width)
            body[:, width] = ord("\n")
            fh.write(body.tobytes())
            if c.size % width:
                fh.write(text[full * width :].tobytes() + b"\n")


def _runs(values: np.ndarray, valid: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encode a per-base track: (starts, ends, values) of constant runs where valid."""
    n = values.shape[0]
    change = np.ones(n, bool)
    change[1:] = (values[1:] != values[:-1]) | (valid[1:] != valid[:-1])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    keep = valid[starts]
    return starts[keep], ends[keep], values[starts[keep]]


def write_bigwig(path: Path, chroms: Sequence[Chrom], values: Dict[str, np.ndarray], valid: Dict[str, np.ndarray]) -> None:
    """Write per-base values as run-length bedGraph-style entries; invalid bases are left out."""
    bw = pyBigWig.open(str(path), "w")
    try:
        bw.addHeader([(c.name, c.size) for c in chroms], maxZooms=10)
        for c in chroms:
            starts, ends, vals = _runs(values[c.name], valid[c.name])
            step = 500_000
            for i in range(0, starts.size, step):
                sl = slice(i, i + step)
                bw.addEntries([c.name] * starts[sl].size, starts[sl], ends=ends[sl], values=vals[sl].astype(np.float64))
    finally:
        bw.close()


def write_bed(path: Path, rows: Sequence[Sequence[object]]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write("\t".join(str(x) for x in row) + "\n")


# ----------------------------------------------------------------------------------- main entry


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"the demo seed must be a non-negative integer, not {seed!r}")
    return int(seed)


def generate_demo(out_dir: Path, seed: int = 0, progress: Optional[Progress] = None) -> DemoData:
    """Write a complete synthetic demo genome into ``out_dir`` and describe it.

    Args:
        out_dir: folder to write into (created if needed; files of an earlier demo are replaced).
        seed: non-negative integer; the same seed gives byte-identical files.
        progress: an :class:`~epiformer_cli.progress.Progress` in stages: ``progress(1, total=9,
            stage=NAME)`` as each stage finishes.

    Returns:
        DemoData with the paths of every file, chromosome sizes and the suggested split.
    """
    seed = _check_seed(seed)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stages = ["sequence", "elements", "hits", "tracks", "fasta", "bigwigs", "fragments", "variants", "tables"]
    done = 0

    def step(stage: str) -> None:
        nonlocal done
        done += 1
        logger.debug("demo: %s done", stage)
        if progress is not None:
            progress(1, total=len(stages), stage=stage)

    motifs = rules.load_motifs()
    families = repeat_families(seed)
    chroms = [build_sequence(name, size, seed, families) for name, size in CHROM_SIZES]
    step("sequence")
    for c in chroms:
        plant_elements(c, motifs, seed)
    step("elements")
    for c in chroms:
        erase_chance_hits(c, motifs, seed)
        c.hits = find_hits(c.codes, motifs)
    step("hits")
    for c in chroms:
        c.expected = rules.expected_coverage(c.codes, c.hits, motifs, c.artefacts)
        for t in rules.TRACKS:
            c.coverage[t] = sample_coverage(c.expected[t], rng_for(seed, "noise", c.name, t))
    step("tracks")

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fasta = tmp / "genome.fa"
        write_fasta(fasta, chroms)
        pysam.faidx(str(fasta))
        step("fasta")

        cons_values = {c.name: np.nan_to_num(c.conservation, nan=0.0) for c in chroms}
        cons_valid = {c.name: ~np.isnan(c.conservation) for c in chroms}
        write_bigwig(tmp / "conservation.bw", chroms, cons_values, cons_valid)
        (tmp / "targets").mkdir()
        not_n = {c.name: c.codes < 4 for c in chroms}
        for t in rules.TRACKS:
            write_bigwig(tmp / "targets" / f"{t}.bw", chroms, {c.name: c.coverage[t] for c in chroms}, not_n)
        with open(tmp / "targets.tsv", "w") as fh:
            fh.write("name\tpath\tscale\tclip\tstat\n")
            for t in rules.TRACKS:
                fh.write(f"{t}\ttargets/{t}.bw\t1.0\t128\tmean\n")
        step("bigwigs")

        n_fragments = write_fragments(tmp / "fragments.tsv.gz", tmp / "cells.tsv", chroms, seed)
        step("fragments")

        records, truth = build_variants(chroms, motifs, seed)
        write_vcf(tmp / "variants.vcf", chroms, records)
        pysam.tabix_index(str(tmp / "variants.vcf"), preset="vcf", force=True)
        write_truth(tmp / "variants_truth.tsv", truth)
        step("variants")

        blacklist = []
        for c in chroms:
            rows = [(s, e, "n_gap") for s, e in c.gaps if e - s >= 10_000]
            rows += [(max(0, s - 500), min(c.size, e + 500), "high_signal_artefact") for s, e in c.artefacts]
            blacklist += [(c.name, s, e, name) for s, e, name in sorted(rows)]
        write_bed(tmp / "blacklist.bed", blacklist)
        write_bed(
            tmp / "elements.bed",
            [(c.name, s, e, cls, 0, ".") for c in chroms for s, e, cls in c.elements],
        )
        hit_rows = []
        for c in chroms:
            h = c.hits
            for s, mi, st, rel in zip(h.start.tolist(), h.motif.tolist(), h.strand.tolist(), h.rel.tolist()):
                hit_rows.append((c.name, s, s + motifs[mi].width, motifs[mi].name, int(round(rel * 1000)), "+" if st > 0 else "-"))
        write_bed(tmp / "motif_hits.bed", hit_rows)

        manifest = {
            "format": "epiformer-demo",
            "format_version": 1,
            "tool_version": __version__,
            "seed": seed,
            "genome": "genome.fa",
            "fai": "genome.fa.fai",
            "conservation": "conservation.bw",
            "targets_sheet": "targets.tsv",
            "targets": {t: f"targets/{t}.bw" for t in rules.TRACKS},
            "fragments": "fragments.tsv.gz",
            "cell_types": "cells.tsv",
            "blacklist": "blacklist.bed",
            "vcf": "variants.vcf.gz",
            "vcf_index": "variants.vcf.gz.tbi",
            "truth": "variants_truth.tsv",
            "elements": "elements.bed",
            "motif_hits": "motif_hits.bed",
            "rules": "RULES.md",
            "chrom_sizes": {c.name: c.size for c in chroms},
            "split": {"train": list(TRAIN_CHROMS), "valid": list(VALID_CHROMS), "test": list(TEST_CHROMS)},
            "tracks": list(rules.TRACKS),
            "motifs": [{"id": m.matrix_id, "name": m.name, "threshold": m.threshold} for m in motifs],
            "counts": {
                "elements": {c.name: len(c.elements) for c in chroms},
                "motif_hits": {c.name: len(c.hits) for c in chroms},
                "fragments": n_fragments,
                "variants": _count_classes(truth),
            },
        }
        (tmp / "RULES.md").write_text(render_rules(chroms, motifs, manifest))
        (tmp / "demo.json").write_text(json.dumps(manifest, indent=2) + "\n")
        step("tables")

        out_dir.mkdir(parents=True, exist_ok=True)
        if (out_dir / "targets").exists():
            shutil.rmtree(out_dir / "targets")
        for item in sorted(tmp.iterdir()):
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    return DemoData(
        out_dir=out_dir,
        fasta=out_dir / "genome.fa",
        fai=out_dir / "genome.fa.fai",
        conservation=out_dir / "conservation.bw",
        targets={t: out_dir / "targets" / f"{t}.bw" for t in rules.TRACKS},
        targets_sheet=out_dir / "targets.tsv",
        fragments=out_dir / "fragments.tsv.gz",
        cell_types=out_dir / "cells.tsv",
        blacklist=out_dir / "blacklist.bed",
        vcf=out_dir / "variants.vcf.gz",
        vcf_index=out_dir / "variants.vcf.gz.tbi",
        truth=out_dir / "variants_truth.tsv",
        elements=out_dir / "elements.bed",
        motif_hits=out_dir / "motif_hits.bed",
        rules=out_dir / "RULES.md",
        manifest=out_dir / "demo.json",
        chrom_sizes={c.name: c.size for c in chroms},
        train_chroms=TRAIN_CHROMS,
        valid_chroms=VALID_CHROMS,
        test_chroms=TEST_CHROMS,
        tracks=rules.TRACKS,
        seed=seed,
    )


def _count_classes(truth: Sequence[Dict[str, object]]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for row in truth:
        counts[str(row["class"])] = counts.get(str(row["class"]), 0) + 1
    return dict(sorted(counts.items()))
