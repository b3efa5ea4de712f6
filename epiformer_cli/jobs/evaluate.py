"""``evaluate``: how well a model predicts observed tracks on held-out chromosomes.

The observed tracks come from one of two places:

* ``--data STORE``, a store made by ``prepare``: the store's own windows of the evaluated
  chromosomes (its test split by default) are predicted from the store's own sequence and
  conservation and compared with its normalised targets, cropped as the model crops them. These are
  the windows, inputs and targets ``train`` scores, so the per-track Pearson r is ``train``'s test
  r (the two differ only by float32 rounding: ``train`` scores with the training network, evaluate
  with the inference form every command runs).
* ``--targets SHEET``, bigWigs in a targets sheet (as ``prepare`` reads it), e.g. for an imported
  published model: each chromosome is tiled by the model's windows as ``predict`` tiles it (every
  128 bp bin once), inputs read from ``--fasta``/``--cons`` and targets binned and normalised as
  ``prepare`` normalises them: ``max(min(bin_stat * scale, clip), 0)``.

Predictions go through the inference engine ``predict`` uses (:mod:`epiformer_cli.inference`;
with ``--targets``, ``predict``'s own chunked loop, :func:`~epiformer_cli.jobs.predict.run_chunks`).
The numbers are :func:`~epiformer_cli.evaluate.score.score_bins`'. Written into ``--out``:
``metrics.tsv`` (one row per track and a ``mean`` row), ``track_correlation.tsv`` (the
predicted-vs-observed matrix of tracks), ``heatmap.png``, ``scatter.png``, ``loci.png``,
``report.html`` and ``evaluate.json`` (what was read and found; written last, the folder's mark of a
finished run).

Memory: every evaluated bin's predictions and targets, 8 bytes per bin and track plus 12 per bin:
hg38's default held-out chromosomes (chr8 + chr9, 2.3 M bins) take about 0.4 GB for 18 tracks.
Coordinates are 0-based, half-open.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.options import EvaluateOptions, select_tracks
from epiformer_cli.progress import Progress

log = logging.getLogger(__name__)

PROVENANCE = "evaluate.json"
METRICS = "metrics.tsv"
MATRIX = "track_correlation.tsv"
FIGURES = {"heatmap": "heatmap.png", "scatter": "scatter.png", "loci": "loci.png"}
REPORT = "report.html"
#: every name evaluate writes (an --out holding only these is a folder of ours)
OURS = (METRICS, MATRIX, REPORT, PROVENANCE, *FIGURES.values())

__all__ = ["EvaluateOptions", "EvaluateSummary", "evaluate_model"]


@dataclass
class EvaluateSummary:
    """What :func:`evaluate_model` did.

    Attributes:
        out: the output folder; files: the files written into it.
        tracks: the tracks scored (the model's, in its order, that the observed tracks have);
        skipped: the model's tracks without observed data.
        chroms: the chromosomes evaluated; windows: model windows predicted.
        scores: every number (:class:`~epiformer_cli.evaluate.score.Scores`).
        predict_seconds, metrics_seconds, seconds: time predicting (the model and its input and
        target reads), computing the metrics, and in all (with figures and report).
    """

    out: Path
    tracks: List[str]
    skipped: List[str] = field(default_factory=list)
    chroms: List[str] = field(default_factory=list)
    windows: int = 0
    scores: Any = None
    files: List[str] = field(default_factory=list)
    predict_seconds: float = 0.0
    metrics_seconds: float = 0.0
    seconds: float = 0.0

    def rows(self) -> List[Dict[str, Any]]:
        """metrics.tsv's rows: one per track, then the mean row."""
        return [*self.scores.table, self.scores.mean_row()]

    def describe(self) -> str:
        mean = self.scores.mean_row()
        return (f"evaluated {len(self.tracks)} track(s) on {', '.join(self.chroms)} ({self.scores.bins:,} bins, "
                f"{self.windows:,} windows): mean Pearson r {mean['pearson']:.4f}, Spearman {mean['spearman']:.4f}, "
                f"AUROC {mean['auroc']:.3f}, specificity {self.scores.specificity:.3f}; predicting "
                f"{self.predict_seconds:.1f} s, metrics {self.metrics_seconds:.1f} s; wrote "
                f"{self.out / REPORT}")


def evaluate_model(
    model: str | Path,
    out: str | Path,
    *,
    data: Optional[str | Path] = None,
    targets: Optional[str | Path] = None,
    fasta: Optional[str | Path] = None,
    cons: Optional[str | Path] = None,
    regions: Optional[str | Path] = None,
    peaks: Optional[str | Path] = None,
    options: EvaluateOptions = EvaluateOptions(),
    progress: Optional[Progress] = None,
) -> EvaluateSummary:
    """Score ``model`` against observed tracks and write the results into ``out`` (see the module
    docstring).

    Args:
        model: a model file (``train`` or ``import-model``).
        out: the output folder (created; an earlier run's results are replaced only with ``force``).
        data: a prepared store (its windows, inputs and targets); or
        targets: a targets sheet of bigWigs, with ``fasta`` and ``cons`` (``cons`` may be None for a
            model without conservation, or with ``options.no_cons``). ``fasta``/``cons`` are not
            read with ``data``.
        regions: BED: evaluate only the bins overlapping these regions (their chromosomes instead
            of the held-out ones, unless ``options.chroms`` also names some).
        peaks: BED of peaks for the peak metrics and the peak-vs-background labels (None: each
            track's top ``options.top_fraction`` of bins).
        options: :class:`~epiformer_cli.options.EvaluateOptions`.
        progress: called as ``progress(n_windows, total=...)``.

    Raises:
        UsageError: a bad combination of inputs, no track or chromosome in common, an output
            folder that holds something else (nothing is written then). InputFileError and the
            model's, genome's and bigWigs' own errors for unreadable inputs.
    """
    from epiformer_cli.inference.inputs import input_paths
    from epiformer_cli.runs import check_output_dir, remove_finished, replace_or_refuse

    started = time.perf_counter()
    out = Path(out)
    if data is not None and targets is not None:
        raise UsageError("give the observed tracks once: --data STORE (a prepared store) or --targets SHEET "
                         "(bigWigs), not both")
    if data is None and targets is None:
        raise UsageError("missing the observed tracks: give --data STORE (a prepared store) or --targets SHEET "
                         "(a targets sheet of bigWigs, with --fasta and --cons)")
    files = input_paths(fasta, cons, model, ("--data", data), ("--targets", targets), ("--regions", regions),
                        ("--peaks", peaks))
    check_output_dir(out, inputs=files, marks=(PROVENANCE,), ours=OURS)
    replace_or_refuse(out, holds=f"evaluate results ({out / PROVENANCE})" if (out / PROVENANCE).exists() else None,
                      force=options.force, fix="choose another --out, or --force to replace them")
    if data is not None:
        run = _StoreSource(Path(data), Path(model), fasta, cons, regions, options)
    else:
        if fasta is None:
            raise UsageError("--targets needs --fasta (the genome the bigWigs are on): the model reads its sequence")
        run = _SheetSource(Path(targets), Path(model), Path(fasta), cons, regions, options)
    try:
        # a bad peaks file is refused before the long work
        peak_set = _read_peaks(peaks, run.names, run.sizes, run.chroms) if peaks is not None else None
        bins, windows = run.collect(progress)
        predicted = time.perf_counter()
        summary = EvaluateSummary(out=out, tracks=run.tracks, skipped=run.skipped, chroms=run.chroms, windows=windows,
                                  predict_seconds=predicted - run.started)
        from epiformer_cli.evaluate.score import score_bins

        summary.scores = score_bins(bins, peak_set, top_fraction=options.top_fraction, loci=options.loci)
        summary.metrics_seconds = time.perf_counter() - predicted
    finally:
        run.close()
    remove_finished(out, PROVENANCE)
    _write_outputs(out, summary, bins, run.settings(), options, files)
    summary.seconds = time.perf_counter() - started
    log.info("%s", summary.describe())
    return summary


# ---- the observed tracks and the windows to predict ------------------------------------------
class _Source:
    """What both sources share: the model, the tracks in common, the chromosomes, the engine."""

    kind = ""
    tracks: List[str]
    skipped: List[str]
    chroms: List[str]

    def _common_tracks(self, model_tracks: Sequence[str], observed: Sequence[str], source: str) -> None:
        """The model's tracks (``--tracks``, in model order) that ``observed`` has; the others are
        skipped with a log line; none in common is refused naming a few of each."""
        chosen = select_tracks(list(model_tracks), self.options.inference.tracks, f"model {self.model}")
        self.tracks = [t for t in chosen if t in observed]
        self.skipped = [t for t in chosen if t not in observed]
        if not self.tracks:
            raise UsageError(f"the model and {source} have no track name in common (model: {_few(chosen)}; "
                             f"{source}: {_few(observed)}): name the observed tracks as the model's "
                             f"(`epiformer info {self.model}` lists them)")
        if self.skipped:
            log.info("%d track(s) of the model have no observed data in %s and are skipped: %s", len(self.skipped),
                     source, _few(self.skipped))

    def _engine(self, loaded, n_rows: int):
        """The inference engine of the run, after a memory check of the predictions and targets
        (:data:`n_rows` bins) that will be held."""
        from epiformer_cli.device import compute_device
        from epiformer_cli.inference.engine import InferenceEngine, default_batch_size, inference_memory_bytes
        from epiformer_cli.runs.space import require_memory

        inference = self.options.inference
        device = compute_device(inference.device, inference.precision)
        batch = inference.batch_size or default_batch_size(loaded.config, device)
        # the bins' predictions and targets (2 numbers a bin and track) and, while scoring, a few
        # float64 vectors of the rows (ranks, labels): 3 "bins" of 4 bytes a track, counted generously
        require_memory(inference_memory_bytes(loaded.config, batch, len(self.tracks),
                                              context=max(abs(s) for s in inference.shifts),
                                              precision=inference.precision, device_type=device.type,
                                              held_bins=3 * n_rows + 8 * n_rows // max(1, len(self.tracks))),
                       f"evaluating {n_rows:,} bins of {len(self.tracks)} track(s)",
                       "evaluate fewer chromosomes at a time (--chroms), or lower --batch-size")
        engine = InferenceEngine.from_options(loaded.model, inference, device=device,
                                              tracks=[list(loaded.tracks).index(t) for t in self.tracks])
        opts = inference
        log.info("evaluating %s on %s: %d window(s) on %s (%s, batch %d; reverse complement %s, shifts %s)",
                 ", ".join(self.tracks), ", ".join(self.chroms), self.n_windows, engine.device, opts.precision,
                 engine.batch_size, "on" if opts.rc_average else "off", ",".join(map(str, engine.shifts)))
        return engine

    def close(self) -> None:  # pragma: no cover - overridden where something is open
        pass


class _StoreSource(_Source):
    """The observed tracks of a prepared store, on its own windows (train's)."""

    kind = "store"

    def __init__(self, data: Path, model: Path, fasta, cons, regions, options: EvaluateOptions) -> None:
        from epiformer_cli.data.training_store import TrainingStore
        from epiformer_cli.model.modelfile import load_model

        self.data, self.model, self.options, self.regions = data, model, options, regions
        self.store = TrainingStore(data)
        self.names, self.sizes = list(self.store.chroms), dict(self.store.chrom_sizes)
        self.loaded = load_model(model, "cpu")
        config = self.loaded.config
        if self.store.window_bp != config.seq_len:
            raise UsageError(f"{data} holds {self.store.window_bp:,} bp windows and {model} takes {config.seq_len:,} "
                             "bp: evaluate it on the bigWigs instead (--targets SHEET --fasta --cons)")
        if fasta is not None or cons is not None:
            log.info("--data: the store's own sequence and conservation are used (what train scored); "
                     "--fasta and --cons are not read")
        if options.no_cons and config.conservation != "none":
            log.warning("--no-cons: %s was trained with conservation (%r mode); running it on all-zero "
                        "conservation changes its predictions", model, config.conservation)
        self._common_tracks(self.loaded.tracks, self.store.tracks, f"the store {data}")
        self.columns = [self.store.tracks.index(t) for t in self.tracks]
        self.region_map = None
        self._choose_windows()

    def _choose_windows(self) -> None:
        from epiformer_cli.io.chroms import resolve_names

        store, options = self.store, self.options
        if options.chroms:
            chosen = resolve_names(options.chroms, store.chroms, "--chroms", str(self.data))
        elif self.regions is not None:
            chosen = None  # the regions' chromosomes
        else:
            chosen = list(store.manifest.get("splits", {}).get("test", []))
            if not chosen:
                raise UsageError(f"{self.data} has no test chromosomes: name the chromosomes to evaluate with --chroms")
        if self.regions is not None:
            from epiformer_cli.jobs.predict import read_regions

            self.region_map = read_regions(Path(self.regions), store.chrom_sizes)
            if chosen is not None:
                self.region_map = {c: v for c, v in self.region_map.items() if c in chosen}
            chosen = [c for c in store.chroms if c in self.region_map]
            if not chosen:
                raise UsageError(f"{self.regions}: no region lies on the chromosomes chosen by --chroms")
        self.chroms = [c for c in store.chroms if c in set(chosen)]
        index = {store.chroms.index(c) for c in self.chroms}
        default = not options.chroms and self.regions is None
        parts = [store.windows("test")] if default else [store.windows(s) for s in ("train", "valid", "test")]
        ci = np.concatenate([p.chrom_index for p in parts])
        start = np.concatenate([p.start for p in parts])
        keep = np.isin(ci, list(index))
        crop_bp = self.loaded.config.crop_bins * self.store.bin_bp
        if self.region_map is not None:  # windows whose output bins overlap a region
            keep &= np.array([_overlaps(self.region_map.get(store.chroms[c], ()), s + crop_bp,
                                        s + store.window_bp - crop_bp) for c, s in zip(ci, start)], dtype=bool)
        order = np.lexsort((start[keep], ci[keep]))
        self.window_chrom, self.window_start = ci[keep][order], start[keep][order]
        self.n_windows = len(self.window_start)
        if not self.n_windows:
            raise UsageError(f"{self.data} has no window on {', '.join(self.chroms)}"
                             + (" overlapping the regions" if self.region_map is not None else "")
                             + ": choose other chromosomes with --chroms")

    def collect(self, progress: Optional[Progress]):
        """Predict the chosen windows; their bins as :class:`~epiformer_cli.evaluate.bins.EvaluatedBins`."""
        from epiformer_cli.evaluate.bins import EvaluatedBins

        config, store = self.loaded.config, self.store
        crop, out_bins = config.crop_bins, config.out_bins
        engine = self._engine(self.loaded, self.n_windows * out_bins)
        self.started = time.perf_counter()
        n, n_tracks = self.n_windows, len(self.tracks)
        pred = np.empty((n, out_bins, n_tracks), dtype=np.float32)
        target = np.empty_like(pred)
        context, zero_cons = engine.context, self.options.no_cons

        def batches():
            for lo in range(0, n, engine.batch_size):
                hi = min(n, lo + engine.batch_size)
                codes = np.empty((hi - lo, engine.input_length), dtype=np.uint8)
                cons = np.zeros((hi - lo, engine.input_length), dtype=np.float32)
                for k in range(lo, hi):
                    c, s = int(self.window_chrom[k]), int(self.window_start[k])
                    codes[k - lo], window_cons = store.read_inputs(c, s - context, s + store.window_bp + context)
                    if not zero_cons:
                        cons[k - lo] = window_cons
                    # the targets train compares with: the window's bins, cropped as the model crops
                    target[k] = store.read_targets(c, s, s + store.window_bp)[self.columns, crop:crop + out_bins].T
                yield lo, codes, cons

        if progress:
            progress(0, total=n)
        for lo, values in engine.predict_stream(batches()):
            pred[lo:lo + len(values)] = values.transpose(0, 2, 1)
            if progress:
                progress(len(values))
        first_bin = self.window_start // store.bin_bp + crop
        bins = EvaluatedBins(
            tracks=list(self.tracks), chroms=list(store.chroms), chrom_sizes=dict(store.chrom_sizes),
            chrom=np.repeat(self.window_chrom.astype(np.int32), out_bins),
            bin=(first_bin[:, None] + np.arange(out_bins)[None, :]).ravel(),
            pred=pred.reshape(-1, n_tracks), target=target.reshape(-1, n_tracks))
        if self.region_map is not None:
            bins = bins.select(_in_regions(bins, self.region_map))
        return bins, n

    def settings(self) -> Dict[str, Any]:
        return {"model": str(self.model), "observed tracks": f"the store {self.data}",
                "chromosomes": ", ".join(self.chroms), "regions": self.regions,
                "windows": "the store's test windows" if not self.options.chroms and self.regions is None
                else "the store's windows on these chromosomes"}


class _SheetSource(_Source):
    """The observed tracks of a targets sheet, on the model's tiling of the chromosomes."""

    kind = "targets"

    def __init__(self, sheet: Path, model: Path, fasta: Path, cons, regions, options: EvaluateOptions) -> None:
        from epiformer_cli.inference.inputs import open_inputs
        from epiformer_cli.io.targets import read_targets

        self.sheet, self.model, self.fasta, self.options, self.regions = sheet, model, fasta, options, regions
        sheet_tracks = read_targets(sheet)
        self.inputs = open_inputs(fasta, cons, model, no_cons=options.no_cons)
        try:
            self.loaded = self.inputs.loaded
            self._common_tracks(self.loaded.tracks, [t.name for t in sheet_tracks], f"the targets sheet {sheet}")
            by_name = {t.name: t for t in sheet_tracks}
            self.sheet_tracks = [by_name[t] for t in self.tracks]
            self._check_normalisation()
            self._plan()
        except BaseException:
            self.inputs.close()
            raise

    def _check_normalisation(self) -> None:
        """Warn about a track the sheet normalises otherwise than the model's training store did
        (the model file records it; an imported model records none)."""
        recorded = (self.loaded.normalization or {}).get("tracks") or {}
        for t in self.sheet_tracks:
            was = recorded.get(t.name)
            if was is None:
                continue
            now = {"scale": t.scale, "clip": t.clip, "stat": t.stat}
            if any(was.get(k) != v for k, v in now.items()):
                log.warning("%s: track %r is scaled %s here and was %s for training: its targets are in other "
                            "units than the model's predictions", self.sheet, t.name, _norm_text(now), _norm_text(was))

    def _plan(self) -> None:
        from epiformer_cli.data.prediction_store import StoreLayout
        from epiformer_cli.data.tiling import WindowGrid
        from epiformer_cli.io.chroms import resolve_name, resolve_names
        from epiformer_cli.jobs.predict import CHUNK_BP, plan_chunks, read_regions

        sizes = dict(self.inputs.genome.chrom_sizes)
        self.names, self.sizes = list(sizes), sizes
        if self.options.chroms:
            wanted = set(resolve_names(self.options.chroms, list(sizes), "--chroms", str(self.fasta)))
            chosen = [c for c in sizes if c in wanted]
        elif self.regions is not None:
            chosen = list(sizes)
        else:
            recorded, why = recorded_test_chroms(self.loaded.provenance)
            if not recorded:
                raise UsageError(f"--targets needs the chromosomes to evaluate: give --chroms (or --regions); "
                                 f"{self.model} {why}")
            chosen = [c for c in (resolve_name(n, list(sizes)) for n in recorded) if c]
            if not chosen:
                raise UsageError(f"{self.fasta} has none of the model's test chromosomes ({', '.join(recorded)}): "
                                 "give --chroms")
            log.info("evaluating the model's held-out test chromosomes %s (recorded with its training store)",
                     ", ".join(chosen))
        region_map = read_regions(Path(self.regions), sizes) if self.regions is not None else None
        if region_map is not None:
            chosen = [c for c in chosen if c in region_map]
            if not chosen:
                raise UsageError(f"{self.regions}: no region lies on the chromosomes chosen by --chroms")
        self.chroms = chosen
        self.files = self._open_bigwigs(chosen, sizes)
        grid = WindowGrid.from_config(self.loaded.config)
        layout = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp, max(1, round(CHUNK_BP / grid.out_bp)),
                             list(self.tracks), "float32", [])
        self.plans = plan_chunks(layout, grid, chosen, region_map)
        self.n_windows = int(sum(len(p.windows) for p in self.plans))
        self.n_rows = int(sum(int(p.keep.sum()) if p.keep is not None else p.chunk.n_bins for p in self.plans))

    def _open_bigwigs(self, chroms: List[str], sizes: Dict[str, int]):
        """Each track's bigWig bound to the FASTA's names; one lacking an evaluated chromosome is
        refused (its bins would be scored against zeros)."""
        from epiformer_cli.io.bigwig import BigWig

        files = []
        for t in self.sheet_tracks:
            track = BigWig(t.path, f"target {t.name!r}")
            bound = track.bind(chroms, str(self.fasta), sizes)
            lacking = [c for c in chroms if c not in bound]
            if lacking:
                raise InputFileError(f"{t.path}: target {t.name!r} has no data for chromosome(s) "
                                     f"{', '.join(lacking[:5])}: evaluate other chromosomes with --chroms")
            files.append(track)
        return files

    def collect(self, progress: Optional[Progress]):
        from epiformer_cli.evaluate.bins import BIN_BP, EvaluatedBins
        from epiformer_cli.inference.reader import WindowReader
        from epiformer_cli.jobs.predict import run_chunks

        engine = self._engine(self.loaded, self.n_rows)
        self.started = time.perf_counter()
        names = list(self.inputs.genome.chrom_sizes)
        by_chunk = {(p.chunk.chrom, p.chunk.index): p for p in self.plans}
        parts: List[Tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

        def keep(chunk, values: np.ndarray) -> None:
            plan = by_chunk[(chunk.chrom, chunk.index)]
            wanted = np.ones(chunk.n_bins, dtype=bool) if plan.keep is None else plan.keep
            observed = np.stack([self._targets(f, t, chunk.chrom, chunk.start, chunk.n_bins)
                                 for f, t in zip(self.files, self.sheet_tracks)], axis=1)
            first = chunk.start // BIN_BP
            parts.append((names.index(chunk.chrom), first + np.flatnonzero(wanted), values[:, wanted].T.copy(),
                          observed[wanted]))

        run_chunks(engine, WindowReader(self.inputs.genome, self.inputs.conservation, engine.context), keep,
                   self.plans, progress)
        bins = EvaluatedBins(
            tracks=list(self.tracks), chroms=names, chrom_sizes=dict(self.inputs.genome.chrom_sizes),
            chrom=np.concatenate([np.full(len(p[1]), p[0], dtype=np.int32) for p in parts]),
            bin=np.concatenate([p[1] for p in parts]).astype(np.int64),
            pred=np.concatenate([p[2] for p in parts]), target=np.concatenate([p[3] for p in parts]))
        return bins, self.n_windows

    @staticmethod
    def _targets(track, spec, chrom: str, start: int, n_bins: int) -> np.ndarray:
        """(n_bins,) float32 targets of ``chrom`` from ``start`` (bins of 128 bp), normalised as
        ``prepare`` normalises them: ``max(min(bin_stat * scale, clip), 0)``; no data reads 0."""
        from epiformer_cli.io.bigwig import bin_values

        values = track.values(chrom, start, start + 128 * n_bins, missing=0.0)
        binned = bin_values(values, 128, spec.stat).astype(np.float64) * spec.scale
        if spec.clip is not None:
            binned = np.minimum(binned, spec.clip)
        return np.maximum(binned, 0.0).astype(np.float32)

    def settings(self) -> Dict[str, Any]:
        return {"model": str(self.model), "observed tracks": f"the targets sheet {self.sheet}",
                "fasta": str(self.fasta), "conservation": str(self.inputs.cons) if self.inputs.cons else "none (zero)",
                "chromosomes": ", ".join(self.chroms), "regions": self.regions,
                "windows": "the model's tiling of the chromosomes (every bin once)"}

    def close(self) -> None:
        for track in getattr(self, "files", []):
            track.close()
        self.inputs.close()


def recorded_test_chroms(provenance: Dict[str, Any]) -> Tuple[List[str], str]:
    """The test chromosomes of the store a model was trained on, from its provenance (``store``
    and ``store_fingerprint``, which ``train`` records): ``(names, "")``, or ``([], why not)``
    when the model records no store (an imported model), or the store is gone or was rebuilt."""
    store = (provenance or {}).get("store")
    if not store:
        return [], "records no training store (an imported model?), so no held-out chromosomes"
    manifest = Path(store) / "manifest.json"
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return [], f"was trained on {store}, which is no longer readable"
    if record.get("fingerprint") != provenance.get("store_fingerprint"):
        return [], f"was trained on {store}, which has been rebuilt since"
    return list(record.get("splits", {}).get("test", [])), ""


def _overlaps(intervals: Sequence[Tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in intervals)


def _in_regions(bins, region_map: Dict[str, List[Tuple[int, int]]]) -> np.ndarray:
    """(rows,) bool: rows whose bin overlaps a region."""
    keep = np.zeros(len(bins), dtype=bool)
    for ci in np.unique(bins.chrom):
        name = bins.chroms[ci]
        n = bins.n_bins(name)
        mask = np.zeros(n + 1, dtype=np.int64)
        for s, e in region_map.get(name, ()):
            mask[s // 128] += 1
            mask[min(n, -(-e // 128))] -= 1
        covered = np.cumsum(mask[:-1]) > 0
        rows = np.flatnonzero(bins.chrom == ci)
        keep[rows] = covered[bins.bin[rows]]
    return keep


def _read_peaks(path: str | Path, names: List[str], sizes: Dict[str, int], evaluated: Sequence[str]):
    """``--peaks``: the BED's intervals on the ``evaluated`` chromosomes as bin spans (``names``:
    every chromosome, the bins' numbering); refused when none lies there."""
    from epiformer_cli.evaluate.bins import Peaks
    from epiformer_cli.io.bed import read_bed

    intervals = read_bed(path, sizes, unknown="skip")
    on = [iv for iv in intervals if iv[0] in set(evaluated)]
    if not on:
        raise UsageError(f"{path}: no peak lies on the evaluated chromosomes ({', '.join(evaluated)}): "
                         "give peaks of these chromosomes, or leave --peaks out (each track's top bins)")
    if len(on) < len(intervals):
        log.info("%s: %d of %d peak(s) lie on the evaluated chromosomes", path, len(on), len(intervals))
    return Peaks.from_intervals(on, names, f"--peaks {Path(path).name}")


def _few(names: Sequence[str], limit: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "") if names else "none"


def _norm_text(spec: Dict[str, Any]) -> str:
    return f"x {spec.get('scale')}, clip {spec.get('clip')}, {spec.get('stat')} per bin"


# ---- outputs ------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "NA" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _write_outputs(out: Path, summary: EvaluateSummary, bins, settings: Dict[str, Any], options: EvaluateOptions,
                   files) -> None:
    from epiformer_cli.evaluate import plots
    from epiformer_cli.evaluate.report import settings_rows, write_report
    from epiformer_cli.evaluate.score import COLUMNS
    from epiformer_cli.io.files import atomic_output, atomic_write_text

    scores = summary.scores
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / METRICS, "w") as handle:
        handle.write("\t".join(COLUMNS) + "\n")
        for row in summary.rows():
            handle.write("\t".join(_cell(row[c]) for c in COLUMNS) + "\n")
    with atomic_output(out / MATRIX, "w") as handle:
        handle.write("\t".join(["predicted\\observed", *scores.tracks]) + "\n")
        for name, values in zip(scores.tracks, scores.matrix):
            handle.write("\t".join([name, *(_cell(float(v)) for v in values)]) + "\n")
    written = [METRICS, MATRIX]
    drawn: Dict[str, Optional[Path]] = {}
    for key, draw in (("heatmap", lambda p: plots.plot_heatmap(scores.matrix, scores.tracks, p)),
                      ("scatter", lambda p: plots.plot_scatter(bins, [r["pearson"] for r in scores.table], p)),
                      ("loci", lambda p: plots.plot_loci(scores.loci, scores.tracks, p))):
        path = out / FIGURES[key]
        drawn[key] = path if draw(path) else None
        if drawn[key] is not None:
            written.append(FIGURES[key])
    opts = options.inference
    shown = settings_rows({
        **settings, "tracks": ", ".join(scores.tracks),
        "tracks skipped": ", ".join(summary.skipped) if summary.skipped else None,
        "bins": f"{scores.bins:,} of 128 bp ({scores.rows:,} scored), {summary.windows:,} windows",
        "peaks": f"{scores.peaks:,} ({scores.peaks_source})",
        "inference": f"{opts.precision}, reverse complement {'on' if opts.rc_average else 'off'}, shifts "
                     f"{','.join(map(str, opts.shifts))}",
        "epiformer": __version__})
    write_report(out / REPORT, scores, settings=shown, figures=drawn)
    written.append(REPORT)
    summary.files = written
    provenance = {
        "epiformer_version": __version__, "kind": "epiformer-evaluate",
        "inputs": {name.lstrip("-"): str(path) for name, path in files if name.startswith("--")},
        "options": options.to_dict(), "tracks": scores.tracks, "tracks_skipped": summary.skipped,
        "chroms": summary.chroms, "windows": summary.windows, "bins": scores.bins, "rows": scores.rows,
        "peaks": {"source": scores.peaks_source, "scored": scores.peaks, "partial": scores.peaks_partial},
        "specificity": {"overall": _json_float(scores.specificity), "peaks": scores.specificity_peaks},
        "mean": {k: _json_float(v) if isinstance(v, float) else v for k, v in scores.mean_row().items()},
        "loci": [f"{locus.chrom}:{locus.start}-{locus.end}" for locus in scores.loci],
        "seconds": {"predict": round(summary.predict_seconds, 3), "metrics": round(summary.metrics_seconds, 3)},
        "files": written,
    }
    atomic_write_text(out / PROVENANCE, json.dumps(provenance, indent=1) + "\n")
    summary.files = [*written, PROVENANCE]


def _json_float(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else float(value)
