"""`epiformer export-bigwig`: a prediction store (or its shards) or a prepared store's targets -> bigWigs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from epiformer_cli.cli.common import FORCE_HELP, TracksOption, handle_errors, progress_bar

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("export-bigwig")(run)


@handle_errors
def run(
    store: Annotated[Path, typer.Argument(help="Store folder from `epiformer predict` or `epiformer prepare`.", readable=False)],
    out: Annotated[Path, typer.Option(
        "--out", "-o",
        help="bigWig to write. With one track this is the file; with several, one file per track "
             "beside it: pred.bw -> pred.<track>.bw.")],
    tracks: TracksOption = None,
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing", help="Export an incomplete prediction store; missing bins get no data (never zero).")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": bigWigs that already exist.")] = False,
) -> None:
    """Turn a prediction store (complete, or the union of its shards) into one bigWig per track, or
    export a `prepare` store's normalised targets to view beside the predictions.

    An incomplete store is refused with the list of missing chunks (and the shards they belong to)
    unless --allow-missing.
    """
    from epiformer_cli.jobs.export import export_bigwig

    with progress_bar("export", unit="chunks") as advance:
        summary = export_bigwig(store=store, out=out, tracks=tracks, allow_missing=allow_missing, progress=advance,
                                overwrite=force)
    log.info("%s", summary.describe())
