"""The command-line face: help, version, exit codes, one-line errors."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from epiformer_cli import __version__
from epiformer_cli.cli.app import app

runner = CliRunner()
COMMANDS = ["prepare", "train", "predict", "score-variants", "export-bigwig", "demo"]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"epiformer {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["demo", "--no-such-option"])
    assert result.exit_code == 2


def test_start_up_does_not_import_torch():
    code = "import sys, epiformer_cli.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_runs_the_app():
    out = subprocess.run([sys.executable, "-m", "epiformer_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"epiformer {__version__}"


def test_not_yet_available_command_is_one_line_exit_2():
    out = subprocess.run([sys.executable, "-m", "epiformer_cli", "predict", "--fasta", "x.fa"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epiformer: error:") and "predict" in lines[0]
    assert "Traceback" not in out.stderr
    verbose = subprocess.run([sys.executable, "-m", "epiformer_cli", "-v", "predict"], capture_output=True, text=True)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
