"""``export-bigwig``: a prediction store (complete, or the union of its shards) or a prepared
training store's targets -> one bigWig per track.

The bigWig header holds the store's chromosome sizes in FASTA order; values are float32 per
128 bp bin (the last bin of a chromosome is clipped to its end); NaN is never written, so bins that
were not predicted (outside ``--regions``, or missing chunks with ``allow_missing``) are absent,
never zero. Files are written atomically: nothing half-written is left on an error.

Each bigWig is held in memory until it is finished (see :class:`~epiformer_cli.io.bigwig.BigWigWriter`:
libBigWig must never meet a full disk): ~200 MB a track for hg38, so tracks are written in groups
whose bound fits :data:`MEMORY_BUDGET`, the store read once per group. The finished files of every
group appear together at the end (:class:`~epiformer_cli.io.bigwig.BigWigBatch`): a failure or a
Ctrl-C in the last group leaves no half set of tracks behind.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from epiformer_cli.data.prediction_store import MANIFEST, STORE_KIND, PredictionStore
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.bigwig import MEMORY_BUDGET
from epiformer_cli.names import file_part
from epiformer_cli.options import select_tracks
from epiformer_cli.progress import Progress
from epiformer_cli.runs import check_output

log = logging.getLogger(__name__)

_BW_SUFFIXES = (".bw", ".bigwig", ".bigWig", ".BW")
_TARGET_STEP_BINS = 1 << 13  # bins read per step from a training store: bounded memory


@dataclass
class ExportSummary:
    """What an export wrote."""

    outputs: Dict[str, Path]
    kind: str
    missing_chunks: int = 0
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        files = ", ".join(str(p) for p in self.outputs.values())
        text = f"wrote {len(self.outputs)} bigWig(s) from a {self.kind} in {self.seconds:.1f} s: {files}"
        if self.missing_chunks:
            text += f" ({self.missing_chunks} missing chunk(s) left without data)"
        return text


def output_paths(out: str | os.PathLike, tracks: Sequence[str]) -> Dict[str, Path]:
    """Where each track's bigWig goes: ``out`` itself for one track, ``<stem>.<track>.bw`` beside
    it for several (``pred.bw`` -> ``pred.ASCT.bw``, ``pred.OPC.bw``)."""
    out = Path(out)
    if len(tracks) == 1:
        return {tracks[0]: out}
    stem, suffix = out.name, ".bw"
    for s in _BW_SUFFIXES:
        if stem.endswith(s) and len(stem) > len(s):
            stem, suffix = stem[: -len(s)], s
            break
    paths = {}
    for track in tracks:
        paths[track] = out.with_name(f"{stem}.{file_part(track)}{suffix}")
    if len(set(paths.values())) != len(paths):
        raise UsageError("track names collide once made file-safe: rename the tracks or export them one at a time with --tracks")
    return paths


def check_writable(paths: Sequence[Path], inputs: Sequence[Optional[Path]] = (), force: bool = True) -> None:
    """Refuse early (before any work) an output that cannot be written (see :func:`check_output`)."""
    for path in paths:
        check_output(path, inputs=inputs, force=force)


def track_groups(names: Sequence[str], out: str | os.PathLike, chrom_sizes: Dict[str, int], n_entries: int,
                 covered_bp: int, min_entries: int) -> List[List[str]]:
    """The groups of tracks exported together (:func:`epiformer_cli.io.bigwig.track_groups`, within
    :data:`MEMORY_BUDGET`), after checking the folder can hold them."""
    from epiformer_cli.io import bigwig

    return bigwig.track_groups(names, out, chrom_sizes, n_entries, covered_bp, min_entries,
                               budget=MEMORY_BUDGET, verb="exporting")


def export_predictions(store: PredictionStore, out: str | os.PathLike, tracks: Optional[Sequence[str]] = None,
                       allow_missing: bool = False, progress: Optional[Progress] = None,
                       overwrite: bool = True) -> ExportSummary:
    """Write a prediction store's tracks as bigWigs (see the module docstring).

    Raises:
        InputFileError: chunks are missing (named, with the shards they belong to) and
            ``allow_missing`` is False.
    """
    started = time.perf_counter()
    names = select_tracks(store.tracks, tracks, f"the store {store.root}")
    paths = output_paths(out, names)
    check_writable(list(paths.values()), inputs=[("the store", store.root)], force=overwrite)
    missing = store.missing()
    if missing and not allow_missing:
        raise InputFileError(
            f"{store.root} is incomplete: {store.describe_missing(missing)}; run the missing shards "
            "(the same predict command resumes them) or pass --allow-missing to leave them without data"
        )
    if missing:
        log.warning("%s: exporting without %d missing chunk(s); their bins are left without data",
                    store.root, len(missing))
    sizes = store.chrom_sizes
    bin_bp = store.layout.bin_bp
    missing_keys = {(c.chrom, c.index) for c in missing}
    chunks = sorted(store.chunks, key=lambda c: (c.chrom_index, c.index))
    present = [c for c in chunks if (c.chrom, c.index) not in missing_keys]
    bins = sum(c.n_bins for c in present)
    regions = store.fingerprint.get("regions_sha256") is not None  # then a chunk may hold one bin only
    groups = track_groups(names, out, sizes, bins, sum(c.end - c.start for c in present),
                          len(present) if regions else bins)
    if progress:
        progress(0, total=len(chunks) * len(groups))
    from epiformer_cli.io.bigwig import BigWigBatch

    with BigWigBatch() as batch:  # every track appears at the end, together, or none does
        for group in groups:
            with ExitStack() as stack:
                writers = [(stack.enter_context(batch.writer(paths[n], sizes)), store.tracks.index(n)) for n in group]
                for chunk in chunks:
                    if (chunk.chrom, chunk.index) not in missing_keys:
                        values = store.read(chunk)
                        for writer, col in writers:
                            writer.add_bins(chunk.chrom, chunk.start, values[col], span=bin_bp,
                                            chrom_size=sizes[chunk.chrom])
                    if progress:
                        progress(1)
    return ExportSummary(paths, "prediction store", len(missing), time.perf_counter() - started)


def export_targets(root: str | os.PathLike, out: str | os.PathLike, tracks: Optional[Sequence[str]] = None,
                   progress: Optional[Progress] = None, overwrite: bool = True) -> ExportSummary:
    """Write a ``prepare`` store's (normalised, 128 bp binned) targets as one bigWig per track,
    so inputs and predictions can be viewed side by side."""
    from epiformer_cli.data.training_store import TrainingStore
    from epiformer_cli.io.bigwig import BigWigBatch

    started = time.perf_counter()
    store = TrainingStore(root)
    names = select_tracks(store.tracks, tracks, f"the store {store.root}")
    paths = output_paths(out, names)
    check_writable(list(paths.values()), inputs=[("the store", store.root)], force=overwrite)
    bin_bp = store.bin_bp
    total_bins = sum(-(-s // bin_bp) for s in store.chrom_sizes.values())
    groups = track_groups(names, out, store.chrom_sizes, total_bins, sum(store.chrom_sizes.values()), total_bins)
    if progress:
        progress(0, total=total_bins * len(groups))
    with BigWigBatch() as batch:  # every track appears at the end, together, or none does
        for group in groups:
            with ExitStack() as stack:
                writers = [(stack.enter_context(batch.writer(paths[n], store.chrom_sizes)), store.tracks.index(n))
                           for n in group]
                for ci, chrom in enumerate(store.chroms):
                    size = store.chrom_sizes[chrom]
                    n_bins = -(-size // bin_bp)
                    for b0 in range(0, n_bins, _TARGET_STEP_BINS):
                        b1 = min(n_bins, b0 + _TARGET_STEP_BINS)
                        values = store.read_targets(ci, b0 * bin_bp, b1 * bin_bp)
                        for writer, col in writers:
                            writer.add_bins(chrom, b0 * bin_bp, values[col], span=bin_bp, chrom_size=size)
                        if progress:
                            progress(b1 - b0)
    notes = ["values are the normalised training targets (scaled and clipped as the model sees them)"]
    return ExportSummary(paths, "training store (targets)", 0, time.perf_counter() - started, notes)


def export_bigwig(*, store: str | os.PathLike, out: str | os.PathLike, tracks: Optional[Sequence[str]] = None,
                  allow_missing: bool = False, progress: Optional[Progress] = None,
                  overwrite: bool = True) -> ExportSummary:
    """Export a prediction store or a prepared training store (detected from its manifest) as bigWigs.

    Args:
        store: the store folder (from ``predict`` or ``prepare``).
        out: the bigWig path; with several tracks, ``<stem>.<track>.bw`` beside it.
        tracks: track names to export (default all).
        allow_missing: export an incomplete prediction store, leaving missing bins without data.
        progress: called as ``progress(n, total=...)``.
        overwrite: replace existing bigWigs (the command line passes False unless --force).
    """
    root = Path(store)
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        raise InputFileError(f"{root}: not a store (no {MANIFEST}): give a folder made by `epiformer predict` "
                             "(--store, or the hidden .<out>.store folder beside its --out) or `epiformer prepare`")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (ValueError, OSError) as exc:  # ValueError: not JSON, or not UTF-8 text
        raise InputFileError(f"{manifest_file}: unreadable manifest ({type(exc).__name__}): the store is "
                             "damaged: make it again (predict or prepare with --force)") from None
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    if kind == STORE_KIND:
        return export_predictions(PredictionStore(root), out, tracks, allow_missing, progress, overwrite)
    return export_targets(root, out, tracks, progress, overwrite)

