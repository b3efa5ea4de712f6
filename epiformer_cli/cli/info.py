"""`epiformer info`: print what a model file holds (family, input, output, tracks, provenance)."""

from __future__ import annotations

import json
from typing import Annotated, Optional
from pathlib import Path

import typer

from epiformer_cli.cli.common import ThreadsOption, apply_threads, handle_errors, required_unless
from epiformer_cli.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("info")(run)


@handle_errors
def run(
    model: Annotated[Optional[Path], typer.Argument(
        envvar="EPIFORMER_MODEL", show_envvar=False, readable=False,
        help="Model file. " + required_unless("EPIFORMER_MODEL is set"))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as one JSON object.")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Describe a model file: architecture, input length and conservation, output bins, tracks,
    where it came from. Reads it as every command does (plain data, every weight checked). Then
    how this machine computes: the CPUs this process may use, the threads, the OpenMP wait policy."""
    from epiformer_cli.jobs.info import describe_info, describe_machine, machine_info, model_info

    if model is None:
        raise UsageError("no model file: give one (epiformer info brain.pt) or set EPIFORMER_MODEL")
    apply_threads(threads)
    info = model_info(model)
    info["machine"] = machine_info()
    if as_json:
        typer.echo(json.dumps(info, indent=1))
    else:
        typer.echo("\n".join(describe_info(info) + describe_machine(info["machine"])))
