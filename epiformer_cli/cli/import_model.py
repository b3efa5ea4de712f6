"""`epiformer import-model`: run the published Epiformer brain models with epiformer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from epiformer_cli.cli.common import FORCE_HELP, handle_errors, names_callback, names_syntax

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("import-model")(run)


def _names_or_file(ctx, param, value) -> Optional[List[str]]:
    """--tracks: one existing file of names is kept as it is (its name may hold a comma); anything
    else is names, parsed as every command's --tracks."""
    if value and len(value) == 1 and Path(value[0]).is_file():
        return list(value)
    return names_callback(ctx, param, value)


@handle_errors
def run(
    checkpoint: Annotated[Path, typer.Argument(
        help="A published Epiformer checkpoint (e.g. <prefix>.<name>.best_corr.pth.tar).", readable=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (e.g. brain.pt).")],
    tracks: Annotated[Optional[List[str]], typer.Option(
        "--tracks", metavar="<names>", callback=_names_or_file,
        help=f"Track names in output order, {names_syntax('--tracks')}, or a file of one name per line "
             "[default: track1..N, with a warning].")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": the model file at --out.")] = False,
) -> None:
    """Convert a published Epiformer checkpoint into an epiformer model file.

    The checkpoint is read as plain data (no code in it can run, a GPU-saved file loads on a CPU),
    every weight is checked against the published architecture, and the model file carries the
    track names and the checkpoint's name, checksum and settings. Then use it as --model (or
    EPIFORMER_MODEL) with predict, score-variants and train --init.
    """
    from epiformer_cli.jobs.import_model import import_model

    summary = import_model(checkpoint, out, tracks=tracks, force=force)
    log.info("%s", summary.describe())
