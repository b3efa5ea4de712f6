"""``predict``: genome FASTA + conservation + model -> a resumable prediction store -> bigWigs.

Windows step by the model's output span (:class:`~epiformer_cli.data.tiling.WindowGrid`), so the
central 128 bp bins tile every chromosome exactly; ends are padded with N. Work is cut into chunks
of consecutive windows (:mod:`epiformer_cli.data.prediction_store`, kept by the resumable-run layer
:mod:`epiformer_cli.runs`); each finished chunk is a file, so a killed run recomputes only
missing chunks, shards (``--shard I/N``, SLURM arrays, torchrun ranks) split the chunks
deterministically, and ``export-bigwig`` merges them. Reading, the model and writing run on three
threads, so the device only waits on the model. Coordinates are 0-based, half-open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.data.prediction_store import MANIFEST, Chunk, PredictionStore, StoreLayout, chunks_of
from epiformer_cli.data.tiling import WindowGrid
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.chroms import NameResolver, resolve_names
from epiformer_cli.options import PredictOptions
from epiformer_cli.progress import Progress
from epiformer_cli.runs import Shard, place, require_room, resolve_shard

log = logging.getLogger(__name__)

#: bases of output per chunk: ~4 Mb -> ~800 chunk files for hg38 whatever the model size.
CHUNK_BP = 1 << 22
_POLL_SECONDS = 5.0

__all__ = ["PredictOptions", "PredictSummary", "predict_genome", "resolve_shard"]


# ---- the plan --------------------------------------------------------------------------------
@dataclass
class ChunkPlan:
    """A chunk to compute: which of its windows (indices in the chromosome's tiling) and, with
    --regions, which of its bins to keep (others are stored as NaN = absent)."""

    chunk: Chunk
    windows: np.ndarray
    keep: Optional[np.ndarray] = None  # (n_bins,) bool, None = all


def read_regions(path: Path, chrom_sizes: Dict[str, int]) -> Dict[str, List[Tuple[int, int]]]:
    """A regions BED -> merged intervals per (FASTA-named) chromosome, 0-based half-open.

    Refuses a chromosome the FASTA lacks and an end past the chromosome end (a BED of another
    assembly), naming the line.
    """
    from epiformer_cli.io.bed import merge_intervals, read_bed

    raw = read_bed(path)  # validates the lines themselves
    resolve = NameResolver(chrom_sizes)
    by_chrom: Dict[str, List[Tuple[int, int]]] = {}
    for chrom, start, end in raw:
        name = resolve(chrom)
        if name is None:
            raise InputFileError(f"{path}: chromosome {chrom!r} is not in the FASTA (which has "
                                 f"{resolve.preview}): is the BED for another assembly?")
        if end > chrom_sizes[name]:
            raise InputFileError(f"{path}: region {chrom}:{start}-{end} ends past the end of {name} "
                                 f"({chrom_sizes[name]:,} bp): is the BED for another assembly?")
        if end > start:
            by_chrom.setdefault(name, []).append((start, end))
    if not by_chrom:
        raise UsageError(f"{path}: no non-empty regions to predict")
    return {c: merge_intervals(sorted(v)) for c, v in by_chrom.items()}


def plan_chunks(layout: StoreLayout, grid: WindowGrid, chroms: Sequence[str],
                regions: Optional[Dict[str, List[Tuple[int, int]]]]) -> List[ChunkPlan]:
    """Every chunk to compute, in FASTA order, with the windows (and bins) it needs."""
    plans: List[ChunkPlan] = []
    bin_bp, out_bins = grid.bin_bp, grid.out_bins
    for chrom, index in chunks_of(layout.chrom_sizes, grid.out_bp, layout.chunk_windows, chroms):
        chunk = layout.chunk(chrom, index)
        windows = np.arange(chunk.first_window, chunk.first_window + chunk.n_windows, dtype=np.int64)
        if regions is None:
            plans.append(ChunkPlan(chunk, windows))
            continue
        keep = np.zeros(chunk.n_bins, dtype=bool)
        for start, end in regions.get(chrom, ()):
            if end <= chunk.start or start >= chunk.end:
                continue
            b0 = max(start, chunk.start) // bin_bp - chunk.start // bin_bp
            b1 = -(-min(end, chunk.end) // bin_bp) - chunk.start // bin_bp
            keep[b0:b1] = True
        if keep.any():
            needed = np.unique(np.flatnonzero(keep) // out_bins) + chunk.first_window
            plans.append(ChunkPlan(chunk, needed, keep))
    return plans


# ---- the run ---------------------------------------------------------------------------------
@dataclass
class PredictSummary:
    """What ``predict_genome`` did."""

    store: Path
    outputs: Dict[str, Path] = field(default_factory=dict)
    chunks_total: int = 0
    chunks_done_before: int = 0
    chunks_computed: int = 0
    windows_computed: int = 0
    seconds: float = 0.0
    shard: Optional[Tuple[int, int]] = None
    device: str = ""
    model_busy: float = 0.0  # fraction of the compute loop the model was running (not waiting for I/O)
    compute_seconds: float = 0.0

    def describe(self) -> str:
        rate = self.windows_computed / self.seconds if self.seconds > 0 else 0.0
        if self.windows_computed:
            text = (f"{self.windows_computed} windows in {self.seconds:.1f} s ({rate:.1f} windows/s on {self.device}); "
                    f"{self.chunks_computed} chunk(s) computed, {self.chunks_done_before} already done; "
                    f"model busy {self.model_busy:.0%} of the time")
        else:
            text = f"nothing to compute: all {self.chunks_total} chunk(s) were already done"
        text += f"; store {self.store}"
        if self.shard:
            text += (f"; shard {self.shard[0] + 1}/{self.shard[1]} finished: when every shard has, run "
                     f"`epiformer export-bigwig {self.store} --out pred.bw`")
        if self.outputs:
            text += "; wrote " + ", ".join(str(p) for p in self.outputs.values())
        return text


def predict_genome(
    fasta: str | Path,
    cons: Optional[str | Path],
    model: str | Path,
    out: Optional[str | Path] = None,
    *,
    store: Optional[str | Path] = None,
    regions: Optional[str | Path] = None,
    options: PredictOptions = PredictOptions(),
    progress: Optional[Progress] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> PredictSummary:
    """Predict every 128 bp bin of a genome (or of some regions or chromosomes) into a store, then
    (unless sharded) write one bigWig per track.

    Args:
        fasta, cons, model: genome FASTA, conservation bigWig and model file, opened and checked
            together by :func:`~epiformer_cli.inference.inputs.open_inputs` (``cons`` may be None only
            for a model without conservation, or with ``options.no_cons``).
        out: the bigWig to write (one track) or the name the per-track files derive from
            (``pred.bw`` -> ``pred.<track>.bw``). Required unless sharded with a ``store``.
        store: the prediction store folder (default ``.<out name>.store`` beside ``out``).
        regions: BED of regions: only bins overlapping them are predicted and written.
        options: :class:`~epiformer_cli.options.PredictOptions` (tracks, averaging, precision,
            shard, chunking, ...).
        progress: called as ``progress(n_windows, total=...)``.
        environ: environment for SLURM/torchrun detection (default ``os.environ``).
    """
    from epiformer_cli.device import compute_device
    from epiformer_cli.jobs.export import check_writable, export_predictions, output_paths
    from epiformer_cli.inference.inputs import input_paths, open_inputs
    from epiformer_cli.runs import check_output_dir

    started = time.perf_counter()
    environ = os.environ if environ is None else environ
    placement = place(options.shard, environ)
    shard, torchrun = placement.shard, placement.torchrun
    writes_bigwigs = placement.finishes
    if out is None and (writes_bigwigs or store is None):
        raise UsageError("missing option --out: name the bigWig to write; --store alone only fills a shard's part "
                         "(--shard I/N, or a SLURM array task), merged afterwards with "
                         "`epiformer export-bigwig STORE --out pred.bw`")
    out = Path(out) if out is not None else None
    store = Path(store) if store is not None else out.with_name(f".{out.name}.store")

    # ---- inputs, checked before any work --------------------------------------------------
    # Existing bigWigs are replaced only with --force, or by a re-run of the command whose store
    # made them (the store's fingerprint then guarantees the same inputs and options).
    files = input_paths(fasta, cons, model, ("--regions", regions))
    if writes_bigwigs:
        check_writable([out], files, force=True)  # the folder; per-track names once the model is read
    check_output_dir(store, inputs=files, option="--store")
    with open_inputs(fasta, cons, model, no_cons=options.no_cons, window=options.window) as inputs:
        names = inputs.track_names(options.inference.tracks)
        if writes_bigwigs:
            check_writable(list(output_paths(out, names).values()), files,
                           force=options.force or (store / MANIFEST).is_file())
        grid = WindowGrid.from_config(inputs.config)
        sizes = dict(inputs.genome.chrom_sizes)
        use = _chosen_chroms(options.chroms, list(sizes), inputs.fasta)
        region_map = read_regions(Path(regions), sizes) if regions else None
        if region_map is not None:
            use = [c for c in use if c in region_map]
            if not use:
                raise UsageError(f"{regions}: no region lies on the chosen chromosomes")
        device = compute_device(options.inference.device, options.inference.precision, torchrun.local_rank,
                                torchrun.world)

        # ---- store -----------------------------------------------------------------------------
        chunk_windows = options.chunk_windows or max(1, round(CHUNK_BP / grid.out_bp))
        skeleton = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp, chunk_windows, names,
                               options.store_dtype, [])
        plans = plan_chunks(skeleton, grid, use, region_map)
        from epiformer_cli.inference.engine import default_batch_size, inference_memory_bytes
        from epiformer_cli.runs.space import require_memory

        # memory, before any work: the model's batches, and the store chunks being filled and
        # written (up to two filling, one written with its converted copy: 4 chunks' bins)
        batch = options.inference.batch_size or default_batch_size(inputs.config, device)
        require_memory(inference_memory_bytes(inputs.config, batch, len(names),
                                              context=max(abs(s) for s in options.inference.shifts),
                                              precision=options.inference.precision, device_type=device.type,
                                              held_bins=4 * max((p.chunk.n_bins for p in plans), default=0)),
                       f"predicting {grid.window_bp:,} bp windows {batch} at a time",
                       "lower --batch-size (or --chunk-windows)")
        layout = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp, chunk_windows, names,
                             options.store_dtype, [(p.chunk.chrom, p.chunk.index) for p in plans])
        fingerprint = {"inputs": inputs.identities(), "options": options.fingerprint(),
                       "chroms": use, "regions_sha256": _regions_digest(region_map, use)}
        pstore = PredictionStore.create(store, layout, fingerprint, force=options.force)
        if placement.finishes:  # the resolved options, next to the output they made
            pstore.write_options({
                "epiformer_version": __version__,
                "inputs": {"fasta": str(fasta), "cons": str(inputs.cons) if inputs.cons else None, "model": str(model),
                           "regions": str(regions) if regions else None, "out": str(out)},
                "options": options.to_dict(), "tracks": names, "chunk_windows": chunk_windows,
            })

        part = placement.part
        mine = part.take(plans)
        pstore.drop_damaged([p.chunk for p in mine])  # checked on resume: a damaged chunk is computed again
        todo = [p for p in mine if not pstore.is_done(p.chunk)]
        summary = PredictSummary(store=pstore.root, chunks_total=len(mine), chunks_done_before=len(mine) - len(todo),
                                 shard=None if shard.whole else (shard.index, shard.count))
        if shard.source == "SLURM array":
            log.info("SLURM array task: computing shard %s of the chunks (--shard 1/1 computes them all)", shard.label)
        pstore.run.record_shard(shard, "started")
        _check_space(pstore, todo, plans, out if writes_bigwigs else None)

        # ---- compute ---------------------------------------------------------------------------
        if todo:
            _compute(inputs, options, device, names, pstore, todo, part, progress, summary)
        elif progress:
            progress(0, total=0)
        pstore.run.record_shard(shard, "done")

    # ---- bigWigs ---------------------------------------------------------------------------
    if writes_bigwigs:
        if torchrun.active:
            _wait_for_all(pstore)
        # one export at a time: a concurrent identical run waits, then writes the same bytes
        with pstore.run.lock("export.lock", wait=True):
            summary.outputs = export_predictions(pstore, out).outputs
    summary.seconds = time.perf_counter() - started
    return summary


def _chosen_chroms(chroms: Optional[Sequence[str]], available: List[str], fasta: Path) -> List[str]:
    """``--chroms`` resolved against the FASTA's names (aliases allowed), in FASTA order; all if None."""
    if not chroms:
        return list(available)
    wanted = set(resolve_names(chroms, available, "--chroms", str(fasta)))
    return [c for c in available if c in wanted]


def _regions_digest(region_map: Optional[Dict[str, List[Tuple[int, int]]]], chroms: Sequence[str]) -> Optional[str]:
    if region_map is None:
        return None
    text = "".join(f"{c}\t{s}\t{e}\n" for c in chroms for s, e in region_map[c])
    return hashlib.sha256(text.encode()).hexdigest()


def _compute(inputs, options: PredictOptions, device, names: List[str], pstore: PredictionStore,
             todo: List["ChunkPlan"], part: Shard, progress, summary: PredictSummary) -> None:
    """Run the model over the chunks ``todo`` into the store, filling the summary's counters."""
    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.inference.reader import WindowReader

    engine = InferenceEngine.from_options(inputs.loaded.model, options.inference, device=device,
                                          tracks=inputs.track_indices(names))
    summary.device = str(engine.device)
    opts = options.inference
    log.info("predicting %d window(s) in %d chunk(s)%s on %s (%s, batch %d, %d pass(es) a window: "
             "reverse complement %s, shifts %s); store %s",
             sum(len(p.windows) for p in todo), len(todo), "" if part.whole else f" (part {part.label})",
             engine.device, opts.precision, engine.batch_size, engine.forward_passes_per_window,
             "on" if opts.rc_average else "off", ",".join(map(str, engine.shifts)), pstore.root)
    reader = WindowReader(inputs.genome, inputs.conservation, engine.context)
    # Each chunk is claimed before it is computed, so a second run on the same store (the same
    # command started twice, two array tasks given the same shard) computes other chunks, then
    # waits for the ones this run holds, instead of computing everything again.
    with pstore.run.claims() as claims:
        def claim(plan: ChunkPlan) -> bool:
            if not claims.take(pstore.piece(plan.chunk)):
                return False
            if pstore.is_done(plan.chunk):  # finished by another run since the plan was made
                claims.release(pstore.piece(plan.chunk))
                return False
            return True

        written = [0]

        def sink(chunk: Chunk, values: np.ndarray) -> None:
            pstore.write(chunk, values)
            claims.release(pstore.piece(chunk))
            written[0] += 1

        computed, pending = 0, list(todo)
        while pending:
            done_here = run_chunks(engine, reader, sink, pending, progress, claim=claim)
            computed += done_here
            by_name = {pstore.piece(p.chunk): p for p in pending}
            left = claims.wait(list(by_name), lambda name: pstore.is_done(by_name[name].chunk),
                               poll=_POLL_SECONDS, what="chunks")
            pending = [by_name[name] for name in left]
        summary.windows_computed = computed
    summary.chunks_computed = written[0]
    summary.chunks_done_before += len(todo) - written[0]  # computed by a concurrent run
    stats = engine.stats
    summary.model_busy = stats.busy_fraction
    summary.compute_seconds = stats.model_s + stats.input_wait_s + stats.output_wait_s
    log.debug("model busy %.1f%% of the loop (%.1f s model, %.1f s waiting for input, %.1f s for output)",
              100 * stats.busy_fraction, stats.model_s, stats.input_wait_s, stats.output_wait_s)


def _check_space(pstore: PredictionStore, todo: Sequence[ChunkPlan], plans: Sequence[ChunkPlan],
                 out: Optional[Path]) -> None:
    """Refuse before any model work when the store's missing chunks (exact sizes) and, when this
    process exports, the bigWigs (a low estimate: 2 bytes a predicted bin, below the 2.5 of
    constant values) cannot fit."""
    from epiformer_cli.runs import TRAILER_SIZE

    itemsize = np.dtype(pstore.layout.dtype).itemsize
    n_tracks = len(pstore.tracks)
    sizes = [n_tracks * p.chunk.n_bins * itemsize + 128 + TRAILER_SIZE for p in todo]
    require_room(pstore.root, sizes, f"the prediction store {pstore.root}")
    if out is not None:
        bins = sum(int(p.keep.sum()) if p.keep is not None else p.chunk.n_bins for p in plans)
        require_room(out.parent, [bins * 2] * n_tracks + sizes, f"predict's bigWigs and store ({out})")


def _wait_for_all(store: PredictionStore) -> None:
    """Rank 0 under torchrun: wait for the other ranks' chunk files (polling the store)."""
    last_log = 0.0
    while True:
        missing = store.missing()
        if not missing:
            return
        if time.monotonic() - last_log > 60:
            log.info("waiting for other ranks: %d chunk(s) to go", len(missing))
            last_log = time.monotonic()
        time.sleep(_POLL_SECONDS)


def run_chunks(engine, reader, sink: Callable[[Chunk, np.ndarray], None], plans: Sequence[ChunkPlan],
               progress: Optional[Progress] = None,
               claim: Optional[Callable[[ChunkPlan], bool]] = None) -> int:
    """Compute ``plans``, handing each finished chunk's (tracks, n_bins) float32 predictions (NaN
    for bins not requested) to ``sink(chunk, values)``: reading on a background thread, the model on
    this one, ``sink`` on another. Batches run across chunk boundaries. Returns windows computed.

    ``predict`` passes the store's ``write`` (a chunk file each); the notebook API keeps arrays.
    ``claim(plan)``, asked just before a chunk is read, may refuse it (another run is computing it):
    the chunk is then skipped and counted as progress.
    """
    from epiformer_cli.inference.pipeline import BackgroundWriter
    from epiformer_cli.inference.reader import read_batches

    seq_len, out_bins = engine.config.seq_len, engine.grid.out_bins
    n_tracks = len(engine.tracks)
    total = int(sum(len(p.windows) for p in plans))
    if progress:
        progress(0, total=total)

    skipped = [0]

    def groups():
        for pi, plan in enumerate(plans):
            if claim is not None and not claim(plan):
                skipped[0] += len(plan.windows)
                if progress:
                    progress(len(plan.windows))
                continue
            yield pi, plan.chunk.chrom, [engine.grid.window(plan.chunk.chrom, int(w)).start for w in plan.windows]

    # read a batch at a time (not a chunk): memory bounded by the batch, whatever the chromosome
    batches = read_batches(reader, groups(), engine.batch_size, seq_len)

    buffers: Dict[int, np.ndarray] = {}
    remaining = {pi: len(p.windows) for pi, p in enumerate(plans)}

    def assemble(item) -> None:
        meta, preds = item
        row = 0
        for pi, pos, take in meta:
            plan = plans[pi]
            chunk = plan.chunk
            buf = buffers.get(pi)
            if buf is None:
                buf = buffers[pi] = np.full((n_tracks, chunk.n_bins), np.nan, dtype=np.float32)
            for j in range(take):
                b0 = int(plan.windows[pos + j] - chunk.first_window) * out_bins
                b1 = min(b0 + out_bins, chunk.n_bins)
                buf[:, b0:b1] = preds[row, :, : b1 - b0]
                row += 1
            remaining[pi] -= take
            if remaining[pi] == 0:
                if plan.keep is not None:
                    buf[:, ~plan.keep] = np.nan
                sink(chunk, buf)
                del buffers[pi]
            if progress:
                progress(take)

    writer = BackgroundWriter(assemble)
    try:
        for meta, preds in engine.predict_stream(batches):
            t0 = time.perf_counter()
            writer.submit((meta, preds))
            engine.stats.output_wait_s += time.perf_counter() - t0
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return total - skipped[0]
