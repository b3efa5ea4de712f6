"""The ``epiformer`` Typer app: global options and the subcommands, one module each."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
import typer.core

from epiformer_cli import __version__
from epiformer_cli.cli import (
    cache, demo, evaluate, explain, export_bigwig, import_model, info, motifs, predict, prepare, pseudobulk, score_variants,
    train,
)
from epiformer_cli.cli.common import closed_stdout, configure_logging, install_signal_handlers, one_line_usage_errors


class _Group(typer.core.TyperGroup):
    """Typer's group whose option-parsing errors (an unknown command or option, a bad, missing or
    valueless option) are one line, ``epiformer: error: <what> (see epiformer CMD -h)``, exit 2, in
    the console script and in a test's CliRunner alike: both run the group's own main(). (The app
    keeps rich_markup_mode=None: in rich mode Typer would draw its own error panel instead.)"""

    def make_context(self, info_name, args, parent=None, **extra):
        with one_line_usage_errors(info_name or self.name or "epiformer"):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        # a subcommand's options are parsed here, when the group starts it
        with one_line_usage_errors(ctx.command_path, ctx):
            return super().invoke(ctx)


app = typer.Typer(
    name="epiformer",
    cls=_Group,
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


for module in (pseudobulk, prepare, train, evaluate, predict, score_variants, explain, motifs, export_bigwig, import_model, info, cache,
               demo):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    from epiformer_cli.threads import set_wait_policy

    if len(sys.argv) > 1 and not {"-h", "--help", "--version"} & set(sys.argv[1:]):
        set_wait_policy()  # before torch is imported: its OpenMP runtime reads the variables once, when loaded
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
