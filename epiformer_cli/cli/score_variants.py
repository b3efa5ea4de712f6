"""`epiformer score-variants`: Score the effect of every VCF variant on predicted accessibility."""

from __future__ import annotations

import typer

from epiformer_cli.cli.common import handle_errors
from epiformer_cli.errors import NotYetAvailableError


def register(app: typer.Typer) -> None:
    app.command(
        "score-variants",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(run)


@handle_errors
def run(ctx: typer.Context) -> None:
    """Score the effect of every VCF variant on predicted accessibility.

    Not in this release yet (planned in issue #5); exits with code 2.
    """
    raise NotYetAvailableError("`epiformer score-variants` is not available in this release yet (planned in issue #5)")
