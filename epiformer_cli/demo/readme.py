"""RULES.md for a generated demo genome: what the model should learn, stated with the numbers used."""

from __future__ import annotations

from typing import Dict, Sequence

from epiformer_cli.demo import layout, rules, variants
from epiformer_cli.demo.layout import Chrom
from epiformer_cli.demo.pwm import FLOOR, Motif


def render_rules(chroms: Sequence[Chrom], motifs: Sequence[Motif], manifest: Dict[str, object]) -> str:
    names = [m.name for m in motifs]
    amp_head = "| track | depth | " + " | ".join(names) + " | SPI1 x CEBPB |"
    amp_sep = "|" + " --- |" * (len(names) + 3)
    amp_rows = [
        f"| {t} | {rules.DEPTH[t]:g} | " + " | ".join(f"{rules.AMPLITUDE[t].get(n, 0.0):g}" for n in names)
        + f" | {rules.COOPERATIVE.get(t, 0.0):g} |"
        for t in rules.TRACKS
    ]
    motif_rows = [
        f"| {m.matrix_id} | {m.name} | {m.width} | {m.information.sum():.1f} | {m.threshold:.2f} | "
        + (", ".join(rules.tracks_driven_by(m.name)) or "none") + " |"
        for m in motifs
    ]
    size_rows = []
    for c in chroms:
        split = next(k for k, vals in manifest["split"].items() if c.name in vals)
        size_rows.append(
            f"| {c.name} | {c.size:,} | {split} | {len(c.elements)} | {len(c.hits)} | "
            + (", ".join(f"{s:,}-{e:,}" for s, e in c.gaps) or "-") + " | "
            + (", ".join(f"{s:,}-{e:,}" for s, e in c.artefacts) or "-") + " | "
            + (", ".join(f"{s:,}-{e:,}" for s, e in c.unaligned) or "-") + " |"
        )
    class_rows = [
        f"| {name} | {p:.2f} | " + "; ".join(" + ".join(s) for s in sets) + " |"
        for name, p, sets in layout.ELEMENT_CLASSES
    ]
    counts = manifest["counts"]["variants"]
    variant_rows = [f"| {k} | {n} |" for k, n in counts.items()]
    return f"""# The epiformer demo genome: what a model should learn

Synthetic, made by `epiformer_cli.demo.generate_demo` (seed {manifest['seed']}, epiformer
{manifest['tool_version']}). Same seed, byte-identical files. Coordinates are 0-based, half-open
(BED, this file); VCF POS is 1-based.

## Genome
{len(chroms)} chromosomes, {sum(c.size for c in chroms):,} bp, none a multiple of 128 (the last bin of
each is partial). `genome.fa` has 60-column lines and its `.fai` index.

| chrom | length | split | elements + lone sites | motif hits | N gaps | artefact regions | no conservation |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(size_rows)}

- Background: i.i.d. bases in isochore-like blocks of {layout.ISOCHORE_SIZE[0]:,}-{layout.ISOCHORE_SIZE[1]:,} bp, each with
  its own G+C fraction drawn from {layout.ISOCHORE_GC[0]:.2f}-{layout.ISOCHORE_GC[1]:.2f}.
- Soft-masked (lowercase) repeats cover about {layout.REPEAT_FRACTION:.0%}: mutated copies of four interspersed
  families and simple repeats; artefact regions are lowercase satellite arrays (171 bp monomer).
- Chance motif matches in the background were mutated away, so every motif hit is planted
  (`motif_hits.bed` lists the hits of the final sequence; a handful sit right next to a planted site).
- Suggested split: train {', '.join(manifest['split']['train'])}; valid {', '.join(manifest['split']['valid'])};
  test {', '.join(manifest['split']['test'])}.

## Motifs (JASPAR CORE 2016 count matrices, see `epiformer_cli/demo/motifs/SOURCES.md`)
A window is a hit when its best-strand log2-odds score (uniform background, probabilities mixed with
{FLOOR:g} per base) reaches the threshold, given as a fraction of the way from the worst to the best
possible score. Overlapping hits of one motif keep the best. Each hit has an affinity weight
w = 0.5 + 0.5 * (rel - threshold) / (1 - threshold), from 0.5 at the threshold to 1 for a perfect match.

| JASPAR | factor | width | information (bits) | threshold | raises |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(motif_rows)}

## The accessibility rule (a function of the sequence only)
Expected coverage of track t at base x:

    lambda_t(x) = depth_t * ( B(x) + sum_m A[t, m] * D_m(x) + C_t * min(1, E_SPI1(x)) * min(1, E_CEBPB(x)) )

- D_m(x) = sum over hits h of motif m of w_h * exp(-(x - c_h)^2 / (2 * {rules.PEAK_SIGMA:g}^2)), c_h the hit centre:
  a Gaussian peak (about {2.355 * rules.PEAK_SIGMA:.0f} bp wide at half height) per hit.
- E_m is the same with a standard deviation of {rules.COOP_SIGMA:g} bp: SPI1 and CEBPB hits within a few
  hundred bp of each other cooperate (microglia only).
- B(x) = {rules.BACKGROUND_BASE:g} + {rules.BACKGROUND_GC_SLOPE:g} * clip(GC(x) - 0.30, 0, 0.40), GC(x) the G+C fraction of the
  {rules.BACKGROUND_GC_WINDOW} bp around x: a broad low background.
- Artefact regions: lambda_t = depth_t * {rules.ARTEFACT_LEVEL:g} everywhere in them, whatever the sequence
  (blacklisted). N bases: 0.

Amplitudes A[t, m] and C_t (expected coverage at a perfect hit's centre, before depth):

{amp_head}
{amp_sep}
{chr(10).join(amp_rows)}

In words: CTCF opens chromatin in every cell type; SPI1 and CEBPB open it in microglia, much more so
together; FOS::JUN (AP-1) opens it in neurons (weakly in microglia); GATA1 (a synthetic stand-in for
an oligodendrocyte factor) in oligodendrocytes.

## Noise: what the bigWigs hold
Reads of {rules.READ_LENGTH} bp whose centres are Poisson events at rate lambda_t(x) / {rules.READ_LENGTH}; the
tracks `targets/<track>.bw` hold the per-base read coverage (mean = lambda_t), as runs of equal
value, in FASTA chromosome order. Bases in N gaps are not written (missing). Nothing else is random:
with the sequence, a perfect model predicts lambda_t and only the count noise remains.
`targets.tsv` lists them (`name path scale clip stat`, paths relative to the sheet).

## Planted elements (`elements.bed`)
Elements of {layout.ELEMENT_LENGTH[0]}-{layout.ELEMENT_LENGTH[1]} bp, centres {layout.ELEMENT_MIN_SPACING:,} bp + an exponential of mean
{layout.ELEMENT_MEAN_EXTRA:,} bp apart; their motif sites are sampled from the PWM probabilities raised to the
power 2 (sharpened), on a random strand, and score at least 0.05 above the threshold. `decoy`
elements are conserved but their sites are broken below threshold: they stay closed. Lone sites:
{layout.LONE_PER_MB} single, unconserved motif sites per Mb outside elements (accessible by the rule), listed
as `lone_<motif>` over the site itself.

| class | share | motif sets |
| --- | --- | --- |
{chr(10).join(class_rows)}

## Conservation (`conservation.bw`)
phastCons-like, in [0, 1]: background runs (geometric lengths, mean 60 bp) of 0.2 * Beta(1, 6);
elements 0.60-0.85; planted motif sites (including decoys) 0.90-1.00; lone sites are not conserved.
Not written (missing, read as 0) over N gaps and over the "no conservation" regions above.

## Blacklist (`blacklist.bed`)
N gaps of 10 kb or more and the artefact regions (padded by 500 bp), named `n_gap` and
`high_signal_artefact`.

## Variants (`variants.vcf.gz`, `.tbi`; truth in `variants_truth.tsv`)
| class | records |
| --- | --- |
{chr(10).join(variant_rows)}

- causal: one base of a motif hit's most informative columns changed to the base the motif likes
  least; it destroys the hit and creates no other. INFO `CAUSAL`, `MOTIF`, `TRACKS`.
- effect_<track> in the truth table: log2((alt + 1) / (ref + 1)) of expected coverage summed over
  {variants.EFFECT_HALF_WINDOW} bp either side of the hit centre (the rule evaluated without the hit; the change of the G+C background by one base is
  ignored); TRACKS lists the
  tracks below {variants.AFFECTED_LOG2}. NA where not computed (indels, multi-allelic, REF mismatch).
- neutral: at least {variants.NEUTRAL_DISTANCE:,} bp from every hit and element, creates no hit; effect 0 (up to
  the negligible G+C background change).
- indel: deletions and insertions, 8 through the most informative column of a motif hit (MOTIF and
  TRACKS name the motif and the tracks it drives) and 4 in background (1 and 25 bp deletions, 2 and
  15 bp insertions); VCF-style, anchored on the preceding base.
- multiallelic: two ALT alleles (one through a motif hit, one in background).
- ref_mismatch: the REF allele does not match the genome: a reader should reject or flag them.
- near_end: 16 bp before the end of chr3 and at POS 20 of chrX.
- other_naming: a causal SNV on chr2 written as contig `2` (declared in the header); it sits after
  chrX in the file. Resolve the alias 2 -> chr2 to score it.
REF alleles are upper case; the genome is soft-masked, so compare case-insensitively.
"""
