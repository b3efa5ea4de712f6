"""`epiformer cache`: list or clear what epiformer keeps in its cache folder (nulls, file identities,
FASTA indexes, numba kernels)."""

from __future__ import annotations

import json
from typing import Annotated, List, Optional

import typer

from epiformer_cli.cli.common import handle_errors

KINDS_HELP = "Kinds of entries: nulls, identities, fasta-index, numba (repeat the option; default: all)."


def register(app: typer.Typer) -> None:
    group = typer.Typer(cls=app.info.cls, no_args_is_help=True, rich_markup_mode=None,
                        help="List or clear the cache folder: score-variants' nulls, file identities, FASTA "
                             "indexes, numba kernels ($EPIFORMER_CACHE_DIR, else ~/.cache/epiformer).")
    group.command("list")(list_entries)
    group.command("clear")(clear)
    app.add_typer(group, name="cache")


@handle_errors
def list_entries(
    kind: Annotated[Optional[List[str]], typer.Option("--kind", help=KINDS_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as one JSON object.")] = False,
) -> None:
    """List the cache folder: one line per kind, one per null (its SNVs, seed, model, genome, options;
    ready, being scored by a live run, or interrupted)."""
    from epiformer_cli.io.identity import cache_dir
    from epiformer_cli.jobs.cache import cache_entries, describe_entries

    entries = cache_entries(kind)
    if as_json:
        typer.echo(json.dumps({"folder": str(cache_dir()), "entries": [e.to_dict() for e in entries]}, indent=1))
    else:
        typer.echo("\n".join(describe_entries(cache_dir(), entries)))


@handle_errors
def clear(
    kind: Annotated[Optional[List[str]], typer.Option("--kind", help=KINDS_HELP)] = None,
) -> None:
    """Remove the cache folder's entries (each is made again when next needed); a null a live run is
    scoring is kept."""
    from epiformer_cli.io.identity import cache_dir
    from epiformer_cli.jobs.cache import clear_cache, human_bytes

    done = clear_cache(kind)
    kept = f"; kept {len(done['kept'])} null(s) being scored by a live run" if done["kept"] else ""
    typer.echo(f"removed {done['removed']} entr{'y' if done['removed'] == 1 else 'ies'} "
               f"({human_bytes(done['bytes'])}) from {cache_dir()}{kept}", err=True)
