"""`epiformer prepare`: Build a training store from a genome FASTA, a conservation bigWig and target bigWigs."""

from __future__ import annotations

import typer

from epiformer_cli.cli.common import handle_errors
from epiformer_cli.errors import NotYetAvailableError


def register(app: typer.Typer) -> None:
    app.command(
        "prepare",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)


@handle_errors
def run(ctx: typer.Context) -> None:
    """Build a training store from a genome FASTA, a conservation bigWig and target bigWigs.

    Not in this release yet (planned in issue #3); exits with code 2.
    """
    raise NotYetAvailableError("`epiformer prepare` is not available in this release yet (planned in issue #3)")
