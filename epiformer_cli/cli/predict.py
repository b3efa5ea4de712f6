"""`epiformer predict`: predict accessibility genome-wide or over regions and write bigWig tracks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from epiformer_cli.cli.common import (
    FORCE_HELP,
    ChromsOption,
    DeviceOption,
    FastaOption,
    ModelConsOption,
    ModelOption,
    PrecisionOption,
    ThreadsOption,
    TracksOption,
    apply_threads,
    handle_errors,
    progress_bar,
    require,
)

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("predict")(run)


@handle_errors
def run(
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o",
        help="bigWig to write. With one track this is the file; with several, one file per track "
             "beside it: pred.bw -> pred.<track>.bw. Required unless this run is a shard (--shard I/N, "
             "or a SLURM array task) given a --store: then only the store is written, and `epiformer "
             "export-bigwig STORE --out pred.bw` merges the shards.")] = None,
    fasta: FastaOption = None,
    cons: ModelConsOption = None,
    model: ModelOption = None,
    regions: Annotated[Optional[Path], typer.Option(
        "--regions", help="BED (plain, gzip or bgzip) of regions (merged); only bins overlapping them are predicted and written.",
        readable=False)] = None,
    chroms: ChromsOption = None,
    tracks: TracksOption = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Windows per model call [default: chosen per device]; halved on GPU out-of-memory.")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    rc_average: Annotated[bool, typer.Option(
        "--rc-average/--no-rc-average",
        help="Average with the reverse-complement prediction (flipped back).")] = True,
    shifts: Annotated[str, typer.Option(
        "--shifts", help="Input shifts in bp to average over, e.g. 0,-3,3 (|shift| < 64).")] = "0",
    shard: Annotated[Optional[str], typer.Option(
        "--shard",
        help="I/N, I from 1 to N: compute only this 1/N of the chunks and write only the store; merge "
             "with export-bigwig. Default: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set.")] = None,
    store: Annotated[Optional[Path], typer.Option(
        "--store", help="Prediction store folder (resumable) [default: .<out name>.store beside --out]. "
                        "Without --out only in a shard (--shard I/N, or a SLURM array task), which writes "
                        "only the store; then `epiformer export-bigwig STORE --out pred.bw` merges the "
                        "shards.")] = None,
    chunk_windows: Annotated[Optional[int], typer.Option(
        "--chunk-windows", help="Windows per store chunk (unit of resuming and sharding) [default: ~4 Mb].")] = None,
    store_dtype: Annotated[str, typer.Option(
        "--store-dtype", help="float32 (exact) or float16 (half the disk) in the store.")] = "float32",
    window: Annotated[Optional[int], typer.Option(
        "--window", help="Expected model input length in bp; refuse a model with another.")] = None,
    no_cons: Annotated[bool, typer.Option(
        "--no-cons", help="Run a model trained with conservation on all-zero conservation (warned).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help=FORCE_HELP + ": bigWigs already at --out, and a --store made with other inputs or "
                        "options (the same command run again resumes its store and replaces its own "
                        "bigWigs without --force).")] = False,
) -> None:
    """Predict accessibility in 128 bp bins over the whole genome (or --regions / --chroms) and write
    one bigWig per track.

    Predictions go to a resumable store first: re-running the same command after a kill computes
    only the missing chunks. With --shard I/N (or in a SLURM array) only the store is written;
    `epiformer export-bigwig STORE --out pred.bw` merges the shards. Under torchrun the ranks split
    the chunks and rank 0 writes the bigWigs.
    """
    from epiformer_cli.jobs.predict import predict_genome
    from epiformer_cli.options import InferenceOptions, PredictOptions

    apply_threads(threads)
    options = PredictOptions(
        inference=InferenceOptions(device=device, precision=precision, batch_size=batch_size,
                                   rc_average=rc_average, shifts=shifts, tracks=tracks),
        chroms=chroms, chunk_windows=chunk_windows, store_dtype=store_dtype, window=window, no_cons=no_cons,
        shard=shard, force=force,
    )
    with progress_bar("predict", unit="windows") as advance:
        summary = predict_genome(require(fasta, "--fasta", "EPIFORMER_FASTA"), cons,
                                 require(model, "--model", "EPIFORMER_MODEL"), out, store=store, regions=regions,
                                 options=options, progress=advance)
    log.info("%s", summary.describe())
