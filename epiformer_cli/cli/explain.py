"""`epiformer explain`: Which bases make a region accessible, and why a variant matters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from epiformer_cli.cli.common import (
    FORCE_HELP, DeviceOption, FastaOption, ModelConsOption, ModelOption, PrecisionOption, ThreadsOption, TracksOption,
    apply_threads, handle_errors, progress_bar, require, required_unless,
)


def register(app: typer.Typer) -> None:
    app.command("explain")(run)


@handle_errors
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; a killed run resumes there).")],
    regions: Annotated[Optional[Path], typer.Option("--regions", help="BED (plain, gzip or bgzip) of regions to "
                                                                       "explain (chrom, start, end[, name]). "
                                                                       + required_unless("--variants or --peaks is "
                                                                                         "given") +
                                                                       " Only one of the three.",
                                                    readable=False)] = None,
    variants: Annotated[Optional[Path], typer.Option("--variants", help="VCF (plain, bgzip or gzip) or BCF: explain "
                                                                         "each ALT allele with --flank bases each "
                                                                         "side, ref and alt. "
                                                                         + required_unless("--regions or --peaks is "
                                                                                           "given") +
                                                                         " Only one of the three.",
                                                     readable=False)] = None,
    peaks: Annotated[Optional[Path], typer.Option("--peaks", help="bigWig track (a predict output, or a target): "
                                                                   "explain its --top highest non-overlapping "
                                                                   "--peak-width bp windows, named peak_1, peak_2, "
                                                                   "... by rank; every shard picks the same ones. "
                                                                   "Values are read as means over the model's "
                                                                   "128 bp bins. "
                                                                   + required_unless("--regions or --variants is "
                                                                                     "given") +
                                                                   " Only one of the three.",
                                                  readable=False)] = None,
    top: Annotated[int, typer.Option("--top", help="--peaks: how many windows to explain (fewer, with a warning, "
                                                   "when the track has fewer; ISM of many needs a higher "
                                                   "--max-mutants, or use --method gradient).")] = 1000,
    peak_width: Annotated[int, typer.Option("--peak-width", help="--peaks: bp of each window, centred on its "
                                                                 "summit bin (shifted inside near a chromosome "
                                                                 "end).")] = 500,
    peak_track: Annotated[Optional[str], typer.Option("--peak-track", help="--peaks: the track of a several-track "
                                                                           "prediction: --peaks pred.bw --peak-track "
                                                                           "T reads pred.T.bw.")] = None,
    method: Annotated[str, typer.Option("--method", help="ism (every base mutated, exact) or gradient (gradient x "
                                                         "input, mean over bases removed; cheap).")] = "ism",
    flank: Annotated[int, typer.Option("--flank", help="Variants: bases explained on each side.")] = 200,
    tracks: TracksOption = None,
    plot: Annotated[int, typer.Option("--plot", help="Plots for the first N regions (0: none).")] = 20,
    max_mutants: Annotated[int, typer.Option("--max-mutants", help="Refuse ISM runs of more mutants than this "
                                                                   "(the message estimates the time).")] = 100_000,
    fasta: FastaOption = None,
    cons: ModelConsOption = None,
    model: ModelOption = None,
    rc_average: Annotated[bool, typer.Option("--rc-average/--no-rc-average",
                                             help="Average with the reverse-complement strand.")] = True,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    no_cons: Annotated[bool, typer.Option("--no-cons", help="Explain a model trained with conservation on "
                                                            "all-zero conservation (warned).")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": the results of an earlier run in --out; "
                                                        "and discard the parts of a run with other settings.")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: explain every N-th region only, into the same "
                                                                 "--out as the other shards; the last shard to finish "
                                                                 "writes the outputs. Default: SLURM_ARRAY_TASK_ID/"
                                                                 "SLURM_ARRAY_TASK_COUNT when set.")] = None,
    motif_db: Annotated[Optional[Path], typer.Option("--motif-db", help="--variants: a MEME file, a motifs --out "
                                                                        "folder, or jaspar (shipped); each variant's "
                                                                        "plots mark the strongest motif instance it "
                                                                        "overlaps.",
                                                     readable=False)] = None,
) -> None:
    """Which bases make a region accessible: ISM or gradient contributions per base.

    The explained value of a region is the prediction summed over the 128 bp bins that overlap it.
    The regions come from a BED (--regions), a VCF (--variants, each ALT allele with --flank bases
    each side) or the strongest peaks of a bigWig track (--peaks pred.bw --top 1000), e.g. to find
    motifs over thousands of regions with `epiformer motifs`.

    Writes into --out: contrib.<track>.bw (per-base contribution of the reference base, for IGV),
    contrib.npz (per region and track the 4 x L ISM effects or hypothetical contributions),
    regions.tsv (predicted sum and strongest base per region and track) and plots/ (sequence logo,
    ISM heatmap and predicted track; for variants also ref and alt logos and tracks).

    Scale out with --shard I/N or a SLURM array (`sbatch --array=1-8`): every task explains its share
    of the regions into the same --out, and the outputs are the same bytes as one unsharded run.
    """
    from epiformer_cli.jobs.explain import explain
    from epiformer_cli.options import ExplainOptions, InferenceOptions

    apply_threads(threads)
    options = ExplainOptions(
        inference=InferenceOptions(device=device, precision=precision, rc_average=rc_average, tracks=tracks),
        method=method, flank=flank, plot=plot, max_mutants=max_mutants, no_cons=no_cons, force=force,
        shard=shard, top=top, peak_width=peak_width, peak_track=peak_track,
        motif_db=str(motif_db) if motif_db is not None else None,
    )
    with progress_bar("explaining", unit="mutants" if method == "ism" else "regions") as advance:
        explain(require(fasta, "--fasta", "EPIFORMER_FASTA"), cons, require(model, "--model", "EPIFORMER_MODEL"), out,
                regions=regions, variants=variants, peaks=peaks, options=options, progress=advance)
