"""`epiformer prepare`: genome FASTA + conservation bigWig + target bigWigs -> a training store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from epiformer_cli.cli.common import (
    FORCE_HELP,
    ChromsOption,
    ConsOption,
    FastaOption,
    handle_errors,
    names_callback,
    names_syntax,
    progress_bar,
    require,
)
from epiformer_cli.errors import UsageError

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("prepare")(run)


@handle_errors
def run(
    targets: Annotated[Path, typer.Option("--targets", help="Targets sheet (TSV, plain, gzip or bgzip: name, path[, scale, clip, stat]) or a list of bigWigs.", readable=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the training store.")],
    fasta: FastaOption = None,
    cons: ConsOption = None,
    blacklist: Annotated[Optional[Path], typer.Option("--blacklist", help="BED (plain, gzip or bgzip) of regions whose windows are dropped.", readable=False)] = None,
    chroms: ChromsOption = None,
    valid_chroms: Annotated[Optional[List[str]], typer.Option("--valid-chroms", metavar="<names>", callback=names_callback,
                                                              help=f"Held-out validation chromosomes, {names_syntax('--valid-chroms')} [default: chr8].")] = None,
    test_chroms: Annotated[Optional[List[str]], typer.Option("--test-chroms", metavar="<names>", callback=names_callback,
                                                             help=f"Held-out test chromosomes, {names_syntax('--test-chroms')} [default: chr9].")] = None,
    preset: Annotated[str, typer.Option("--preset", help="Model preset whose input length sets the window: tiny (16,384 bp; tests, the demo), small (32,768 bp; a CPU), epiformer (98,304 bp; the published size) or published (98,304 bp; the published network). `epiformer train` then picks the preset of the window (epiformer at 98,304 bp).")] = "epiformer",
    window: Annotated[Optional[int], typer.Option("--window", help="Window length in bp (overrides --preset; multiple of 128).")] = None,
    step: Annotated[Optional[int], typer.Option("--step", help="Distance between window starts in bp [default: the window length].")] = None,
    max_n_fraction: Annotated[float, typer.Option("--max-n-fraction", help="Drop windows with a larger fraction of N.")] = 0.1,
    no_cons: Annotated[bool, typer.Option("--no-cons", help="Train without conservation (all zero).")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": rebuild the store in --out, even one made from the same inputs and options.")] = False,
) -> None:
    """Build a training store: bases as 1-byte codes, quantised conservation, float16 targets per
    128 bp bin, and a window table split by chromosome into train/valid/test.

    Streams chromosome by chromosome (memory stays bounded); an interrupted run resumes; re-running
    on the same inputs does nothing.
    """
    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.options import PrepareOptions

    fasta = require(fasta, "--fasta", "EPIFORMER_FASTA")
    if cons is None and not no_cons:
        raise UsageError("missing option --cons (or set EPIFORMER_CONS); pass --no-cons to train without conservation")
    if window is None:
        from epiformer_cli.model.config import preset as get_preset

        window = get_preset(preset).seq_len
    options = PrepareOptions(window_bp=window, step_bp=step, chroms=chroms, valid_chroms=valid_chroms,
                             test_chroms=test_chroms, max_n_fraction=max_n_fraction, force=force)
    with progress_bar("prepare", unit="bp") as advance:
        summary = prepare_store(fasta, None if no_cons else cons, targets, out,
                                blacklist=blacklist, options=options, progress=advance)
    log.info("%s", summary.describe())
