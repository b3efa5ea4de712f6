"""Write the README's option tables from the command line itself, so every option of every command
is in a table and the README and ``--help`` say the same.

    python docs/make_option_tables.py          # rewrites the block between the markers in README.md

``tests/test_readme.py`` checks that README.md holds exactly what :func:`render_option_tables` makes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

START, END = "<!-- options:start -->", "<!-- options:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param) -> str:
    if getattr(param, "is_flag", False):
        return "off" if not param.default else "on"
    if param.default is None or param.default == () or param.default == []:
        return ""
    value = param.default
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return f"`{value}`"


def render_option_tables() -> str:
    """One markdown table per command: its arguments and options, their help and defaults, in
    the order ``epiformer CMD --help`` lists them."""
    import click
    import typer.main

    from epiformer_cli.cli.app import app

    def commands(group, prefix=""):
        """(name, command) of every command, a group's own commands as ``group command``."""
        for name, command in group.commands.items():
            if getattr(command, "commands", None):  # a group (typer may carry its own click)
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    parts: List[str] = []
    for name, command in commands(typer.main.get_command(app)):
        rows = ["| option | meaning | default |", "| --- | --- | --- |"]
        for param in command.params:
            if isinstance(param, click.Argument):
                label = f"`{param.human_readable_name.upper()}`"
                rows.append(f"| {label} | {_cell(getattr(param, 'help', '') or '(argument)')} | |")
                continue
            if param.hidden if hasattr(param, "hidden") else False:
                continue
            flags = [*param.opts, *param.secondary_opts]
            if "--help" in flags:
                continue
            label = " / ".join(f"`{flag}`" for flag in flags)
            help_text = _cell(param.help or "")
            if param.required:
                help_text = f"(required) {help_text}"
            rows.append(f"| {label} | {help_text} | {_default(param)} |")
        parts.append(f"#### `epiformer {name}`\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the markers replaced by ``block``."""
    if START not in text or END not in text:
        raise SystemExit(f"{README}: the markers {START} and {END} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main() -> int:
    README.write_text(replace_block(README.read_text(), render_option_tables()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
