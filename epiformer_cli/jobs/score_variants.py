"""The score-variants job: stream a VCF, score every allele, write TSV or VCF in input order.

Memory stays bounded whatever the VCF's size: records are read ``chunk_size`` at a time; within a
chunk the alleles are grouped by scoring window (so one reference pass serves all of a window's
variants), and the chunk's rows are written, in input order, before the next chunk is read. With
an output file, finished chunks are kept as parts so a killed run resumes, and ``shard`` splits
the chunks between runs (:mod:`epiformer_cli.variants.resume`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO

from epiformer_cli import __version__
from epiformer_cli.errors import EpiformerError, InputFileError, UsageError
from epiformer_cli.io.files import check_output, file_identity

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 5000


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


def select_tracks(available: Sequence[str], wanted: Optional[Sequence[str]]) -> List[int]:
    """Indices of ``wanted`` track names (all when None); unknown names are a usage error."""
    if not wanted:
        return list(range(len(available)))
    names = [w.strip() for item in wanted for w in str(item).split(",") if w.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"--tracks: unknown track(s) {', '.join(unknown)}; the model has {', '.join(available)}")
    return [list(available).index(n) for n in dict.fromkeys(names)]


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
    try:
        return file_identity(path)
    except OSError:  # standard input, a pipe
        return {"path": str(path)}


def score_variants(
    *,
    vcf: str | Path,
    fasta: str | Path,
    model: str | Path,
    conservation: Optional[str | Path] = None,
    out: str | Path = "-",
    out_format: str = "tsv",
    tracks: Optional[Sequence[str]] = None,
    score_bins: int = 5,
    rc_average: bool = True,
    window_mode: str = "grid",
    on_ref_mismatch: str = "skip",
    batch_size: Optional[int] = None,
    device: str = "auto",
    precision: str = "fp32",
    shard: Optional[str] = None,
    chunk_size: int = DEFAULT_CHUNK,
    fast: bool = True,
    strict: bool = False,
    overwrite: bool = True,
    progress: Optional[Callable[[int], None]] = None,
    stdout: Optional[TextIO] = None,
) -> ScoreSummary:
    """Score every allele of ``vcf`` and write one row per allele and track (or an annotated VCF).

    Args:
        vcf: VCF, bgzipped VCF, BCF, or ``-`` for standard input.
        fasta, conservation, model: the genome, its phastCons bigWig (None: zero), the model file.
        out: output file, or ``-`` for standard output (not resumable, no sharding).
        out_format: ``tsv`` or ``vcf``.
        tracks: track names to score (default all).
        score_bins, rc_average, window_mode, on_ref_mismatch: see :class:`VariantScorer`.
        batch_size, device, precision: the inference engine's.
        shard: ``"I/N"``: score only every N-th chunk, starting with chunk I - 1.
        chunk_size: records per chunk (memory and resume granularity).
        fast: the incremental substitution path (False: plain full passes, for comparison).
        strict: any allele whose status is not ``ok`` is an error (InputFileError, naming the first
            such record) instead of a row with that status; no output file is left.
        overwrite: replace an existing ``out`` (the command line passes False unless --force). An
            input is never overwritten.
        progress: called with the number of records after each chunk.
        stdout: where ``-`` writes (default ``sys.stdout``).
    """
    from epiformer_cli.io.chroms import match_chromosomes
    from epiformer_cli.io.genome import Genome
    from epiformer_cli.io.vcf import read_vcf
    from epiformer_cli.variants.output import FORMATS, tsv_header, tsv_rows, vcf_info_definitions, vcf_rows
    from epiformer_cli.variants.resume import PartStore, chunk_digest, parse_shard
    from epiformer_cli.variants.scoring import status_summary

    started = time.perf_counter()
    if out_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {out_format!r}")
    if chunk_size < 1:
        raise UsageError("chunk size must be at least 1")
    shard_index, shard_count = parse_shard(shard)
    to_stdout = str(out) == "-"
    if to_stdout and shard_count > 1:
        raise UsageError("--shard needs --out FILE (shards are assembled into one file)")
    if not to_stdout:
        resuming = Path(out).with_name(Path(out).name + ".parts").is_dir()
        check_output(out, inputs=[vcf, fasta, model, conservation], force=overwrite or resuming)

    # inputs first (cheap, one-line errors), the model last
    genome = Genome(fasta)
    cons = None
    if conservation is not None:
        from epiformer_cli.io.bigwig import BigWig

        # clipped to [0, 1] (with a warning) as the training store clips it: the model never saw more
        cons = BigWig(conservation, "conservation bigWig", value_range=(0.0, 1.0))
        cons.bind(genome.chroms, str(fasta), genome.chrom_sizes)
    reader = read_vcf(vcf)
    store, fresh_parts = None, False
    try:
        if reader.contigs:
            match_chromosomes(reader.contigs, genome.chroms, f"{reader.label} (VCF contigs)", str(fasta))
        loaded, engine, scorer, track_names = _build(
            model, genome, cons, tracks, score_bins, rc_average, window_mode, on_ref_mismatch, batch_size,
            device, precision, fast, reader.label)
        meta = [
            ("epiformer_version", __version__),
            ("epiformer_model", str(model)),
            ("epiformer_tracks", ",".join(track_names)),
            ("epiformer_scoring", f"window_mode={window_mode};score_bins={score_bins};rc_average={rc_average};"
                                  f"precision={precision};on_ref_mismatch={on_ref_mismatch}"),
        ]
        if out_format == "tsv":
            header = tsv_header()
            render = tsv_rows
        else:
            header = reader.header_text(vcf_info_definitions(track_names), meta)
            render = vcf_rows
        if not to_stdout:
            fresh_parts = not Path(out).with_name(Path(out).name + ".parts").exists()
            store = PartStore(Path(out), {
                "version": __version__, "vcf": _file_id(None if str(vcf) == "-" else Path(vcf)) or "-",
                "fasta": _file_id(Path(fasta)), "conservation": _file_id(Path(conservation) if conservation else None),
                "model": _file_id(Path(model)), "format": out_format, "tracks": track_names,
                "score_bins": score_bins, "rc_average": rc_average, "window_mode": window_mode,
                "on_ref_mismatch": on_ref_mismatch, "precision": precision, "chunk_size": chunk_size, "fast": fast,
            })
        sink = stdout if stdout is not None else sys.stdout
        if to_stdout:
            sink.write(header)
        summary = ScoreSummary(tracks=track_names)
        statuses: Counter = Counter()
        flags: Counter = Counter()
        digests: List[str] = []
        for index, chunk in enumerate(_chunks(reader, chunk_size)):
            summary.records += len(chunk)
            digest = chunk_digest(index, [r.line for r in chunk])
            digests.append(digest)
            if index % shard_count != shard_index:
                continue
            counts = store.done(index, digest) if store is not None else None
            if counts is not None:
                if strict and set(counts["statuses"]) - {"ok"}:
                    # a part of an earlier run without --strict holds rows with a status: refuse them
                    # too (statuses need no model work), naming the record as a fresh chunk would
                    _refuse_non_ok(chunk, {(a.record, a.allele): scorer.check(a) for r in chunk for a in r.alleles},
                                   reader.label, None)
                summary.resumed_chunks += 1
            else:
                tasks = {}
                for record in chunk:
                    for allele in record.alleles:
                        tasks[(allele.record, allele.allele)] = scorer.check(allele)
                scorer.score(list(tasks.values()))
                if strict:
                    _refuse_non_ok(chunk, tasks, reader.label, store if store is not None and fresh_parts else None)
                text = render(chunk, tasks, track_names)
                counts = {"statuses": dict(Counter(t.status for t in tasks.values())),
                          "flags": dict(Counter(f for t in tasks.values() for f in t.flags))}
                if store is not None:
                    store.write(index, digest, text, counts)
                else:
                    sink.write(text)
                    sink.flush()
                summary.scored_chunks += 1
            statuses.update(counts["statuses"])
            flags.update(counts["flags"])
            if progress is not None:
                progress(len(chunk))
        summary.chunks = len(digests)
        if to_stdout:
            sink.flush()
        else:
            summary.assembled = store.assemble(header, digests)
        summary.statuses, summary.flags = dict(statuses), dict(flags)
        summary.seconds = time.perf_counter() - started
        # a warning when some alleles could not be scored, so that -q (pipelines) still hears of it
        not_ok = sum(n for status, n in summary.statuses.items() if status != "ok")
        if not_ok:
            log.warning("%s (%d not scored: see the status column; --strict makes them an error)",
                        status_summary(summary.statuses, summary.flags), not_ok)
        else:
            log.info("%s", status_summary(summary.statuses, summary.flags))
        if summary.resumed_chunks:
            log.info("resumed %d finished chunk(s) from an earlier run", summary.resumed_chunks)
        if not to_stdout and summary.assembled:
            log.info("wrote %s", out)
        return summary
    except EpiformerError:
        # a bad record or option: parts made by this run cannot be resumed (the fixed input or
        # option is another run's), and would make that run refuse the folder
        if store is not None and fresh_parts:
            store.discard()
        raise
    finally:
        reader.close()


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


def _build(model, genome, cons, tracks, score_bins, rc_average, window_mode, on_ref_mismatch, batch_size, device,
           precision, fast, source):
    from epiformer_cli.device import resolve_device
    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.model.modelfile import load_model
    from epiformer_cli.variants.scoring import VariantScorer

    dev = resolve_device(device)
    loaded = load_model(model, dev)
    indices = select_tracks(loaded.tracks, tracks)
    engine = InferenceEngine(loaded.model, device=dev, precision=precision, batch_size=batch_size,
                             rc_average=rc_average, shifts=(0,), tracks=indices)
    scorer = VariantScorer(engine, genome, cons, window_mode=window_mode, score_bins=score_bins,
                           on_ref_mismatch=on_ref_mismatch, fast=fast, source=source)
    return loaded, engine, scorer, [loaded.tracks[i] for i in indices]
