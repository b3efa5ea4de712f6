"""`epiformer demo`: the whole pipeline on a small synthetic genome that ships with the tool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from epiformer_cli.cli.common import DeviceOption, ThreadsOption, apply_threads, handle_errors


def register(app: typer.Typer) -> None:
    app.command("demo")(run)


@handle_errors
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")] = Path("epiformer-demo"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic genome and of training (same seed, same files).")] = 0,
    data_only: Annotated[
        bool, typer.Option("--data-only", help="Only write the synthetic genome, tracks, variants and rules.")
    ] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs of the tiny model.")] = 10,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Run epiformer end to end on a synthetic genome whose rules are known.

    \b
    1. data: OUT/data: a FASTA, a conservation bigWig, accessibility bigWigs
       made by planted motif rules, a blacklist, a targets sheet, a VCF with
       known causal variants, and RULES.md;
    2. prepare: OUT/store, 16,384 bp windows (the tiny preset's);
    3. train: the tiny preset for --epochs epochs, into OUT/run;
    4. predict: the whole genome to bigWigs in OUT/predictions, with the
       training targets beside them;
    5. explain: 12 test-chromosome elements by ISM and by gradient, into
       OUT/explain;
    6. motifs: every test-chromosome element explained by gradient, then
       TF-MoDISco and TOMTOM (JASPAR) into OUT/motifs: which planted motifs
       were found, and under which database name;
    7. score-variants: every VCF variant into OUT/scores.tsv, calibrated by a
       genome-wide null of 10,000 SNVs, with the motif each one overlaps,
       calibration plots in OUT/calibration;
    8. summary: held-out Pearson, the causal-vs-neutral AUROC, the calibration
       of the p-values, how well the contributions find the planted motifs,
       and the top variants.
    """
    from epiformer_cli.cli.common import progress_bar
    from epiformer_cli.errors import UsageError
    from epiformer_cli.jobs.demo import run_demo

    apply_threads(threads, arrow=True)  # its steps run in this process: pseudobulk's reader too
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}")
    # Each step logs a line; training, the one long step, also draws its progress bar.
    with progress_bar("train", unit="steps") as reporter:
        summary = run_demo(out_dir=out, seed=seed, data_only=data_only, epochs=epochs, device=device,
                           train_progress=reporter)
    typer.echo(summary.describe())
