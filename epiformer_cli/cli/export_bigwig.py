"""`epiformer export-bigwig`: Turn a prediction store (or shards) or a prepared store's targets into bigWig tracks."""

from __future__ import annotations

import typer

from epiformer_cli.cli.common import handle_errors
from epiformer_cli.errors import NotYetAvailableError


def register(app: typer.Typer) -> None:
    app.command(
        "export-bigwig",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)


@handle_errors
def run(ctx: typer.Context) -> None:
    """Turn a prediction store (or shards) or a prepared store's targets into bigWig tracks.

    Not in this release yet (planned in issue #4); exits with code 2.
    """
    raise NotYetAvailableError("`epiformer export-bigwig` is not available in this release yet (planned in issue #4)")
