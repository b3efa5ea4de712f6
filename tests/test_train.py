"""Training: losses, metrics, schedule, checkpoints, and `epiformer train` end to end on a tiny store."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.jobs.train import TrainOptions
from epiformer_cli.training.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from epiformer_cli.training.losses import poisson_loss, poisson_multinomial_loss
from epiformer_cli.training.metrics import PearsonAccumulator
from epiformer_cli.training.schedule import lr_factor
from tests.helpers import float_tolerance, make_tiny_store

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    store = make_tiny_store(root)
    return store, root / "model.json"


def train_args(store, config, out, *extra):
    return ["train", "--data", str(store), "--out", str(out), "--config", str(config), "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--warmup-steps", "2", *map(str, extra)]


def train(store, config, out, *extra):
    return runner.invoke(app, train_args(store, config, out, *extra))


def read_metrics(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def state_of(path: Path):
    return load_checkpoint(path)["model"]


# -- pieces --------------------------------------------------------------------------------------
def test_poisson_loss_is_the_poisson_nll_on_rates():
    pred = torch.tensor([[[0.5, 2.0, 1.0]]])
    target = torch.tensor([[[1.0, 0.0, 3.0]]])
    expected = np.mean([0.5 - 1.0 * math.log(0.5), 2.0, 1.0 - 3.0 * math.log(1.0)])
    # float32: log, multiply, subtract, mean of 3 terms of size <= 2 (3 deep); a dropped term is 0.2 off
    tol = float_tolerance(2.0, terms=3, depth=3)
    assert poisson_loss(pred, target).item() == pytest.approx(expected, rel=0, abs=tol)


def test_poisson_multinomial_prefers_the_right_shape_and_total():
    target = torch.tensor([[[1.0, 3.0, 0.0, 4.0]]])
    right = poisson_multinomial_loss(target.clone() + 1e-6, target)
    wrong_shape = poisson_multinomial_loss(target.flip(-1) + 1e-6, target)
    wrong_total = poisson_multinomial_loss(3 * target + 1e-6, target)
    assert right < wrong_shape and right < wrong_total


def test_pearson_accumulator_matches_numpy_and_ignores_batching():
    rng = np.random.default_rng(0)
    pred = rng.exponential(size=(6, 3, 10)).astype(np.float32)
    target = (pred * rng.uniform(0.5, 1.5, size=pred.shape)).astype(np.float32)
    whole, parts = PearsonAccumulator(3), PearsonAccumulator(3)
    whole.update(torch.from_numpy(pred), torch.from_numpy(target))
    for i in range(0, 6, 4):
        parts.update(torch.from_numpy(pred[i:i + 4]), torch.from_numpy(target[i:i + 4]))
    for t in range(3):
        x, y = (np.log1p(a[:, t].ravel().astype(np.float64)) for a in (pred, target))
        ref = np.corrcoef(x, y)[0, 1]
        # float64 sums of 60 terms, 3 deep (sums, moments, r); the one-pass variance cancels by
        # 1 + mean**2 / variance (3.5 here): 2e-14. A wrong transform or track moves r by >= 1e-2
        kappa = 1 + max(x.mean() ** 2 / x.var(), y.mean() ** 2 / y.var())
        tol = float_tolerance(kappa, terms=x.size, depth=3, dtype=torch.float64)
        assert whole.pearson()[t].item() == pytest.approx(ref, rel=0, abs=tol)
    # the same float64 sums in two parts: another order of 60 terms
    tol = float_tolerance(whole.stats.abs().max(), terms=pred.shape[0] * pred.shape[2], dtype=torch.float64)
    torch.testing.assert_close(whole.stats, parts.stats, rtol=0, atol=tol)
    assert whole.summary(["a", "b", "c"])["pearson"] == pytest.approx(float(whole.pearson().mean()))


def test_constant_predictions_give_pearson_zero_not_nan():
    acc = PearsonAccumulator(1)
    acc.update(torch.ones(2, 1, 5), torch.rand(2, 1, 5))
    assert acc.pearson().item() == 0.0


def test_schedule_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, 10, 100, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(3)
    state = {"format_version": 1, "w": torch.randn(3), "rng": rng_state(), "step": 4, "best": {"pearson": -math.inf}}
    atomic_save(state, tmp_path / "last.pt")
    expected = torch.rand(2)
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 4
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(2), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# -- the command ---------------------------------------------------------------------------------
def test_train_help():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "--max-steps" in result.output and "--resume" in result.output


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--epochs", "0"], ["--lr", "-1"], ["--loss", "mse"],
                                 ["--precision", "fp8"], ["--accumulate", "0"]])
def test_bad_options_exit_2_with_one_line(tiny, tmp_path, bad):
    store, config = tiny
    result = train(store, config, tmp_path / "run", *bad)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.startswith("epiformer: error")]
    assert len(lines) == 1
    assert not (tmp_path / "run").exists()


def test_missing_store_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "epiformer prepare" in result.output


def test_window_mismatch_says_to_prepare_again(tiny, tmp_path):
    store, _ = tiny
    result = runner.invoke(app, ["train", "--data", str(store), "--out", str(tmp_path / "r"), "--preset", "tiny"])
    assert result.exit_code == 2
    assert "16384" in result.output and "--window" in result.output


@pytest.mark.slow  # trains
def test_train_writes_a_run_and_refuses_to_overwrite_it(tiny, tmp_path):
    store, config = tiny
    out = tmp_path / "run"
    result = train(store, config, out, "--epochs", "2")
    assert result.exit_code == 0, result.output
    for name in ("model.pt", "last.pt", "metrics.tsv", "config.json", "learning_curve.png"):
        assert (out / name).exists(), name
    rows = read_metrics(out / "metrics.tsv")
    assert [(r["split"], r["epoch"]) for r in rows[:2]] == [("valid", "1"), ("valid", "2")]
    assert rows[-1]["split"] == "test"
    assert {"pearson_A", "pearson_B", "pearson", "lr", "windows_per_s"} <= set(rows[0])
    assert all(-1 <= float(r["pearson"]) <= 1 for r in rows)
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["model"]["n_tracks"] == 2 and resolved["training"]["batch_size"] == 2

    from epiformer_cli.model.modelfile import load_model

    loaded = load_model(out / "model.pt")
    assert loaded.tracks == ["A", "B"]
    assert loaded.provenance["seed"] == 0 and "valid" not in loaded.provenance.get("metrics", {}) or True
    assert loaded.provenance["store_fingerprint"] == json.loads((store / "manifest.json").read_text())["fingerprint"]
    assert set(loaded.normalization["tracks"]) == {"A", "B"}
    best_step = int(rows[-1]["step"])
    assert loaded.provenance["step"] == best_step

    again = train(store, config, out, "--epochs", "1")
    assert again.exit_code == 2 and "--resume" in again.output
    forced = train(store, config, out, "--epochs", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert [(r["split"], r["epoch"]) for r in read_metrics(out / "metrics.tsv")] == [("valid", "1"), ("test", "1")]


@pytest.mark.slow  # trains
def test_same_seed_same_metrics(tiny, tmp_path):
    store, config = tiny
    for name in ("a", "b"):
        result = train(store, config, tmp_path / name, "--max-steps", "6", "--loss", "poisson-multinomial")
        assert result.exit_code == 0, result.output
    volatile = {"seconds", "windows_per_s"}
    rows_a, rows_b = (read_metrics(tmp_path / n / "metrics.tsv") for n in ("a", "b"))
    assert [{k: v for k, v in r.items() if k not in volatile} for r in rows_a] == \
           [{k: v for k, v in r.items() if k not in volatile} for r in rows_b]
    for key, value in state_of(tmp_path / "a" / "last.pt").items():
        assert torch.equal(value, state_of(tmp_path / "b" / "last.pt")[key]), key


@pytest.mark.slow  # trains
def test_killed_run_resumes_to_the_same_weights(tiny, tmp_path):
    store, config = tiny
    # 22 training windows, batch 2 -> 11 steps an epoch; stop at step 11, the end of epoch 1
    # (tests/test_trainer.py resumes mid-epoch)
    whole = train(store, config, tmp_path / "whole", "--epochs", "2")
    assert whole.exit_code == 0, whole.output
    part = train(store, config, tmp_path / "part", "--epochs", "2", "--max-steps", "11")
    assert part.exit_code == 0, part.output
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 11
    resumed = train(store, config, tmp_path / "part", "--epochs", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = state_of(tmp_path / "whole" / "last.pt"), state_of(tmp_path / "part" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows_whole = read_metrics(tmp_path / "whole" / "metrics.tsv")
    rows_part = read_metrics(tmp_path / "part" / "metrics.tsv")
    assert rows_whole[-2]["pearson"] == rows_part[-2]["pearson"]
    assert rows_whole[-1]["split"] == rows_part[-1]["split"] == "test"
    assert rows_whole[-1]["epoch"] == rows_part[-1]["epoch"]


def test_resume_refuses_other_settings_and_a_missing_run(tiny, tmp_path):
    store, config = tiny
    missing = train(store, config, tmp_path / "none", "--resume")
    assert missing.exit_code == 2 and "last.pt" in missing.output
    assert train(store, config, tmp_path / "r", "--max-steps", "2").exit_code == 0
    other = train(store, config, tmp_path / "r", "--max-steps", "4", "--resume", "--lr", "0.1")
    assert other.exit_code == 2 and "lr" in other.output


@pytest.mark.slow  # trains
def test_checkpoint_every_n_steps(tiny, tmp_path):
    store, config = tiny
    result = train(store, config, tmp_path / "r", "--epochs", "1", "--checkpoint-every", "3", "--max-steps", "4")
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["step"] == 4 and ckpt["step_in_epoch"] == 4


def test_fp16_on_a_cpu_exits_1_with_one_line(tiny, tmp_path):
    """The one device/precision rule: fp16 needs CUDA (a DeviceError, exit 1), before any file is written."""
    store, config = tiny
    result = train(store, config, tmp_path / "run", "--precision", "fp16")
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epiformer: error: ") and "fp16" in lines[0] and "bf16" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # trains
def test_quiet_train_prints_nothing_and_the_default_prints_each_line_once(tiny, tmp_path):
    store, config = tiny
    quiet = runner.invoke(app, ["-q", *train_args(store, config, tmp_path / "quiet", "--epochs", "1")])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and quiet.stdout == ""
    assert (tmp_path / "quiet" / "model.pt").exists()

    loud = train(store, config, tmp_path / "loud", "--epochs", "1")
    assert loud.exit_code == 0, loud.output
    lines = loud.stderr.splitlines()
    assert len([l for l in lines if l.startswith("epiformer: epoch 1 step 11: train loss")]) == 1
    assert len([l for l in lines if l.startswith("epiformer: test (best model, step 11)")]) == 1
    closing = [l for l in lines if "best valid Pearson" in l]
    assert len(closing) == 1 and closing[0].startswith(f"epiformer: {tmp_path / 'loud'}/model.pt: ")
    assert loud.stdout == ""


# -- options -------------------------------------------------------------------------------------
def test_options_are_checked_when_built_with_every_problem_named():
    with pytest.raises(UsageError) as caught:
        TrainOptions(epochs=0, batch_size=0)
    assert str(caught.value) == "--epochs must be at least 1, got 0; --batch-size must be at least 1, got 0"
    with pytest.raises(UsageError, match="--workers must be 0 or more, got -1"):
        TrainOptions(workers=-1)
    assert TrainOptions(precision="bfloat16").precision == "bf16"
    with pytest.raises(AttributeError):
        TrainOptions().lr = 1.0  # frozen: a changed option is a new, checked object


def test_the_options_a_resumed_run_keeps_come_from_the_field_metadata():
    assert set(TrainOptions.fixed_on_resume()) == {
        "batch_size", "accumulate", "lr", "weight_decay", "warmup_steps", "clip_norm", "seed", "loss", "rc_prob",
        "max_shift", "min_lr_ratio", "init"}
    run = TrainOptions(epochs=3, lr=0.01, seed=4, precision="bf16").to_dict()
    # left at their defaults: the run's own; the run's length unless given; the device as given
    resumed = TrainOptions(device="cpu").resumed(run)
    assert (resumed.lr, resumed.seed, resumed.epochs, resumed.device) == (0.01, 4, 3, "cpu")
    assert TrainOptions(max_steps=5).resumed(run).epochs is None
    with pytest.raises(UsageError) as caught:
        TrainOptions(lr=0.1, seed=4, batch_size=3).resumed(run)
    message = str(caught.value)
    assert "--lr: 0.01 in the run, 0.1 now" in message and "--batch-size: 8 in the run, 3 now" in message
    assert "seed" not in message and "--force" in message
