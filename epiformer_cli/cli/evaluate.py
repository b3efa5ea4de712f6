"""`epiformer evaluate`: score a model against observed tracks on held-out chromosomes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from epiformer_cli.cli.common import (
    FORCE_HELP,
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
    names_callback,
    names_syntax,
    required_unless,
)

#: --chroms as every command parses it; its default here is the held-out chromosomes, not all
ChromsOption = Annotated[
    Optional[List[str]],
    typer.Option("--chroms", metavar="<names>", callback=names_callback,
                 help=f"Only these chromosomes, {names_syntax('--chroms')} [default: the held-out test chromosomes: "
                      "the store's, or those of the store the model was trained on]."),
]


def register(app: typer.Typer) -> None:
    app.command("evaluate")(run)


@handle_errors
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created): metrics.tsv, report.html, "
                                                          "figures.")],
    model: ModelOption = None,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="A store from `epiformer prepare`: its windows, sequence, conservation and targets are "
                       "scored exactly as train scores them (--fasta and --cons are then not read). "
                       + required_unless("--targets is given"), readable=False)] = None,
    targets: Annotated[Optional[Path], typer.Option(
        "--targets", help="Targets sheet of observed bigWigs (name, path[, scale, clip, stat], as prepare reads "
                          "it), matched to the model's tracks by name: for a published model, or other data. "
                          "Needs --fasta (and --cons). " + required_unless("--data is given"),
        readable=False)] = None,
    fasta: FastaOption = None,
    cons: ModelConsOption = None,
    chroms: ChromsOption = None,
    regions: Annotated[Optional[Path], typer.Option(
        "--regions", help="BED (plain, gzip or bgzip): evaluate only the bins overlapping these regions "
                          "(on their chromosomes, instead of the held-out ones).", readable=False)] = None,
    peaks: Annotated[Optional[Path], typer.Option(
        "--peaks", help="BED of peaks for the peak metrics and AUROC/AUPRC [default: each track's top bins, "
                        "--top-fraction].", readable=False)] = None,
    top_fraction: Annotated[float, typer.Option(
        "--top-fraction", help="Without --peaks: a track's peak bins are its top this fraction of bins.")] = 0.01,
    tracks: TracksOption = None,
    loci: Annotated[int, typer.Option("--loci", help="Example loci drawn in the report (0: none).")] = 3,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Windows per model call [default: chosen per device]; halved on GPU out-of-memory.")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    rc_average: Annotated[bool, typer.Option(
        "--rc-average/--no-rc-average",
        help="Average with the reverse-complement prediction (flipped back), as predict does. Off by default: "
             "the numbers are then train's.")] = False,
    shifts: Annotated[str, typer.Option(
        "--shifts", help="Input shifts in bp to average over, e.g. 0,-3,3 (|shift| < 64).")] = "0",
    no_cons: Annotated[bool, typer.Option(
        "--no-cons", help="Run a model trained with conservation on all-zero conservation (warned).")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": the results of an earlier evaluate in "
                                                        "--out.")] = False,
) -> None:
    """Score a model against observed tracks on held-out chromosomes: Pearson and Spearman of
    log(x+1) per 128 bp bin and at peaks, peak-vs-background AUROC/AUPRC, cell-type specificity and
    the predicted-vs-observed matrix of tracks.

    By default the held-out test chromosomes: the store's (--data), or with --targets those of the
    store the model was trained on (else give --chroms). With --data the per-track Pearson r is the
    test Pearson train reports. Writes into --out: metrics.tsv (a row per track and a mean row),
    track_correlation.tsv, report.html (one self-contained page), heatmap.png, scatter.png,
    loci.png and evaluate.json.
    """
    from epiformer_cli.jobs.evaluate import evaluate_model
    from epiformer_cli.options import EvaluateInference, EvaluateOptions

    apply_threads(threads)
    options = EvaluateOptions(
        inference=EvaluateInference(device=device, precision=precision, batch_size=batch_size, rc_average=rc_average,
                                    shifts=shifts, tracks=tracks),
        chroms=chroms, top_fraction=top_fraction, loci=loci, no_cons=no_cons, force=force)
    with progress_bar("evaluate", unit="windows") as advance:
        evaluate_model(require(model, "--model", "EPIFORMER_MODEL"), out, data=data, targets=targets, fasta=fasta,
                       cons=cons, regions=regions, peaks=peaks, options=options, progress=advance)
