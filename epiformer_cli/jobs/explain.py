"""The explain job: which bases make a region accessible, and why a variant matters.

For each region of a BED (or each variant of a VCF, with ``flank`` bases each side, or each of the
strongest peaks of a bigWig track: :mod:`~epiformer_cli.explain.peaks`) the job places
one model window around it (:func:`~epiformer_cli.explain.regions.place`), explains the prediction
summed over the region's output bins by ISM or gradient x input, and keeps the result as one piece
per region in ``OUT/explain.parts`` (a :class:`~epiformer_cli.runs.ResumableRun`: a
killed run resumes at the first unfinished region). ``--shard I/N`` (or a SLURM array task, or a
torchrun rank) explains every N-th region only; all shards write to the same ``OUT``. Whichever
run finds every region's piece there assembles the outputs (:mod:`epiformer_cli.explain.outputs`),
draws the plots, writes ``explain.json`` last and removes the parts: the same bytes whatever the
number of shards and the order they ran in.

Every check that can refuse a run (regions, chromosomes, lengths, the ISM size guard) runs before
anything is written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np


from epiformer_cli import __version__
from epiformer_cli.errors import EpiformerError, UsageError
from epiformer_cli.explain.regions import Region, Variant, count_bases, place, read_regions, variant_region
from epiformer_cli.io.files import atomic_write_text
from epiformer_cli.options import ExplainOptions
from epiformer_cli.progress import Progress
from epiformer_cli.runs import check_output_dir, remove_finished, replace_or_refuse
from epiformer_cli.runs import place as place_process

log = logging.getLogger(__name__)

KIND = "epiformer-explain"
FORMAT_VERSION = 1
PARTS = "explain.parts"
PROVENANCE = "explain.json"


@dataclass
class ExplainSummary:
    """What a run did.

    Attributes:
        out: the output folder; files: the files written (relative to ``out``).
        regions: regions explained (this shard's share); computed / resumed: of them, explained now /
            taken from pieces of an earlier run; skipped: variant alleles that could not be
            explained, by status.
        assembled: whether the outputs were written (False: a shard whose others are not done).
        shard: ``I/N`` when sharded.
        mutants: ISM mutants evaluated now (per view); plots: plots written.
        tracks: the tracks explained; method; seconds: wall time.
    """

    out: Path
    method: str
    tracks: List[str] = field(default_factory=list)
    regions: int = 0
    computed: int = 0
    resumed: int = 0
    mutants: int = 0
    plots: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)
    seconds: float = 0.0
    assembled: bool = True
    shard: Optional[str] = None


def explain(
    fasta: str | Path,
    cons: Optional[str | Path],
    model: str | Path,
    out: str | Path,
    *,
    regions: Optional[str | Path] = None,
    variants: Optional[str | Path | Sequence] = None,
    peaks: Optional[str | Path] = None,
    options: ExplainOptions = ExplainOptions(),
    progress: Optional[Progress] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> ExplainSummary:
    """Explain the regions of a BED, the variants of a VCF, or the strongest peaks of a bigWig
    track, into the folder ``out``.

    Args:
        fasta, cons, model: the genome, its conservation bigWig and the model file
            (:func:`~epiformer_cli.inference.inputs.open_inputs`).
        out: the output folder (created; an earlier run's parts there are resumed).
        regions: a BED of regions (chrom, start, end[, name]), 0-based half-open.
        variants: a VCF/BCF (or a list of :class:`~epiformer_cli.io.vcf.Allele`): each ALT
            allele is explained with ``options.flank`` bases on each side, ref and alt.
        peaks: a bigWig track (e.g. ``predict``'s ``pred.bw``; with ``options.peak_track``, the name
            its per-track files derive from, ``pred.bw`` -> ``pred.<track>.bw``): its
            ``options.top`` highest non-overlapping windows of ``options.peak_width`` bp are
            explained, as ``peak_1``, ``peak_2``, ... in rank order
            (:func:`~epiformer_cli.explain.peaks.peak_regions`). Exactly one of regions, variants
            and peaks is given.
        options: :class:`~epiformer_cli.options.ExplainOptions` (``shard``: ``I/N``).
        progress: ``progress(n, total=...)``: mutants done (ISM) or regions done (gradient), of
            this shard's share.
        environ: environment for SLURM/torchrun detection (default ``os.environ``).

    Raises:
        UsageError / InputFileError: a bad region, option or file (nothing is written).
    """
    from epiformer_cli.inference.inputs import input_paths, open_inputs

    started = time.perf_counter()
    placement = place_process(options.shard, environ)
    part = placement.part
    if sum(x is not None for x in (regions, variants, peaks)) != 1:
        raise UsageError("give --regions BED or --variants VCF or --peaks bigWig (one of them)")
    if options.peak_track is not None and peaks is None:
        raise UsageError("--peak-track picks the track of a --peaks prediction: give --peaks, or drop --peak-track")
    out = Path(out)
    if peaks is not None:
        peaks = peak_file(Path(peaks), options.peak_track)
    given = (("--regions", regions) if regions is not None else ("--variants", variants) if variants is not None
             else ("--peaks", peaks))
    motif_path = None
    if options.motif_db is not None:
        from epiformer_cli.motifs.database import motif_file

        if variants is None:
            raise UsageError("--motif-db marks the motif a variant overlaps in its plots: give --variants, or "
                             "drop --motif-db")
        motif_path = motif_file(options.motif_db)  # missing, or a folder that is not a motifs output
    sources = input_paths(fasta, cons, model, given if isinstance(given[1], (str, Path)) else ("", None),
                          ("--motif-db", motif_path))
    check_destination(out, sources, options.force)
    scanner = _motif_scanner(options)  # a MEME file that does not parse is refused before any work
    summary = ExplainSummary(out, options.method, shard=None if part.whole else part.label)
    with open_inputs(fasta, cons, model, no_cons=options.no_cons) as inputs:
        config = inputs.config
        engine, explainer, tracks = _explainer(inputs, options)
        summary.tracks = tracks
        if regions is not None:
            todo = read_regions(regions, inputs.genome.chrom_sizes, config)
        elif peaks is not None:
            from epiformer_cli.explain.peaks import peak_regions

            # every shard chooses the same peaks: the choice depends on the file and the options only
            todo = peak_regions(peaks, inputs.genome.chrom_sizes, config, options.top, options.peak_width)
            log.info("explaining the %d highest %d bp window(s) of %s (peak_1 .. peak_%d)", len(todo),
                     options.peak_width, peaks, len(todo))
        else:
            todo = _variant_regions(variants, inputs, engine, options, summary)
        mine = part.take(todo)
        summary.regions = len(mine)
        if part.source == "SLURM array":
            log.info("SLURM array task: explaining shard %s of the regions (--shard 1/1 explains them all)",
                     part.label)
        _guard(mine, explainer, engine, options)
        from epiformer_cli.runs.space import require_memory

        span = max((r.length for r in mine), default=0)  # regions are explained one at a time
        require_memory(explainer.memory_bytes(span), f"{options.method} of a {span:,} bp region in "
                       f"{len(tracks)} track(s)", "explain fewer --tracks or shorter regions, or one strand "
                       "(--no-rc-average)" + (", or use --method ism" if options.method == "gradient" else ""))
        remove_finished(out, PROVENANCE)

        from epiformer_cli.runs import ResumableRun, RunFinishedElsewhere

        run = ResumableRun(out / PARTS, kind=KIND, format_version=FORMAT_VERSION,
                           settings={"tool": __version__, "inputs": inputs.identities(),
                                     "options": options.fingerprint(), "tracks": tracks},
                           what="explain parts folder", force=options.force,
                           fix="run the same command to resume, or --force to discard the parts")
        if run.resumed:
            log.info("resuming: reusing explained regions in %s", run.root)
        try:
            run.record_shard(placement.shard, "started")
            _explain_all(mine, inputs, explainer, run, summary, progress)
            run.record_shard(placement.shard, "done")
            absent = [i for i, r in enumerate(todo) if not run.is_done(_piece_name(r))]
            if absent:  # other shards' regions: the last shard to finish assembles
                summary.assembled = False
                log.info("%s is assembled when every region is explained (the last shard to finish does it, or "
                         "re-run any shard then): %s", out,
                         run.describe_missing(absent, len(todo), [todo[i].name for i in absent], noun="regions"))
                return _finish(summary, started)
            pieces = {r.index: run.path(_piece_name(r)) for r in todo}
            # one run assembles; a concurrent run of the same command waits, then finds it done
            with run.lock("assemble.lock", wait=True) as held:
                if not held or not run.settings_path.exists():
                    raise RunFinishedElsewhere(str(run.root))
                _assemble(out, todo, pieces, inputs, tracks, options, summary, variants is not None, scanner)
                run.discard()
        except RunFinishedElsewhere:
            log.info("%s was finished by another run of the same command", out)
        except EpiformerError:
            if not run.resumed and summary.computed == 0 and part.whole:
                run.discard()
            raise
    return _finish(summary, started)


def _finish(summary: ExplainSummary, started: float) -> ExplainSummary:
    summary.seconds = time.perf_counter() - started
    _report(summary)
    return summary


# ---- set-up -----------------------------------------------------------------------------------------
def _explainer(inputs, options: ExplainOptions):
    """The engine (device, precision, views, tracks) and the method's explainer."""
    from epiformer_cli.device import compute_device
    from epiformer_cli.explain.gradient import GradientExplainer
    from epiformer_cli.explain.ism import IsmExplainer
    from epiformer_cli.inference.engine import InferenceEngine

    device = compute_device(options.inference.device, options.inference.precision)
    tracks = inputs.track_names(options.inference.tracks)
    engine = InferenceEngine.from_options(inputs.loaded.model, options.inference, device=device,
                                          tracks=inputs.track_indices(tracks))
    if options.method == "ism":
        return engine, IsmExplainer(engine), tracks
    return engine, GradientExplainer(inputs.loaded.model, engine), tracks


def peak_file(peaks: Path, track: Optional[str]) -> Path:
    """The bigWig ``--peaks`` means: ``peaks`` itself, or with ``--peak-track`` the per-track file of
    a several-track prediction, named as predict and export-bigwig name them (``pred.bw`` ->
    ``pred.<track>.bw``, :func:`~epiformer_cli.jobs.export.output_paths`).

    Raises:
        UsageError: no such per-track file (naming the tracks there are); ``peaks`` missing while
            per-track files of it exist (saying to choose one with --peak-track).
    """
    import glob

    from epiformer_cli.jobs.export import output_paths

    # the name rule's parts: "<stem>." before the track, the suffix after it (probe names A and B)
    probe = output_paths(peaks, ["A", "B"])["A"].name
    cut = probe.rindex(".A.")
    prefix, suffix = probe[:cut + 1], probe[cut + 2:]
    found = sorted(peaks.parent.glob(glob.escape(prefix) + "*" + glob.escape(suffix)))
    names = [p.name[len(prefix):len(p.name) - len(suffix)] for p in found if p.is_file()]
    listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    if track is None:
        if not peaks.exists() and names:
            raise UsageError(f"--peaks {peaks} does not exist, but per-track bigWigs of it do (for {listed}): "
                             f"choose one with --peak-track {names[0]}")
        return peaks
    path = output_paths(peaks, [track, "A" if track != "A" else "B"])[track]
    if not path.is_file():
        there = f"the per-track bigWigs there are for {listed}" if names else f"no {prefix}<track>{suffix} there"
        raise UsageError(f"--peak-track {track}: no {path.name} beside {peaks} ({there}): check the track name, "
                         "or give a one-track bigWig to --peaks without --peak-track")
    return path


def _variant_regions(variants, inputs, engine, options: ExplainOptions, summary: ExplainSummary) -> List[Region]:
    """A region around every ALT allele that can be scored (others are counted by status)."""
    from collections import Counter

    from epiformer_cli.inference.reader import WindowReader
    from epiformer_cli.io.vcf import read_vcf
    from epiformer_cli.variants.scoring import VariantScorer

    checker = VariantScorer(engine, WindowReader(inputs.genome, inputs.conservation), fast=False,
                            source=str(variants) if isinstance(variants, (str, Path)) else "variants")
    skipped: Counter = Counter()
    out: List[Region] = []
    reader = None
    if isinstance(variants, (str, Path)):
        reader = read_vcf(variants)
        alleles = (a for record in reader.records() for a in record.alleles)
        label = reader.label
    else:
        alleles, label = iter(variants), "variants"
    try:
        for allele in alleles:
            task = checker.check(allele)
            if task.status != "ok":
                skipped[task.status] += 1
                continue
            variant = Variant(allele.id, allele.pos, allele.start, allele.ref, allele.alt)
            size = inputs.genome.chrom_sizes[task.chrom]
            out.append(variant_region(len(out), task.chrom, size, variant, options.flank, inputs.config,
                                      f"{label}: record {allele.record + 1}"))
    finally:
        if reader is not None:
            reader.close()
    summary.skipped = dict(skipped)
    if skipped:
        log.warning("%d allele(s) cannot be explained (%s): see score-variants for their status",
                    sum(skipped.values()), ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    if not out:
        raise UsageError(f"{label}: no variant that can be explained")
    return out


def _guard(regions: Sequence[Region], explainer, engine, options: ExplainOptions) -> None:
    """Refuse an ISM run larger than ``--max-mutants``, saying how long it would take here."""
    if options.method != "ism":
        return
    from epiformer_cli.explain.ism import describe_seconds, estimate_seconds

    mutants = 3 * count_bases(regions)
    log.info("ISM: %s mutants x %d strand(s) over %d region(s)", f"{mutants:,}", len(engine.views), len(regions))
    if mutants > options.max_mutants:
        seconds = estimate_seconds(engine, mutants)
        raise UsageError(
            f"ISM of {len(regions):,} region(s) ({count_bases(regions):,} bp) is {mutants:,} mutants, more than "
            f"--max-mutants {options.max_mutants:,}; it would take about {describe_seconds(seconds)} on "
            f"{engine.device}: raise --max-mutants, use --method gradient, or give fewer or shorter regions")


def check_destination(out: Path, inputs: Sequence, force: bool, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is an input, holds one, is a file, holds
    files explain did not write, or holds a finished run's results (unless ``force``: they are
    replaced)."""
    out = Path(out)
    # the folder is explain's when it holds its results or its parts (a run to resume)
    check_output_dir(out, inputs=inputs, option=option, marks=(PROVENANCE, PARTS))
    finished = out / PROVENANCE
    replace_or_refuse(out, holds=f"explain results ({finished})" if finished.exists() else None, force=force,
                      fix=f"choose another {option}, or --force to replace them")


# ---- the work ---------------------------------------------------------------------------------------
def _piece_name(region: Region) -> str:
    return f"region-{region.index:07d}-{region.key()}.npz"


def _explain_all(regions: Sequence[Region], inputs, explainer, run, summary: ExplainSummary,
                 progress) -> None:
    """Explain every region of ``regions`` without a piece in ``run`` (checked: a damaged one is
    explained again), sharing them with concurrent runs on the same folder."""
    from epiformer_cli.explain.outputs import write_piece
    from epiformer_cli.inference.reader import WindowReader

    reader = WindowReader(inputs.genome, inputs.conservation)
    config = inputs.config
    # ISM counts progress in mutants (a full-size region takes minutes, reported as it goes),
    # gradient in regions
    by_mutant = explainer.method == "ism"

    def units(region: Region) -> int:
        return 3 * count_bases([region]) if by_mutant else 1

    if progress is not None:
        progress(0, total=sum(units(r) for r in regions))
    claims = run.claims()
    n_bases = [0]

    def explain(region: Region) -> bool:
        """Explain ``region`` unless its piece exists (checked) or another run holds its claim."""
        name = _piece_name(region)
        reported = 0
        if run.is_done(name) and not run.verify(name):
            run.drop_damaged(name, f"the explanation of region {region.index + 1}")
        if run.is_done(name):
            summary.resumed += 1
        elif not claims.take(name):
            return False  # another run is explaining it: waited for below
        elif run.is_done(name):  # finished by another run meanwhile
            claims.release(name)
            summary.resumed += 1
        else:
            before = summary.mutants
            ref, alt, out_start = _explain_region(region, reader, config, explainer, summary,
                                                  progress if by_mutant else None)
            reported = summary.mutants - before  # N bases are not mutated: the rest is added below
            n_bases[0] += int((ref.codes > 3).sum())
            run.write(name, lambda handle: write_piece(handle, ref, alt, out_start))
            claims.release(name)
            summary.computed += 1
        if progress is not None:
            progress(units(region) - reported)
        return True

    with claims:  # regions a concurrent run holds are waited for (or taken, if it died)
        claims.work_through(regions, explain, _piece_name, run.is_done, what="regions")
    n_bases = n_bases[0]
    if n_bases:
        log.warning("%d N base(s) in the regions have no contribution (NaN in contrib.npz, no value in the "
                    "bigWigs)", n_bases)


def _explain_region(region: Region, reader, config, explainer, summary: ExplainSummary, progress=None):
    """The reference (and, for a variant, alternative) explanation of one region."""
    from epiformer_cli.data.encoding import encode_sequence
    from epiformer_cli.variants.windows import build_alt, realign

    v = region.variant
    grow = 0 if v is None else max(0, len(v.alt) - len(v.ref))
    placement = place(region.start, region.end + grow, config)
    first, last = placement.first, region.end - placement.window
    ref_bins = (placement.bins[0], -(-(last - config.crop_bp) // config.bin_size))
    extra = 0 if v is None else max(0, len(v.ref) - len(v.alt))
    codes, cons = reader.read(region.chrom, placement.window, placement.window + config.seq_len + extra)
    L = config.seq_len
    ref = explainer.explain(codes[:L], cons[:L], first, last, ref_bins, progress)
    summary.mutants += explainer.mutants(ref.codes)
    alt = None
    if v is not None:
        offset = v.start - placement.window
        alt_codes, alt_cons = build_alt(codes, cons, offset, len(v.ref), encode_sequence(v.alt), L)
        alt_last = last + len(v.alt) - len(v.ref)
        alt_bins = (placement.bins[0], -(-(alt_last - config.crop_bp) // config.bin_size))
        alt = explainer.explain(alt_codes, alt_cons, first, alt_last, alt_bins, progress)
        alt.pred = realign(alt.pred, offset, len(v.ref), len(v.alt), L, config.crop_bp, config.bin_size)
        summary.mutants += explainer.mutants(alt.codes)
    return ref, alt, placement.out_start


# ---- outputs ----------------------------------------------------------------------------------------
def _motif_scanner(options: ExplainOptions):
    """``--motif-db``: (database, scanner) of its motifs, or None without it."""
    if options.motif_db is None:
        return None
    from epiformer_cli.motifs.database import load_motif_db
    from epiformer_cli.motifs.scan import MotifScanner

    database = load_motif_db(options.motif_db)
    return database, MotifScanner(database.motifs)


def _variant_motif(region: Region, genome, scanner) -> Optional[tuple]:
    """(start, end, label) on the reference of the strongest motif instance a variant overlaps
    (:func:`~epiformer_cli.variants.motifs.variant_motifs`' rule), or None."""
    from epiformer_cli.bases import N
    from epiformer_cli.variants.motifs import changed_bases, local_sequences

    database, scan = scanner
    v = region.variant
    ref, alt, span = local_sequences(genome, region.chrom, v.start, v.ref, v.alt, scan.flank)
    width = 2 * scan.flank + max(1, span)
    rows = np.full((2, width), N, dtype=np.uint8)
    rows[0, :len(ref)], rows[1, :len(alt)] = ref, alt
    hit = scan.strongest(rows[:1], rows[1:], np.array([span]))[0]
    if hit is None:
        return None
    at = changed_bases(v.start, v.ref, v.alt)[0] + hit.offset
    length = database.motifs[hit.motif].pwm.shape[1]
    return at, at + length, f"{hit.label} ({hit.strand}) ref {hit.ref_score:.1f}, alt {hit.alt_score:.1f}"


def _assemble(out: Path, regions: Sequence[Region], pieces: Dict[int, Path], inputs, tracks: List[str],
              options: ExplainOptions, summary: ExplainSummary, is_variants: bool, scanner=None) -> None:
    from epiformer_cli.explain.outputs import track_file_names, write_bigwigs, write_npz, write_tsv

    names = track_file_names(tracks)
    write_bigwigs({t: out / n for t, n in names.items()}, regions, pieces, inputs.genome.chrom_sizes)
    write_npz(out / "contrib.npz", regions, pieces, tracks, options.method)
    write_tsv(out / "regions.tsv", regions, pieces, tracks, options.method)
    files = list(names.values()) + ["contrib.npz", "regions.tsv"]
    if options.plot:
        motifs = {}
        if scanner is not None:
            motifs = {r.index: _variant_motif(r, inputs.genome, scanner) for r in regions[:options.plot]
                      if r.variant is not None}
        summary.plots = _plots(out / "plots", regions[:options.plot], pieces, tracks, options.method,
                               inputs.config, is_variants, motifs)
        if summary.plots:
            files.append("plots")
    summary.files = files
    provenance = {"epiformer_version": __version__,
                  "inputs": {"fasta": str(inputs.fasta), "cons": str(inputs.cons) if inputs.cons else None,
                             "model": str(inputs.model)},
                  # what `motifs` compares to refuse folders of other models or genomes
                  "identities": inputs.identities(),
                  "options": options.replace(shard=None).to_dict(), "tracks": tracks, "regions": len(regions),
                  "skipped": summary.skipped, "files": files}
    atomic_write_text(out / PROVENANCE, json.dumps(provenance, indent=1) + "\n")


def _plots(folder: Path, regions: Sequence[Region], pieces: Dict[int, Path], tracks: List[str], method: str,
           config, is_variants: bool, motifs: Optional[Dict[int, Optional[tuple]]] = None) -> int:
    """Plots of the first regions (per track): logo, heatmap and predicted track; for variants
    also the ref/alt logos and tracks. Returns how many were written."""
    from epiformer_cli.explain.outputs import read_piece
    from epiformer_cli.explain.plots import plot_name, plot_region, plot_variant

    folder.mkdir(parents=True, exist_ok=True)
    # Both in the explained value's units (the prediction summed over the region's bins; the figure
    # says which bins and their sum).
    if method == "ism":
        label = "ISM effect (mutant - ref)"
        contrib_label = "contribution: minus\nthe mean ISM effect\nof its 3 mutations"
    else:
        label, contrib_label = "hypothetical contribution", "contribution:\ngradient x input"
    written = 0
    context = 8  # bins shown on each side of the region's own bins
    for region in regions:
        piece = read_piece(pieces[region.index])
        bin_bp = config.bin_size
        b0 = max(0, (region.start - piece.out_start) // bin_bp - context)
        b1 = min(config.out_bins, -(-(region.end - piece.out_start) // bin_bp) + context)
        pred_start = piece.out_start + b0 * bin_bp
        stem = f"{region.index + 1:04d}.{region.name}"
        for t, track in enumerate(tracks):
            title = f"{region.name} ({region.chrom}:{region.start:,}-{region.end:,}), {track}, {method}"
            ok = plot_region(folder / plot_name(stem, track), chrom=region.chrom, start=region.start,
                             codes=piece.ref.codes, contrib=piece.ref.contrib[t], matrix=piece.ref.matrix[t],
                             matrix_label=label, track=track, title=title, pred=piece.ref.pred[t, b0:b1],
                             pred_start=pred_start, bin_size=bin_bp, region=(region.start, region.end),
                             contrib_label=contrib_label)
            if not ok:
                return written
            written += 1
            v = region.variant
            if v is not None and piece.alt is not None:
                written += plot_variant(folder / plot_name(stem + ".variant", track), chrom=region.chrom, track=track,
                                        title=f"{region.name} {region.chrom}:{v.label}, {method}",
                                        variant_pos=v.start, ref_allele=v.ref, alt_allele=v.alt,
                                        ref_start=region.start, ref_codes=piece.ref.codes,
                                        ref_contrib=piece.ref.contrib[t], alt_codes=piece.alt.codes,
                                        alt_contrib=piece.alt.contrib[t], ref_pred=piece.ref.pred[t, b0:b1],
                                        alt_pred=piece.alt.pred[t, b0:b1], pred_start=pred_start, bin_size=bin_bp,
                                        motif=(motifs or {}).get(region.index))
    return written


def _report(summary: ExplainSummary) -> None:
    done = f"explained {summary.regions:,} region(s) by {summary.method}"
    if summary.resumed:
        done += f" ({summary.resumed:,} resumed from an earlier run)"
    if summary.mutants:
        done += f"; {summary.mutants:,} mutants"
    if summary.shard:
        done = f"shard {summary.shard}: {done}"
    if not summary.assembled:
        log.info("%s in %.1f s; %s is written when every shard is done", done, summary.seconds, summary.out)
        return
    log.info("%s in %.1f s: wrote %s", done, summary.seconds,
             ", ".join(str(summary.out / f) for f in summary.files))
