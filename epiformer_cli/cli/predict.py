"""`epiformer predict`: Predict accessibility genome-wide or over regions and write bigWig tracks."""

from __future__ import annotations

import typer

from epiformer_cli.cli.common import handle_errors
from epiformer_cli.errors import NotYetAvailableError


def register(app: typer.Typer) -> None:
    app.command(
        "predict",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)


@handle_errors
def run(ctx: typer.Context) -> None:
    """Predict accessibility genome-wide or over regions and write bigWig tracks.

    Not in this release yet (planned in issue #4); exits with code 2.
    """
    raise NotYetAvailableError("`epiformer predict` is not available in this release yet (planned in issue #4)")
