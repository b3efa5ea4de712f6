"""``predict``: genome FASTA + conservation + model -> a resumable prediction store -> bigWigs.

Windows step by the model's output span (:class:`~epiformer_cli.data.tiling.WindowGrid`), so the
central 128 bp bins tile every chromosome exactly; ends are padded with N. Work is cut into chunks
of consecutive windows (:mod:`epiformer_cli.data.prediction_store`); each finished chunk is a file,
so a killed run recomputes only missing chunks, shards (``--shard I/N``, SLURM arrays, torchrun
ranks) split the chunks deterministically, and ``export-bigwig`` merges them. Reading, the model and
writing run on three threads, so the device only waits on the model. Coordinates are 0-based,
half-open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.data.prediction_store import MANIFEST, Chunk, PredictionStore, StoreLayout, chunks_of, shard_chunks
from epiformer_cli.data.tiling import WindowGrid
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.chroms import resolve_name
from epiformer_cli.io.files import atomic_write_text, file_identity, sha256_file

log = logging.getLogger(__name__)

#: bases of output per chunk: ~4 Mb -> ~800 chunk files for hg38 whatever the model size.
CHUNK_BP = 1 << 22
_POLL_SECONDS = 5.0


# ---- options ---------------------------------------------------------------------------------
def resolve_shard(spec: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Optional[Tuple[int, int]]:
    """``--shard I/N`` (I is 1-based: 1/3, 2/3, 3/3) -> ``(I - 1, N)``, or None for no sharding.

    Without ``spec``, a SLURM array job (``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``
    set) is shard ``TASK_ID - SLURM_ARRAY_TASK_MIN`` (0-based) of ``TASK_COUNT``. ``--shard 1/1``
    turns sharding off inside an array job.
    """
    environ = os.environ if environ is None else environ
    if spec is None or not str(spec).strip():
        task, count = environ.get("SLURM_ARRAY_TASK_ID"), environ.get("SLURM_ARRAY_TASK_COUNT")
        if not task or not count:
            return None
        try:
            index = int(task) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            n = int(count)
        except ValueError:
            raise UsageError(f"SLURM_ARRAY_TASK_ID={task!r}/SLURM_ARRAY_TASK_COUNT={count!r} are not integers") from None
        if n < 1 or not 0 <= index < n:
            raise UsageError(f"SLURM array task {task} (min {environ.get('SLURM_ARRAY_TASK_MIN', '0')}) is not one of "
                             f"{count} tasks: use a contiguous --array range or pass --shard I/N")
        return (index, n) if n > 1 else None
    text = str(spec).strip()
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard must look like I/N (e.g. 2/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be between 1 and N (shards are numbered 1/N to N/N)")
    return (i - 1, n) if n > 1 else None


def _distributed(environ: Mapping[str, str]) -> Tuple[int, int, Optional[int]]:
    """(rank, world size, local rank) under torchrun; (0, 1, None) otherwise."""
    try:
        world = int(environ.get("WORLD_SIZE", "1") or 1)
        rank = int(environ.get("RANK", "0") or 0)
        local = environ.get("LOCAL_RANK")
        return rank, max(1, world), int(local) if local not in (None, "") else None
    except ValueError:
        return 0, 1, None


def _split_names(values: Optional[Sequence[str]]) -> List[str]:
    out: List[str] = []
    for item in values or []:
        out += [p.strip() for p in str(item).split(",") if p.strip()]
    return out


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
    names = list(chrom_sizes)
    by_chrom: Dict[str, List[Tuple[int, int]]] = {}
    resolved: Dict[str, Optional[str]] = {}
    for chrom, start, end in raw:
        if chrom not in resolved:
            resolved[chrom] = resolve_name(chrom, names)
        name = resolved[chrom]
        if name is None:
            raise InputFileError(f"{path}: chromosome {chrom!r} is not in the FASTA (which has "
                                 f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): "
                                 "is the BED for another assembly?")
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
    *,
    fasta: Path,
    cons: Optional[Path],
    model: Path,
    out: Optional[Path] = None,
    store: Optional[Path] = None,
    regions: Optional[Path] = None,
    chroms: Optional[Sequence[str]] = None,
    tracks: Optional[Sequence[str]] = None,
    batch_size: Optional[int] = None,
    device: str = "auto",
    precision: str = "fp32",
    rc_average: bool = True,
    shifts: Sequence[int] | str = (0,),
    shard: Optional[Tuple[int, int]] = None,
    chunk_windows: Optional[int] = None,
    store_dtype: str = "float32",
    window: Optional[int] = None,
    force: bool = False,
    progress: Optional[Callable[..., None]] = None,
    environ: Optional[Mapping[str, str]] = None,
    fail_after_chunks: Optional[int] = None,
) -> PredictSummary:
    """Predict every 128 bp bin of a genome (or of some regions or chromosomes) into a store, then
    (unless sharded) write one bigWig per track.

    Args:
        fasta, cons: genome FASTA and conservation bigWig (None only for a model without
            conservation).
        model: model file from ``train``.
        out: the bigWig to write (one track) or the name the per-track files derive from
            (``pred.bw`` -> ``pred.<track>.bw``). Required unless ``shard`` is set.
        store: the prediction store folder (default ``.<out name>.store`` beside ``out``).
        regions: BED of regions: only bins overlapping them are predicted and written.
        chroms: chromosome names to predict (default all in the FASTA).
        tracks: model track names to predict (default all).
        batch_size: windows per model call (default per device).
        device, precision: see :mod:`epiformer_cli.device`.
        rc_average, shifts: test-time averaging (see :class:`~epiformer_cli.inference.InferenceEngine`).
        shard: ``(index, count)``, 0-based index: compute only that share of the chunks and write
            only the store (see :func:`resolve_shard`).
        chunk_windows: windows per store chunk (default ~4 Mb of output).
        store_dtype: ``float32`` (exact) or ``float16`` (half the disk).
        window: the input length the caller expects the model to take (refused if it differs).
        force: discard a store made with other inputs or options.
        progress: called as ``progress(n_windows, total=...)``.
        environ: environment for SLURM/torchrun detection (default ``os.environ``).
        fail_after_chunks: testing aid: raise after writing this many chunks (simulates a kill).
    """
    started = time.perf_counter()
    environ = os.environ if environ is None else environ
    from epiformer_cli.device import check_precision
    from epiformer_cli.inference.engine import parse_shifts
    from epiformer_cli.io.genome import Genome
    from epiformer_cli.jobs.export import check_writable, output_paths, select_tracks

    precision = check_precision(precision)
    if store_dtype not in ("float32", "float16"):
        raise UsageError(f"--store-dtype must be float32 or float16, not {store_dtype!r}")
    if chunk_windows is not None and chunk_windows < 1:
        raise UsageError(f"--chunk-windows must be at least 1, got {chunk_windows}")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    rank, world, local_rank = _distributed(environ)
    writes_bigwigs = shard is None and rank == 0
    if out is None and (writes_bigwigs or store is None):
        raise UsageError("missing option --out (the bigWig to write; with --shard, --store alone will do)")
    out = Path(out) if out is not None else None
    store = Path(store) if store is not None else out.with_name(f".{out.name}.store")

    # ---- inputs, checked before any work --------------------------------------------------
    # Existing bigWigs are replaced only with --force, or by a re-run of the command whose store
    # made them (the store's fingerprint then guarantees the same inputs and options).
    inputs = [fasta, cons, model, regions]
    replace_outputs = force or (store / MANIFEST).is_file()
    if writes_bigwigs:
        check_writable([out], inputs, force=True)  # the folder; per-track names once the model is read
    genome = Genome(fasta)
    from epiformer_cli.model.modelfile import load_model

    loaded = load_model(model, "cpu")
    config = loaded.config
    if window is not None and window != config.seq_len:
        raise UsageError(f"{model} takes {config.seq_len:,} bp windows, not --window {window:,}: "
                         "drop --window or use a model trained for that length")
    grid = WindowGrid.from_config(config)
    shifts = parse_shifts(shifts, grid.bin_bp)
    names = select_tracks(loaded.tracks, tracks, f"model {model}")
    if writes_bigwigs:
        check_writable(list(output_paths(out, names).values()), inputs, force=replace_outputs)
    sizes = dict(genome.chrom_sizes)
    use = list(sizes)
    if chroms:
        wanted = []
        for name in _split_names(chroms):
            found = resolve_name(name, use)
            if found is None:
                raise UsageError(f"--chroms: chromosome {name!r} is not in {fasta} (it has "
                                 f"{', '.join(use[:6])}{', ...' if len(use) > 6 else ''})")
            wanted.append(found)
        use = [c for c in use if c in set(wanted)]
    region_map = read_regions(Path(regions), sizes) if regions else None
    if region_map is not None:
        use = [c for c in use if c in region_map]
        if not use:
            raise UsageError(f"{regions}: no region lies on the chosen chromosomes")

    compute_device = _compute_device(device, precision, world, local_rank)
    cons_file = None
    if config.conservation == "none":
        if cons is not None:
            log.info("%s does not use conservation: ignoring %s", model, cons)
        cons = None
    else:
        if cons is None:
            raise UsageError(f"{model} uses conservation ({config.conservation!r} mode): pass --cons "
                             "(or set EPIFORMER_CONS)")
        from epiformer_cli.io.bigwig import BigWig

        # clipped to [0, 1] (with a warning) as the training store clips it: the model never saw more
        cons_file = BigWig(cons, "conservation bigWig", value_range=(0.0, 1.0))
        cmap = cons_file.bind(genome.chroms, str(fasta), genome.chrom_sizes)
        lacking = [c for c in genome.chroms if c not in cmap]
        if lacking:
            log.warning("%s has no conservation for %d chromosome(s) (%s): read as 0", cons, len(lacking),
                        ", ".join(lacking[:5]))

    # ---- store -----------------------------------------------------------------------------
    if chunk_windows is None:
        chunk_windows = max(1, round(CHUNK_BP / grid.out_bp))
    skeleton = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp, int(chunk_windows), names, store_dtype, [])
    plans = plan_chunks(skeleton, grid, use, region_map)
    layout = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp, int(chunk_windows), names, store_dtype,
                         [(p.chunk.chrom, p.chunk.index) for p in plans])
    region_digest = None
    if region_map is not None:
        text = "".join(f"{c}\t{s}\t{e}\n" for c in use for s, e in region_map[c])
        region_digest = hashlib.sha256(text.encode()).hexdigest()
    fingerprint = {
        "model_sha256": sha256_file(Path(model)),
        "model_tracks": list(loaded.tracks),
        "fasta": file_identity(Path(fasta)),
        "cons": file_identity(Path(cons)) if cons is not None else None,
        "conservation_mode": config.conservation,
        "rc_average": bool(rc_average),
        "shifts": list(shifts),
        "precision": precision,
        "tracks": names,
        "chroms": use,
        "regions_sha256": region_digest,
    }
    pstore = PredictionStore.create(store, layout, fingerprint, force=force)
    if rank == 0 and shard is None:  # the resolved options, next to the output they made
        atomic_write_text(pstore.root / "predict-options.json", json.dumps({
            "epiformer_version": __version__, "fasta": str(fasta), "cons": str(cons) if cons else None,
            "model": str(model), "regions": str(regions) if regions else None, "out": str(out),
            "device": device, "precision": precision, "rc_average": bool(rc_average), "shifts": list(shifts),
            "tracks": names, "batch_size": batch_size, "chunk_windows": int(chunk_windows),
        }, indent=1) + "\n")

    parts = (shard[1] if shard else 1) * world
    part = (shard[0] if shard else 0) * world + rank
    mine = shard_chunks(plans, part, parts)
    todo = [p for p in mine if not pstore.is_done(p.chunk)]
    summary = PredictSummary(store=pstore.root, chunks_total=len(mine), chunks_done_before=len(mine) - len(todo),
                             shard=shard)
    if shard:
        pstore.record_shard(shard[0], shard[1], "started")

    # ---- compute ---------------------------------------------------------------------------
    if todo:
        from epiformer_cli.inference.engine import InferenceEngine

        engine = InferenceEngine(loaded.model, device=compute_device, precision=precision, batch_size=batch_size,
                                 rc_average=rc_average, shifts=shifts,
                                 tracks=[loaded.tracks.index(n) for n in names])
        summary.device = str(engine.device)
        log.info("predicting %d window(s) in %d chunk(s)%s on %s (%s, batch %d, %d pass(es) a window: "
                 "reverse complement %s, shifts %s); store %s",
                 sum(len(p.windows) for p in todo), len(todo),
                 f" (part {part + 1}/{parts})" if parts > 1 else "", engine.device, precision,
                 engine.batch_size, engine.forward_passes_per_window, "on" if rc_average else "off",
                 ",".join(map(str, shifts)), pstore.root)
        from epiformer_cli.inference.reader import WindowReader

        reader = WindowReader(genome, cons_file, engine.context)
        summary.windows_computed = run_chunks(engine, reader, pstore, todo, progress, fail_after_chunks)
        summary.chunks_computed = len(todo)
        summary.model_busy = engine.stats.busy_fraction
        summary.compute_seconds = engine.stats.model_s + engine.stats.input_wait_s + engine.stats.output_wait_s
        log.debug("model busy %.1f%% of the loop (%.1f s model, %.1f s waiting for input, %.1f s for output)",
                  100 * engine.stats.busy_fraction, engine.stats.model_s, engine.stats.input_wait_s,
                  engine.stats.output_wait_s)
    elif progress:
        progress(0, total=0)
    if shard:
        pstore.record_shard(shard[0], shard[1], "done")

    # ---- bigWigs ---------------------------------------------------------------------------
    if writes_bigwigs:
        if world > 1:
            _wait_for_all(pstore)
        from epiformer_cli.jobs.export import export_predictions

        summary.outputs = export_predictions(pstore, out).outputs
    summary.seconds = time.perf_counter() - started
    return summary


def _compute_device(spec: str, precision: str, world: int, local_rank: Optional[int]):
    """The torch device, resolved before any work (a bad --device leaves nothing behind); under
    torchrun, ``auto``/``cuda`` mean this rank's own GPU."""
    import torch

    from epiformer_cli.device import resolve_device
    from epiformer_cli.errors import DeviceError

    if local_rank is not None and world > 1 and spec in ("auto", "cuda") and torch.cuda.is_available():
        spec = f"cuda:{local_rank % torch.cuda.device_count()}"
    device = resolve_device(spec)
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("--precision fp16 is meant for GPUs: use bf16 (or fp32) on the CPU")
    return device


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


def run_chunks(engine, reader, store: PredictionStore, plans: Sequence[ChunkPlan],
               progress: Optional[Callable[..., None]] = None, fail_after_chunks: Optional[int] = None) -> int:
    """Compute ``plans`` into ``store``: reading on a background thread, the model on this one,
    chunk files written on another. Batches run across chunk boundaries. Returns windows computed.
    """
    from epiformer_cli.inference.pipeline import BackgroundWriter
    from epiformer_cli.inference.reader import read_batches

    seq_len, out_bins = engine.config.seq_len, engine.grid.out_bins
    n_tracks = len(engine.tracks)
    total = int(sum(len(p.windows) for p in plans))
    if progress:
        progress(0, total=total)

    def groups():
        for pi, plan in enumerate(plans):
            yield pi, plan.chunk.chrom, [engine.grid.window(plan.chunk.chrom, int(w)).start for w in plan.windows]

    # read a batch at a time (not a chunk): memory bounded by the batch, whatever the chromosome
    batches = read_batches(reader, groups(), engine.batch_size, seq_len)

    buffers: Dict[int, np.ndarray] = {}
    remaining = {pi: len(p.windows) for pi, p in enumerate(plans)}
    written = [0]

    def sink(item) -> None:
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
                store.write(chunk, buf)
                del buffers[pi]
                written[0] += 1
                if fail_after_chunks is not None and written[0] >= fail_after_chunks:
                    raise RuntimeError(f"simulated failure after {written[0]} chunk(s)")
            if progress:
                progress(take)

    writer = BackgroundWriter(sink)
    try:
        for meta, preds in engine.predict_stream(batches):
            t0 = time.perf_counter()
            writer.submit((meta, preds))
            engine.stats.output_wait_s += time.perf_counter() - t0
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return total
