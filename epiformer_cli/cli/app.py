"""The ``epiformer`` Typer app: global options and the subcommands, one module each."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from epiformer_cli import __version__
from epiformer_cli.cli import demo, explain, export_bigwig, import_model, info, predict, prepare, score_variants, train
from epiformer_cli.cli.common import closed_stdout, configure_logging, install_signal_handlers

app = typer.Typer(
    name="epiformer",
    help="Predict chromatin accessibility from DNA and conservation with Epiformer, "
    "and score what variants do to it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"epiformer {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging and tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only warnings and errors; no progress bars.")] = False,
) -> None:
    """Global options; logging is configured here once for every command."""
    configure_logging(verbose=verbose, quiet=quiet)


for module in (prepare, train, predict, score_variants, explain, export_bigwig, import_model, info, demo):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    install_signal_handlers()
    try:
        app(prog_name="epiformer")
    except SystemExit as done:
        status = done.code
    else:
        status = 0
    try:
        sys.stdout.flush()  # buffered rows the reader may no longer want (`| head`)
    except BrokenPipeError:
        status = closed_stdout()
    sys.exit(status)
