"""The command-line face: help, version, exit codes, one-line errors."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from epiformer_cli import __version__
from epiformer_cli.cli.app import app

runner = CliRunner()
COMMANDS = ["pseudobulk", "prepare", "train", "evaluate", "predict", "score-variants", "explain", "motifs", "export-bigwig",
            "import-model", "info", "demo"]


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


def test_errors_are_one_line_without_traceback(tmp_path):
    """Through the real entry point: a missing input is one line on stderr, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPIFORMER_")}
    args = [sys.executable, "-m", "epiformer_cli", "prepare", "--fasta", str(tmp_path / "missing.fa"),
            "--no-cons", "--targets", "t.tsv", "--out", str(tmp_path / "store")]
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epiformer: error:") and "missing.fa" in lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "store").exists()
    verbose = subprocess.run(args[:3] + ["-v"] + args[3:], capture_output=True, text=True, env=env)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_usage_errors_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPIFORMER_")}
    out = subprocess.run([sys.executable, "-m", "epiformer_cli", "predict", "--fasta", "x.fa"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["epiformer: error: missing option --model (or set EPIFORMER_MODEL) "
                                                "(see epiformer predict -h)"]
