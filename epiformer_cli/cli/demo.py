"""`epiformer demo`: the whole pipeline on a small synthetic genome that ships with the tool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from epiformer_cli.cli.common import handle_errors, progress_bar


def register(app: typer.Typer) -> None:
    app.command("demo")(run)


@handle_errors
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's files.")] = Path("epiformer-demo"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic genome (same seed, same files).")] = 0,
    data_only: Annotated[
        bool, typer.Option("--data-only", help="Only write the synthetic genome, tracks, variants and rules.")
    ] = False,
    device: Annotated[str, typer.Option("--device", envvar="EPIFORMER_DEVICE", help="auto|cpu|cuda|cuda:N|mps")] = "auto",
) -> None:
    """Run epiformer on a synthetic genome whose rules are known (see OUT/RULES.md).

    Writes a FASTA, a conservation bigWig, target bigWigs of planted motif rules, a blacklist, a
    targets sheet and a bgzipped VCF with known causal variants, then runs the pipeline on them.
    """
    from epiformer_cli.jobs.demo import run_demo

    with progress_bar("demo") as advance:
        summary = run_demo(out_dir=out, seed=seed, data_only=data_only, device=device, progress=advance)
    typer.echo(summary)
