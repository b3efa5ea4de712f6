"""Defaults that compose (issue 22): `prepare` then `train` with no preset trains the preset of the
store's windows, fine-tuning defaults to the published models' learning rate, the presets are
described where users choose them, and only rank 0 of a torchrun launch reports the run."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.model.config import (
    PRESET_NOTES,
    PRESETS,
    ModelConfig,
    describe_preset,
    preset,
    preset_for_window,
)
from epiformer_cli.model.modelfile import save_model
from epiformer_cli.model.network import build_network, count_parameters
from epiformer_cli.training.checkpoint import load_checkpoint
from epiformer_cli.training.trainer import TrainSummary
from tests import helpers

runner = CliRunner()

#: chromosomes long enough for the tiny preset's 16,384 bp windows: 4 train, 1 valid (chr8), 1 test (chr9)
LONG_CHROMS = {"chr1": 66_000, "chr8": 17_000, "chr9": 17_000}
FAST = ["--batch-size", "2", "--workers", "0", "--device", "cpu", "--warmup-steps", "1", "--max-steps", "1"]


def write_inputs(root: Path) -> dict:
    """A FASTA, a conservation bigWig and a targets sheet of two bigWigs over ``LONG_CHROMS``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    seqs = {c: "".join(rng.choice(list("ACGT"), size=n)) for c, n in LONG_CHROMS.items()}
    helpers.write_fasta(root / "g.fa", seqs)
    helpers.write_bigwig(root / "cons.bw", LONG_CHROMS,
                         {c: [(s, s + 100, float(rng.random())) for s in range(0, n - 100, 100)]
                          for c, n in LONG_CHROMS.items()})
    for name in ("a", "b"):
        helpers.write_bigwig(root / f"{name}.bw", LONG_CHROMS,
                             {c: [(s, s + 64, float(rng.exponential())) for s in range(0, n - 64, 64)]
                              for c, n in LONG_CHROMS.items()})
    (root / "targets.tsv").write_text("name\tpath\nA\ta.bw\nB\tb.bw\n")
    return {"fasta": root / "g.fa", "cons": root / "cons.bw", "targets": root / "targets.tsv"}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """A store made by the command `prepare --preset tiny` (16,384 bp windows)."""
    root = tmp_path_factory.mktemp("compose")
    inputs = write_inputs(root)
    result = runner.invoke(app, ["prepare", "--fasta", str(inputs["fasta"]), "--cons", str(inputs["cons"]),
                                 "--targets", str(inputs["targets"]), "--preset", "tiny", "--out", str(root / "store")])
    assert result.exit_code == 0, result.output
    return root / "store"


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """The tests' 4,096 bp store (a window no preset has), its model config and a model file of it."""
    root = tmp_path_factory.mktemp("window4096")
    store = helpers.make_tiny_store(root)
    cfg = ModelConfig.from_dict({**helpers.TEST_CONFIG, "n_tracks": 2})
    torch.manual_seed(3)
    init = save_model(root / "init.pt", build_network(cfg), cfg, ["A", "B"], provenance={"tool": "test"})
    return {"store": store, "config": root / "model.json", "init": init}


def train(store: Path, out: Path, *extra) -> object:
    return runner.invoke(app, ["train", "--data", str(store), "--out", str(out), *FAST, *map(str, extra)])


def error_lines(result) -> list:
    return [line for line in result.stderr.splitlines() if line.startswith("epiformer: error:")]


# ---- the preset of the store's window ------------------------------------------------------------
def test_without_lr_each_preset_trains_at_its_suggested_rate():
    from epiformer_cli.jobs.train import FINETUNE_LR, default_lr
    from epiformer_cli.options import TrainOptions

    assert {name: default_lr(None, name) for name in PRESETS} == {
        "epiformer": 1e-4, "published": 1e-4, "small": 5e-4, "tiny": 2e-3}
    assert default_lr("m.pt", "tiny") == FINETUNE_LR == 1e-4  # fine-tuning wins
    assert default_lr(None) == TrainOptions.lr == 2e-3  # a --config model



def test_the_preset_of_a_window_prefers_the_fresh_network():
    assert [preset_for_window(w) for w in (16_384, 32_768, 98_304, 4_096)] == ["tiny", "small", "epiformer", None]


@pytest.mark.slow  # trains
def test_prepare_then_train_with_no_preset_trains_the_tiny_preset(tiny_store, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_store, out)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines.count("epiformer: model: preset tiny (from the store's 16,384 bp windows)") == 1
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["model"] == preset("tiny", n_tracks=2).to_dict()
    assert recorded["training"]["lr"] == 0.002

    # a run trained with --preset tiny resumes without --preset, and says nothing of a chosen preset
    named = tmp_path / "named"
    assert train(tiny_store, named, "--preset", "tiny").exit_code == 0
    resumed = runner.invoke(app, ["train", "--data", str(tiny_store), "--out", str(named), "--resume",
                                  "--max-steps", "2", "--workers", "0", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(named / "last.pt")["step"] == 2
    assert not [line for line in resumed.stderr.splitlines() if "model: preset" in line]


def test_a_store_of_a_window_no_preset_has_exits_2_naming_real_values(small_store, tmp_path):
    store = small_store["store"]
    result = train(store, tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [(
        f"epiformer: error: the store {store} holds 4096 bp windows, the input length of no preset: pass --config "
        "with a model config JSON whose \"seq_len\" is 4096, or run `epiformer prepare` again with one of "
        "--preset tiny (16384 bp), --preset small (32768 bp), --preset epiformer (98304 bp) (see epiformer train -h)")]
    assert not (tmp_path / "run").exists()


def test_a_preset_that_does_not_fit_names_the_preset_to_prepare_for(small_store, tmp_path):
    store = small_store["store"]
    result = train(store, tmp_path / "run", "--preset", "small")
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [(
        f"epiformer: error: --preset small takes 32768 bp windows but the store {store} holds 4096 bp windows: "
        "run `epiformer prepare` again with --preset small (or --window 32768), or train a model of 4096 bp "
        "windows (--config with \"seq_len\": 4096) (see epiformer train -h)")]


def test_a_config_that_does_not_fit_names_its_window_and_the_store_s_preset(small_store, tiny_store, tmp_path):
    config = small_store["config"]
    result = train(tiny_store, tmp_path / "run", "--config", config)
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [(
        f"epiformer: error: --config {config} takes 4096 bp windows but the store {tiny_store} holds 16384 bp "
        "windows: run `epiformer prepare` again with --window 4096, or drop --config to train --preset tiny, "
        "the preset of the store's windows (see epiformer train -h)")]


# ---- the learning rate of fine-tuning -------------------------------------------------------------
FINE_TUNE_LINE = "epiformer: fine-tuning at --lr 0.0001 (the default with --init; pass --lr to change it)"


@pytest.mark.slow  # trains
def test_init_without_lr_fine_tunes_at_the_published_rate_and_says_so_once(small_store, tmp_path):
    out = tmp_path / "run"
    result = train(small_store["store"], out, "--init", small_store["init"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines().count(FINE_TUNE_LINE) == 1
    assert json.loads((out / "config.json").read_text())["training"]["lr"] == 1e-4
    assert load_checkpoint(out / "last.pt")["options"]["lr"] == 1e-4

    # resumed without --init or --lr: the run's rate, not the from-scratch default, and no second notice
    resumed = runner.invoke(app, ["train", "--data", str(small_store["store"]), "--out", str(out), "--resume",
                                  "--max-steps", "2", "--workers", "0", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert FINE_TUNE_LINE not in resumed.stderr.splitlines()
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 2 and state["options"]["lr"] == 1e-4
    # typed, the from-scratch rate is refused: it is not the run's
    typed = runner.invoke(app, ["train", "--data", str(small_store["store"]), "--out", str(out), "--resume",
                                "--max-steps", "3", "--lr", "0.002", "--workers", "0", "--device", "cpu"])
    assert typed.exit_code == 2 and "--lr: 0.0001 in the run, 0.002 now" in typed.stderr, typed.output


@pytest.mark.slow  # trains
def test_init_with_lr_keeps_the_given_rate(small_store, tmp_path):
    out = tmp_path / "run"
    result = train(small_store["store"], out, "--init", small_store["init"], "--lr", "0.002")
    assert result.exit_code == 0, result.output
    assert not [line for line in result.stderr.splitlines() if "fine-tuning at" in line]
    assert json.loads((out / "config.json").read_text())["training"]["lr"] == 0.002


# ---- the presets, described ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_note_counts_the_built_network_s_parameters(name):
    cfg = PRESETS[name]
    assert count_parameters(build_network(cfg)) == PRESET_NOTES[name].parameters
    # each more track adds one output row of the head
    assert count_parameters(build_network(cfg.replace(n_tracks=2))) == PRESET_NOTES[name].parameters + cfg.head_hidden + 1


def test_a_preset_s_one_line_description():
    assert set(PRESET_NOTES) == set(PRESETS)
    assert describe_preset("tiny") == ("tiny: 16,384 bp in, 96 bins x 128 bp = 12,288 bp out, 180,588 parameters "
                                       "(1 track), 2 layers x 64, --lr 0.002; tests and the demo (a few minutes on a CPU)")


def _help(command: str) -> str:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # the help as one line, whatever the terminal's width


def test_train_and_prepare_help_list_every_preset_with_its_numbers():
    train_help, prepare_help = _help("train"), _help("prepare")
    for name, cfg in PRESETS.items():
        note = PRESET_NOTES[name]
        assert f"{name} ({cfg.seq_len:,} bp;" in prepare_help, name
        numbers = f"{name} ({cfg.seq_len:,} bp, {cfg.out_bp:,} bp, {note.parameters / 1e6:.1f} M, {note.lr:g};"
        assert numbers in train_help, numbers
    assert "the preset's suggested rate (tiny 0.002, small 0.0005, epiformer and published 0.0001)" in train_help
    assert "0.0001 with --init" in train_help
    assert "the preset of the store's window length" in train_help


def test_demo_help_lists_every_step():
    from epiformer_cli.jobs.demo import DEMO_EXPLAIN_ELEMENTS
    from epiformer_cli.options import DEFAULT_NULL_SIZE

    text = _help("demo")
    steps = re.findall(r"\d\. ([a-z-]+):", text)
    assert steps == ["data", "prepare", "train", "predict", "explain", "motifs", "score-variants", "summary"]
    assert f"null of {DEFAULT_NULL_SIZE:,} SNVs" in text and "calibration plots" in text
    assert f"{DEMO_EXPLAIN_ELEMENTS} test-chromosome elements by ISM and by gradient" in text
    assert f"{PRESETS['tiny'].seq_len:,} bp windows" in text


# ---- torchrun: rank 0 reports -------------------------------------------------------------------
CLOSING = "epiformer: RUN/model.pt: best valid Pearson 0.500 at step 3 (0 s of training)"


@pytest.mark.parametrize("rank, expected", [
    ("0", ["epiformer: step note", "epiformer: warning: a warning", CLOSING]),
    ("1", ["epiformer: warning: a warning"]),
])
def test_a_process_other_than_rank_0_says_only_warnings(monkeypatch, tmp_path, rank, expected, request):
    import epiformer_cli.jobs.train as job

    package_log = logging.getLogger("epiformer_cli")
    request.addfinalizer(lambda level=package_log.level: package_log.setLevel(level))  # rank 1 lowers it

    def fake_train_model(progress=None, **kw):
        log = logging.getLogger("epiformer_cli.jobs.train")
        log.info("step note")
        log.warning("a warning")
        progress(1, loss=0.5)
        return TrainSummary(out=kw["out"], steps=3, epochs_done=1.0, best_pearson=0.5, best_step=3, rank=int(rank))

    monkeypatch.setattr(job, "train_model", fake_train_model)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", rank)
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", "RUN"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == expected
