"""Option-parsing errors are one line: ``epiformer: error: <what> (see epiformer CMD -h)``, exit 2.

Every registered command (read from the app, so a new command is covered the day it is added) is
given an unknown flag, a word for a number, and each of its required options left out; none may
print Click's usage block or a traceback. Our own usage errors end with the same pointer. One case
runs through a real ``python -m epiformer_cli`` process, the console path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Optional

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.cli.common import handle_errors
from epiformer_cli.errors import UsageError

runner = CliRunner()


def _commands() -> Dict[str, object]:
    """The subcommands the app registers, name -> Click command."""
    return dict(typer.main.get_command(app).commands)


COMMANDS = _commands()


def _is_option(param) -> bool:
    return getattr(param, "param_type_name", None) == "option"


def _long_name(param) -> str:
    return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])


def _number_kind(param) -> Optional[type]:
    """int or float for a single-valued number option, else None. Typer with its own Click keeps the
    annotation in ``type_descriptor``; Typer on the click package gives Click's INT/FLOAT types."""
    if not _is_option(param) or param.nargs != 1 or param.multiple or getattr(param, "is_flag", False):
        return None
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return descriptor.annotation if descriptor.annotation in (int, float) else None
    name = getattr(getattr(param, "type", None), "name", "")
    return {"integer": int, "float": float}.get(name)


def _number_option(command) -> Optional[str]:
    return next((_long_name(p) for p in command.params if _number_kind(p) is not None), None)


def _required_args(command, leave_out=None) -> List[str]:
    """Dummy values for every required parameter of ``command`` but ``leave_out`` (parsing fails
    before any of them is used)."""
    args: List[str] = []
    for param in command.params:
        if not param.required or param is leave_out:
            continue
        args += [_long_name(param), "x"] if _is_option(param) else ["x"]
    return args


def one_line(result, command_path: str) -> str:
    """The refused command's one stderr line, checked for everything every such line promises."""
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("epiformer: error: ")
    assert line.endswith(f" (see {command_path} -h)"), line
    assert "Usage:" not in result.stderr and "Traceback" not in result.stderr and "Error:" not in line
    assert not line.rstrip(")").endswith(".")
    assert result.stdout == ""
    return line


def test_the_walk_covers_the_commands():
    assert {"train", "predict", "score-variants"} <= set(COMMANDS)
    with_numbers = [name for name, command in COMMANDS.items() if _number_option(command)]
    assert {"train", "predict", "score-variants"} <= set(with_numbers)
    assert 2 * len(with_numbers) > len(COMMANDS), with_numbers
    assert any(p.required for p in COMMANDS["train"].params)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unknown_flag(name):
    result = runner.invoke(app, [name, "--no-such-flag"])
    line = one_line(result, f"epiformer {name}")
    assert line.startswith("epiformer: error: no such option --no-such-flag")


@pytest.mark.parametrize("name", sorted(n for n, c in COMMANDS.items() if _number_option(c)))
def test_a_word_for_a_number(name):
    option = _number_option(COMMANDS[name])
    result = runner.invoke(app, [name, *_required_args(COMMANDS[name]), option, "abc"])
    line = one_line(result, f"epiformer {name}")
    assert f"epiformer: error: invalid value for {option}: 'abc' is not a valid " in line


REQUIRED = [(name, param) for name, command in sorted(COMMANDS.items()) for param in command.params if param.required]


@pytest.mark.parametrize("name, param", REQUIRED, ids=[f"{n}-{p.name}" for n, p in REQUIRED])
def test_a_missing_required_parameter(name, param):
    result = runner.invoke(app, [name, *_required_args(COMMANDS[name], leave_out=param)])
    line = one_line(result, f"epiformer {name}")
    if _is_option(param):
        assert line == f"epiformer: error: missing option {_long_name(param)} (see epiformer {name} -h)"
    else:
        assert line.startswith("epiformer: error: missing argument ")
        assert param.name.lower() in line.lower()


def test_the_required_options_include_trains_data():
    assert ("train", "data") in {(n, p.name) for n, p in REQUIRED}


@pytest.mark.parametrize("args, expected", [
    (["train", "--epochs", "abc"], "invalid value for --epochs: 'abc' is not a valid integer (see epiformer train -h)"),
    (["train", "--out", "x"], "missing option --data (see epiformer train -h)"),
    (["train", "--data", "d", "--out", "o", "--lr", "fast"],
     "invalid value for --lr: 'fast' is not a valid number (see epiformer train -h)"),
    (["train", "--epoch", "3"], "no such option --epoch; did you mean --epochs? (see epiformer train -h)"),
    # an option missing its value: Click's error has no context, the pointer still names the command
    (["predict", "--device"], "option --device requires an argument (see epiformer predict -h)"),
    (["frobnicate"], "no such command 'frobnicate' (see epiformer -h)"),
    (["trian"], "no such command 'trian'; did you mean 'train'? (see epiformer -h)"),
    (["-q"], "missing command (see epiformer -h)"),
    (["--no-such-flag", "train"], "no such option --no-such-flag (see epiformer -h)"),
])
def test_exact_lines(args, expected):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [f"epiformer: error: {expected}"]


def test_our_own_usage_error_points_at_help_too():
    result = runner.invoke(app, ["demo", "--epochs", "0"])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == ["epiformer: error: --epochs must be at least 1, got 0 (see epiformer demo -h)"]


def test_a_message_that_already_names_help_gets_no_second_pointer():
    mini = typer.Typer(name="mini")

    @mini.command("plain")
    @handle_errors
    def plain() -> None:
        raise UsageError("two options contradict each other: choose one")

    @mini.command("helped")
    @handle_errors
    def helped() -> None:
        raise UsageError("no region given: see `mini helped --help`")

    @mini.command("runtime")
    @handle_errors
    def runtime() -> None:
        from epiformer_cli.errors import InputFileError

        raise InputFileError("x.fa: not found")

    assert runner.invoke(mini, ["plain"], prog_name="mini").stderr.splitlines() == [
        "epiformer: error: two options contradict each other: choose one (see mini plain -h)"]
    assert runner.invoke(mini, ["helped"], prog_name="mini").stderr.splitlines() == [
        "epiformer: error: no region given: see `mini helped --help`"]
    runtime_result = runner.invoke(mini, ["runtime"], prog_name="mini")
    assert runtime_result.exit_code == 1  # a runtime error gets no pointer: help would not fix it
    assert runtime_result.stderr.splitlines() == ["epiformer: error: x.fa: not found"]


def test_help_and_version_are_unchanged():
    bare = runner.invoke(app, [])
    assert "Usage:" in bare.output and "Commands" in bare.output and "epiformer: error" not in bare.output
    helped = runner.invoke(app, ["train", "-h"])
    assert helped.exit_code == 0 and "Usage:" in helped.stdout and helped.stderr == ""
    assert runner.invoke(app, ["--version"]).exit_code == 0


def test_through_a_real_process():
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPIFORMER_")}
    out = subprocess.run([sys.executable, "-m", "epiformer_cli", "train", "--epochs", "abc"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "epiformer: error: invalid value for --epochs: 'abc' is not a valid integer (see epiformer train -h)"]
    assert out.stdout == ""
