"""`epiformer train`: Train an Epiformer model on a prepared store (CPU, one GPU, or many GPUs with torchrun)."""

from __future__ import annotations

import typer

from epiformer_cli.cli.common import handle_errors
from epiformer_cli.errors import NotYetAvailableError


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)


@handle_errors
def run(ctx: typer.Context) -> None:
    """Train an Epiformer model on a prepared store (CPU, one GPU, or many GPUs with torchrun).

    Not in this release yet (planned in issue #3); exits with code 2.
    """
    raise NotYetAvailableError("`epiformer train` is not available in this release yet (planned in issue #3)")
