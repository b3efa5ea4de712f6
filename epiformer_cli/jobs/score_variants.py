"""The score-variants job: stream a VCF, score every allele, write TSV or VCF in input order.

Memory stays bounded whatever the VCF's size: records are read ``chunk_size`` at a time; within a
chunk the alleles are grouped by scoring window (so one reference pass serves all of a window's
variants), and the chunk's rows are written, in input order, before the next chunk is read. With
an output file, finished chunks are kept as parts so a killed run resumes, and ``shard`` splits
the chunks between runs and processes (:mod:`epiformer_cli.runs.parts`, on the run layer
:mod:`epiformer_cli.runs`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, TextIO, Tuple

from epiformer_cli import __version__
from epiformer_cli.errors import EpiformerError, InputFileError, StorageError, UsageError
from epiformer_cli.io.files import atomic_write_text
from epiformer_cli.io.identity import file_identity
from epiformer_cli.io.text_output import format_for
from epiformer_cli.options import ScoreOptions
from epiformer_cli.progress import Progress
from epiformer_cli.runs import Shard, check_output, check_output_dir, place
from epiformer_cli.runs.parts import PartedOutput, chunk_digest
from epiformer_cli.variants.null_run import null_calibration
from epiformer_cli.variants.output import tsv_header, tsv_rows, vcf_info_definitions, vcf_rows
from epiformer_cli.variants.scoring import status_summary

log = logging.getLogger(__name__)



@dataclass
class ScoreSummary:
    """What a run did.

    Attributes:
        statuses / flags: allele counts per status and per flag (over the chunks this run owns).
        records: input records read; chunks: chunks in the input; scored_chunks: chunks computed
            now; resumed_chunks: chunks taken from earlier parts; assembled: whether ``out`` is
            complete (always True for standard output).
        seconds: wall time.
    """

    statuses: Dict[str, int] = field(default_factory=dict)
    flags: Dict[str, int] = field(default_factory=dict)
    records: int = 0
    chunks: int = 0
    scored_chunks: int = 0
    resumed_chunks: int = 0
    assembled: bool = True
    seconds: float = 0.0
    tracks: List[str] = field(default_factory=list)
    digests: List[str] = field(default_factory=list, repr=False)  # one per chunk of the input
    strongest: List = field(default_factory=list, repr=False)  # (max |diff|, Allele), strongest first
    explained: Optional[Path] = None  # the --explain-top folder, when written
    plots: List[Path] = field(default_factory=list)  # the --plots files, when written


def _chunks(reader, chunk_size: int) -> Iterator[List]:
    """Records in lists of ``chunk_size``; duplicate alleles (same chrom, POS, REF, ALT as an
    earlier one) are flagged ``duplicate`` on the way."""
    seen = set()
    chunk: List = []
    for record in reader.records():
        for a in record.alleles:
            key = hash((a.chrom, a.pos, a.ref, a.alt))
            if key in seen:
                a.flags.append("duplicate")
            else:
                seen.add(key)
        chunk.append(record)
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _file_id(path: Optional[Path]) -> Optional[Dict[str, object]]:
    if path is None:
        return None
    if str(path) == "-" or not Path(path).is_file():
        # standard input, a pipe (`<(zcat x.vcf.gz)`): reading it for an identity would take
        # its bytes from the VCF reader
        return {"path": str(path)}
    try:
        return file_identity(path)
    except OSError:
        return {"path": str(path)}


def score_variants(
    vcf: str | Path,
    fasta: str | Path,
    cons: Optional[str | Path],
    model: str | Path,
    out: str | Path = "-",
    *,
    options: ScoreOptions = ScoreOptions(),
    progress: Optional[Progress] = None,
    stdout: Optional[TextIO] = None,
    environ: Optional[Mapping[str, str]] = None,
    null_progress: Optional[Progress] = None,
) -> ScoreSummary:
    """Score every allele of ``vcf`` and write one row per allele and track (or an annotated VCF).

    Args:
        vcf: VCF, bgzipped VCF, BCF, or ``-`` for standard input.
        fasta, cons, model: the genome, its phastCons bigWig and the model file, opened and checked
            together by :func:`~epiformer_cli.inference.inputs.open_inputs`.
        out: output file, or ``-`` for standard output (not resumable, no sharding).
        options: :class:`~epiformer_cli.options.ScoreOptions` (tracks, window mode, bins, shard...).
        progress: called with the number of records after each chunk.
        null_progress: called as ``null_progress(n, total=size)`` while the null is scored.
        stdout: where ``-`` writes (default ``sys.stdout``).
        environ: environment for SLURM/torchrun detection (default ``os.environ``).
    """
    from epiformer_cli.io.chroms import match_chromosomes
    from epiformer_cli.io.vcf import read_vcf
    from epiformer_cli.inference.inputs import open_inputs

    started = time.perf_counter()
    # resolved once, so the provenance, the sidecar and a resumed run's fingerprint all see it
    options = options.replace(out_format=format_for(out, options.out_format))
    sources = input_paths(vcf, fasta, cons, model, options)
    # a FIFO or a character device (/dev/null) given as --out is written into as a stream, like
    # standard output: never unlinked, never resumable
    to_stdout = str(out) == "-" or check_output(out, inputs=sources, streams=True,
                                                force=options.force or PartedOutput.exists_for(Path(out)))
    part = _part(options, to_stdout, os.environ if environ is None else environ)
    _check_destinations(out, to_stdout, sources, options)
    motif_db, scanner = _motif_scanner(options)  # a bad motif file is refused before any work
    inputs = open_inputs(fasta, cons, model, no_cons=options.no_cons)
    reader = read_vcf(vcf)
    parts, fresh_parts, stream = None, False, None
    try:
        if reader.contigs:
            match_chromosomes(reader.contigs, inputs.genome.chroms, f"{reader.label} (VCF contigs)", str(fasta))
        scorer, track_names = _scorer(inputs, options, reader.label)
        _check_room(scorer, inputs.config, track_names, options)
        calibration = null_calibration(inputs, scorer, track_names, options, part, null_progress,
                                       all_tracks=lambda: _scorer(inputs, options.replace(tracks=None), reader.label))
        provenance = _provenance(vcf, inputs, options, track_names, calibration, motif_db)
        if options.out_format == "tsv":
            header, rows = tsv_header(calibrated=calibration is not None, motifs=scanner is not None), tsv_rows
        else:
            meta = [("epiformer_version", __version__), ("epiformer_model", str(model)),
                    ("epiformer_tracks", ",".join(track_names)),
                    ("epiformer_options", json.dumps(provenance["options"], separators=(",", ":")))]
            if calibration is not None:
                meta.append(("epiformer_null", json.dumps(provenance["null"], separators=(",", ":"))))
            if motif_db is not None:
                meta.append(("epiformer_motifs", json.dumps(provenance["motifs"], separators=(",", ":"))))
            header = reader.header_text(vcf_info_definitions(track_names, calibrated=calibration is not None,
                                                             motifs=scanner is not None), meta)
            rows = vcf_rows

        def render(chunk, tasks, tracks) -> str:
            calibrated = calibration.for_tasks(tasks) if calibration is not None else None
            motifs = None
            if scanner is not None:
                from epiformer_cli.variants.motifs import variant_motifs

                motifs = variant_motifs(tasks, inputs.genome, scanner)
            return rows(chunk, tasks, tracks, calibrated=calibrated, motifs=motifs)

        collector = None
        if options.plots:
            from epiformer_cli.variants.plot_data import PlotCollector

            collector = PlotCollector(track_names, options.out_format)
        if not to_stdout:
            fresh_parts = not PartedOutput.exists_for(Path(out))
            parts = PartedOutput(Path(out), {"tool": __version__, "inputs": _identities(vcf, inputs, motif_db),
                                             "options": options.fingerprint(), "tracks": track_names},
                                 force=options.force)
        if str(out) != "-" and to_stdout:
            stream = open(out, "w", encoding="utf-8", newline="\n")  # a FIFO or a device (checked)
        sink = stream or (stdout if stdout is not None else sys.stdout)
        if to_stdout:
            sink.write(header)
            if collector is not None:
                sink = _Tee(sink, collector.feed)
        summary = _score_chunks(reader, scorer, options, part, parts, render, track_names, sink, progress,
                                discard_on_refusal=fresh_parts)
        if to_stdout:
            sink.flush()
        else:
            # with later steps (plots, --explain-top) the parts stay until those are done too, so an
            # interrupted step is resumed by the same command (the parts make the output resumable)
            later = bool(options.plots or options.explain_top)
            summary.assembled = parts.assemble(header, summary.digests, keep=later)
            if not summary.assembled and str(vcf) != "-" and parts.folder.is_dir() and parts.damaged:
                # a part failed its checksum while assembling (removed, with a warning): score it again
                reader.close()
                reader = read_vcf(vcf)
                again = _score_chunks(reader, scorer, options, Shard(), parts, render, track_names, sink, progress,
                                      discard_on_refusal=False)
                summary.scored_chunks += again.scored_chunks
                summary.assembled = parts.assemble(header, again.digests, keep=later)
            fresh_parts = fresh_parts and not summary.assembled  # a later step's error keeps them
            if summary.assembled and options.out_format == "tsv":
                atomic_write_text(_sidecar(Path(out)), json.dumps(provenance, indent=1) + "\n")
        if collector is not None and summary.assembled:
            if not to_stdout:
                collector.feed_file(Path(out))
            summary.plots = _write_plots(collector, calibration, options)
        summary.seconds = time.perf_counter() - started
        _report(summary, out if not to_stdout else None)
        if options.explain_top:
            if summary.assembled:
                _explain_top(summary, fasta, cons, model, options)
            else:
                log.info("--explain-top runs when %s is assembled (by the last shard to finish)", out)
        if parts is not None and summary.assembled:
            parts.discard()  # every step is done: nothing is left to resume
        return summary
    except EpiformerError as exc:
        # a bad record or option: parts made by this run cannot be resumed (the fixed input or
        # option is another run's), and would make that run refuse the folder; a full disk or a
        # damaged piece is the machine's: the same command resumes from the parts
        if parts is not None and fresh_parts and not isinstance(exc, StorageError):
            parts.discard()
        raise
    finally:
        reader.close()
        inputs.close()
        if stream is not None:
            stream.close()


def input_paths(vcf, fasta, cons, model, options: ScoreOptions) -> List[Tuple[str, Path]]:
    """Every file the run reads, named by its option, for the destination checks (an output is
    never one of them). A missing ``--null-blacklist`` is refused here, before any work."""
    from epiformer_cli.inference.inputs import input_paths as model_inputs
    from epiformer_cli.io.files import check_input_file

    if options.null_blacklist and options.null_size:
        check_input_file(options.null_blacklist, "--null-blacklist BED")
    motifs = None
    if options.motif_db:
        from epiformer_cli.motifs.database import motif_file

        motifs = motif_file(options.motif_db)  # missing, or a folder that is not a motifs output: refused here
    return model_inputs(fasta, cons, model, ("the VCF", vcf), ("--null-blacklist", options.null_blacklist),
                        ("--motif-db", motifs))


def _check_destinations(out, to_stdout: bool, sources: List, options: ScoreOptions) -> None:
    """Every file and folder the run writes after the scoring (index, sidecar, null, plots,
    ``--explain-top``), checked before the first window: none may be an input, a FIFO or a
    device, or in a folder that cannot be written; an existing plot needs --force."""
    from epiformer_cli.io.text_output import companions
    from epiformer_cli.runs import check_companion
    from epiformer_cli.variants.calibration_plots import PLOT_NAMES

    written = [] if to_stdout else [("--out", Path(out))]
    if not to_stdout:
        beside = companions(out) + ([_sidecar(Path(out))] if options.out_format == "tsv" else [])
        for path in beside:
            check_companion(path, inputs=sources, what="file written with --out")
    resuming = not to_stdout and PartedOutput.exists_for(Path(out))
    if options.null_size and options.null_path:  # without --null, the null is in the cache folder
        check_companion(options.null_path, inputs=sources + written, option="--null", what="null")
        written.append(("--null", Path(options.null_path)))
    if options.plots:
        from epiformer_cli.variants.calibration_plots import require_matplotlib

        # the folder may hold other files (the plots are three named files, each checked)
        check_output_dir(options.plots, option="--plots")
        for name in PLOT_NAMES if Path(options.plots).is_dir() else ():
            check_output(Path(options.plots) / name, inputs=sources + written, option="--plots",
                         force=options.force or resuming)
        require_matplotlib()  # before the scoring, not after it
    if options.explain_top:
        from epiformer_cli.jobs.explain import check_destination

        check_destination(Path(options.explain_dir), sources + written, options.force, option="--explain-top")


def _check_room(scorer, config, track_names: List[str], options: ScoreOptions) -> None:
    """Before the first window: the scoring batch must fit in this machine's memory, and an ISM
    ``--explain-top`` within explain's ``--max-mutants`` (score-variants has no such option: the
    refusal would otherwise come after the whole scoring)."""
    from epiformer_cli.inference.engine import inference_memory_bytes
    from epiformer_cli.runs.space import require_memory

    engine = scorer.engine
    require_memory(inference_memory_bytes(config, engine.batch_size, len(track_names), precision=engine.precision,
                                          device_type=engine.device.type),
                   f"scoring with --batch-size {engine.batch_size}", "lower --batch-size")
    if options.explain_top and options.explain_method == "ism":
        from epiformer_cli.explain.ism import describe_seconds, estimate_seconds, variant_mutants
        from epiformer_cli.options import ExplainOptions

        mutants, limit = variant_mutants(options.explain_top, options.explain_flank), ExplainOptions().max_mutants
        if mutants > limit:
            raise UsageError(f"--explain-top {options.explain_top} at --explain-flank {options.explain_flank} is "
                             f"{mutants:,} ISM mutants, more than {limit:,} (about "
                             f"{describe_seconds(estimate_seconds(engine, mutants))}): lower --explain-top or "
                             "--explain-flank, or use --explain-method gradient")


def _part(options: ScoreOptions, to_stdout: bool, environ: Mapping[str, str]) -> Shard:
    """The share of the chunks this process scores: ``--shard``, a SLURM array task, a torchrun rank.

    Standard output cannot be shared: an explicit ``--shard`` (or torchrun) is refused, and a
    SLURM array task writing to standard output scores everything (said once).
    """
    placement = place(options.shard, environ)
    shard, world = placement.shard, placement.torchrun.world
    if to_stdout:
        if shard.source == "SLURM array" and world == 1:
            log.info("SLURM array task %s writes to standard output, so it scores every record "
                     "(give every task the same --out FILE to share the work)", shard.label)
            return Shard()
        if not shard.whole or world > 1:
            raise UsageError("--shard needs --out FILE (shards are assembled into one file)")
        return shard
    if shard.source == "SLURM array":
        log.info("SLURM array task: scoring shard %s of the chunks; the last task to finish writes the "
                 "output (--shard 1/1 scores everything here)", shard.label)
    return placement.part


def _score_chunks(reader, scorer, options: ScoreOptions, part: Shard, parts: Optional[PartedOutput], render,
                  track_names: List[str], sink: TextIO, progress, discard_on_refusal: bool) -> ScoreSummary:
    """Score this process's chunks (or take them from finished parts), writing each chunk's rows to
    the parts folder or ``sink``, in input order.

    A chunk another live run is scoring (its claim is held: the same command started twice, two
    array tasks given the same shard) is left to it; once the pass is over this run waits for that
    part, or scores the chunk itself if the other run died."""
    summary = ScoreSummary(tracks=track_names)
    strongest: List = []
    statuses: Counter = Counter()
    flags: Counter = Counter()
    pending: List = []

    def take(index: int, digest: str, chunk) -> Optional[Dict]:
        return _take_or_score(index, digest, chunk, parts, scorer, options, reader, render, track_names, sink,
                              summary, discard_on_refusal)

    def tally(counts: Dict, chunk) -> None:
        statuses.update(counts["statuses"])
        flags.update(counts["flags"])
        _keep_strongest(strongest, chunk, counts)
        if progress is not None:
            progress(len(chunk))

    for index, chunk in enumerate(_chunks(reader, options.chunk_size)):
        summary.records += len(chunk)
        digest = chunk_digest(index, [r.line for r in chunk])
        summary.digests.append(digest)
        if not part.owns(index):
            if options.explain_top and parts is not None:
                # another shard's chunk: its part (if finished) says which of its alleles are strongest
                _keep_strongest(strongest, chunk, parts.done(index, digest))
            continue
        counts = take(index, digest, chunk)
        if counts is None:  # another run is scoring it now
            pending.append((index, digest, chunk))
        else:
            tally(counts, chunk)
    waited = False
    while pending:
        if parts is not None and not parts.folder.is_dir():
            log.info("%s was assembled by another run of the same command meanwhile", parts.out)
            break
        index, digest, chunk = pending[0]
        counts = take(index, digest, chunk)
        if counts is None:
            if not waited:
                log.info("waiting for another run scoring %d chunk(s) of %s", len(pending), parts.out)
                waited = True
            time.sleep(_POLL_SECONDS)
            continue
        pending.pop(0)
        tally(counts, chunk)
    summary.chunks = len(summary.digests)
    summary.statuses, summary.flags = dict(statuses), dict(flags)
    summary.strongest = strongest
    return summary


def _take_or_score(index: int, digest: str, chunk, parts: Optional[PartedOutput], scorer, options: ScoreOptions,
                   reader, render, track_names: List[str], sink: TextIO, summary: ScoreSummary,
                   discard_on_refusal: bool) -> Optional[Dict]:
    """The counts of chunk ``index``: from its finished part, or by scoring it under its claim;
    None while another live run holds the claim."""
    counts = parts.done(index, digest) if parts is not None else None
    if counts is not None and options.explain_top and "strongest" not in counts:
        counts = None  # a part of an older version: rescored to learn its strongest alleles
    if counts is not None:
        if options.strict and set(counts["statuses"]) - {"ok"}:
            # a part of an earlier run without --strict holds rows with a status: refuse them
            # too (statuses need no model work), naming the record as a fresh chunk would
            _refuse_non_ok(chunk, {(a.record, a.allele): scorer.check(a) for r in chunk for a in r.alleles},
                           reader.label, None)
        summary.resumed_chunks += 1
        return counts
    if parts is None:
        return _score_chunk(chunk, scorer, options, reader, render, track_names, sink, summary, None, None, None)
    with parts.claim(index) as held:
        if not held:
            return None
        again = parts.done(index, digest)  # written by another run since the check above
        if again is not None and not (options.explain_top and "strongest" not in again):
            summary.resumed_chunks += 1
            return again
        return _score_chunk(chunk, scorer, options, reader, render, track_names, sink, summary,
                            parts if discard_on_refusal else None, parts, (index, digest))


def _score_chunk(chunk, scorer, options: ScoreOptions, reader, render, track_names: List[str], sink: TextIO,
                 summary: ScoreSummary, refusal_parts, parts: Optional[PartedOutput], where) -> Dict:
    """Score one chunk; its rows go to its part (``where`` = (index, digest)) or to ``sink``."""
    tasks = {(a.record, a.allele): scorer.check(a) for record in chunk for a in record.alleles}
    scorer.score(list(tasks.values()))
    if options.strict:
        _refuse_non_ok(chunk, tasks, reader.label, refusal_parts)
    text = render(chunk, tasks, track_names)
    counts = {"statuses": dict(Counter(t.status for t in tasks.values())),
              "flags": dict(Counter(f for t in tasks.values() for f in t.flags)),
              "strongest": strongest_alleles(tasks)}
    if parts is not None:
        parts.write(where[0], where[1], text, counts)
    else:
        sink.write(text)
        sink.flush()
    summary.scored_chunks += 1
    return counts


_POLL_SECONDS = 2.0

#: alleles per chunk whose strength a part keeps (so --explain-top works on resumed chunks too).
KEEP_STRONGEST = 100


def _keep_strongest(strongest: List, chunk, counts: Optional[Mapping]) -> None:
    """Merge a chunk's strongest alleles (from its counts) into ``strongest`` (kept sorted, at most
    :data:`KEEP_STRONGEST`: (max |diff|, Allele), strongest first, ties in input order)."""
    if not counts or not counts.get("strongest"):
        return
    alleles = {(a.record, a.allele): a for record in chunk for a in record.alleles}
    strongest.extend((score, alleles[(rec, alt)]) for rec, alt, score in counts["strongest"])
    strongest.sort(key=lambda item: (-item[0], item[1].record, item[1].allele))
    del strongest[KEEP_STRONGEST:]


def strongest_alleles(tasks: Mapping) -> List[List]:
    """A chunk's strongest ``ok`` alleles: ``[record, allele, max |diff| over tracks]``, strongest
    first (ties in input order), at most :data:`KEEP_STRONGEST`."""
    from epiformer_cli.variants.effects import EFFECTS

    diff = EFFECTS.index("diff")
    rows = [[a_rec, a_alt, float(abs(t.result[:, diff]).max())] for (a_rec, a_alt), t in tasks.items()
            if t.status == "ok" and t.result is not None]
    rows.sort(key=lambda row: (-row[2], row[0], row[1]))
    return rows[:KEEP_STRONGEST]


def _explain_top(summary: ScoreSummary, fasta, cons, model, options: ScoreOptions) -> None:
    """``--explain-top N DIR``: explain the N strongest variants (by max |diff| over tracks)."""
    from epiformer_cli.jobs.explain import explain
    from epiformer_cli.options import ExplainOptions

    chosen = [allele for _, allele in summary.strongest[:options.explain_top]]
    if not chosen:
        log.warning("--explain-top: no variant was scored, nothing to explain")
        return
    log.info("explaining the %d strongest variant(s) into %s", len(chosen), options.explain_dir)
    explain(fasta, cons, model, options.explain_dir, variants=chosen,
            options=ExplainOptions(inference=options.inference, method=options.explain_method,
                                   flank=options.explain_flank, no_cons=options.no_cons, force=options.force,
                                   shard="1/1"))  # one process explains them all, whatever the array
    summary.explained = Path(options.explain_dir)


def _report(summary: ScoreSummary, out: Optional[str | Path]) -> None:
    """The closing log lines: a warning when some alleles could not be scored, so that -q
    (pipelines) still hears of it."""
    not_ok = sum(n for status, n in summary.statuses.items() if status != "ok")
    if not_ok:
        log.warning("%s (%d not scored: see the status column; --strict makes them an error)",
                    status_summary(summary.statuses, summary.flags), not_ok)
    else:
        log.info("%s", status_summary(summary.statuses, summary.flags))
    log.debug("scored %d chunk(s) here; took %d from finished parts", summary.scored_chunks, summary.resumed_chunks)
    if summary.resumed_chunks:
        log.info("resumed %d finished chunk(s) from an earlier run", summary.resumed_chunks)
    if out is not None and summary.assembled:
        log.info("wrote %s", out)


def _sidecar(out: Path) -> Path:
    """Where a TSV's provenance goes: ``scores.tsv`` -> ``scores.tsv.options.json``."""
    return out.with_name(out.name + ".options.json")


def _identities(vcf, inputs, motif_db=None) -> Dict[str, Any]:
    ids = inputs.identities()
    ids["vcf"] = _file_id(None if str(vcf) == "-" else Path(vcf)) or "-"
    if motif_db is not None:  # only then: the parts of a run without motifs keep their identity
        ids["motif_db"] = _file_id(motif_db.path)
    return ids


def _motif_scanner(options: ScoreOptions):
    """``--motif-db``: the database read (one line for a bad file) and its scanner; (None, None)
    without it."""
    if not options.motif_db:
        return None, None
    from epiformer_cli.motifs.database import load_motif_db
    from epiformer_cli.motifs.scan import MotifScanner

    database = load_motif_db(options.motif_db)
    scanner = MotifScanner(database.motifs)
    log.info("motifs: %s, scanned around every variant (instances at p < %g)", database.source, scanner.pvalue)
    return database, scanner


def _provenance(vcf, inputs, options: ScoreOptions, track_names: List[str], calibration=None,
                motif_db=None) -> Dict[str, Any]:
    """What a scored output records about how it was made (VCF header line, TSV sidecar)."""
    record = {"epiformer_version": __version__,
              "inputs": {"vcf": str(vcf), "fasta": str(inputs.fasta), "cons": str(inputs.cons) if inputs.cons else None,
                         "model": str(inputs.model)},
              "options": options.to_dict(), "tracks": track_names}
    if calibration is not None:
        null = calibration.null
        record["null"] = {"size": null.size, "seed": null.seed, "file": str(null.path) if null.path else None,
                          "scored_per_track": calibration.sizes()}
    if motif_db is not None:
        from epiformer_cli.motifs.scan import FIMO_EPS, FIMO_PVALUE

        record["motifs"] = {"source": motif_db.source, "pvalue": FIMO_PVALUE, "pseudocount": FIMO_EPS}
    return record


class _Tee:
    """Standard output that also feeds what it writes to a collector (the plots of a piped run)."""

    def __init__(self, sink: TextIO, feed: Callable[[str], None]) -> None:
        self._sink, self._feed = sink, feed

    def write(self, text: str) -> int:
        self._feed(text)
        return self._sink.write(text)

    def flush(self) -> None:
        self._sink.flush()


def _write_plots(collector, calibration, options: ScoreOptions) -> List[Path]:
    """``--plots DIR``: the Q-Q plot, diff against the null and the top variants."""
    from epiformer_cli.variants.calibration_plots import diff_unit, write_calibration_plots

    tracks, top = collector.plot_inputs(calibration.null)
    paths = write_calibration_plots(Path(options.plots), tracks, top, calibration.null.size, calibration.null.seed,
                                    unit=diff_unit(options.score_bins))
    log.info("wrote the calibration plots %s", ", ".join(str(p) for p in paths))
    return paths


def _refuse_non_ok(chunk, tasks, label, discard) -> None:
    """--strict: the first allele whose status is not ``ok`` is an error (dropping parts this run made)."""
    for record in chunk:
        for allele in record.alleles:
            status = tasks[(allele.record, allele.allele)].status
            if status != "ok":
                if discard is not None:
                    discard.discard()
                raise InputFileError(
                    f"{label}: {allele.chrom}:{allele.pos} {allele.ref}>{allele.alt} has status {status} "
                    "(--strict): fix or filter that record, or drop --strict to get a row with its status")


def _scorer(inputs, options: ScoreOptions, source: str):
    """The variant scorer for the opened inputs, and the names of the tracks it scores."""
    from epiformer_cli.device import compute_device
    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.inference.reader import WindowReader
    from epiformer_cli.variants.scoring import VariantScorer

    device = compute_device(options.inference.device, options.inference.precision)
    names = inputs.track_names(options.inference.tracks)
    engine = InferenceEngine.from_options(inputs.loaded.model, options.inference, device=device,
                                          tracks=inputs.track_indices(names))
    scorer = VariantScorer(engine, WindowReader(inputs.genome, inputs.conservation), window_mode=options.window_mode,
                           score_bins=options.score_bins, on_ref_mismatch=options.on_ref_mismatch, fast=options.fast,
                           source=source)
    return scorer, names
