"""The Trainer's methods on a tiny store: exact resume mid-epoch, deterministic evaluation, the
split column of metrics.tsv, and worker processes that stop with the run."""

from __future__ import annotations

import csv
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from epiformer_cli.data.training_store import TrainingStore
from epiformer_cli.jobs.train import resolve_config
from epiformer_cli.options import TrainOptions
from epiformer_cli.training.checkpoint import load_checkpoint
from epiformer_cli.training.plots import plot_learning_curve
from epiformer_cli.training.trainer import Trainer
from tests.helpers import float_tolerance, make_tiny_store

VOLATILE = ("seconds", "windows_per_s")  # timings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    store = TrainingStore(make_tiny_store(root))
    return store, resolve_config(store, None, root / "model.json"), root


def make_trainer(tiny, out: Path, **options) -> Trainer:
    store, cfg, _ = tiny
    out.mkdir(parents=True, exist_ok=True)
    settings = {"batch_size": 2, "workers": 0, "device": "cpu", "warmup_steps": 2, **options}
    return Trainer(store, cfg, TrainOptions(**settings), out=out)


def read_metrics(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def assert_same_state(a: Trainer, b: Trainer) -> None:
    assert (a.step, a.epoch, a.step_in_epoch) == (b.step, b.epoch, b.step_in_epoch)
    for key, value in a.core.state_dict().items():
        assert torch.equal(value, b.core.state_dict()[key]), key
    state_a, state_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert [g["lr"] for g in state_a["param_groups"]] == [g["lr"] for g in state_b["param_groups"]]
    for key, value in state_a["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(value[name], state_b["state"][key][name]), (key, name)


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    """A complete two-epoch run: the trainer (holding the best weights after its test) and its summary."""
    trainer = make_trainer(tiny, tmp_path_factory.mktemp("fitted") / "run", epochs=2)
    return trainer, trainer.fit()


def test_metrics_tsv_keeps_test_values_out_of_the_valid_rows(fitted):
    trainer, summary = fitted
    path = trainer.out / "metrics.tsv"
    assert path.read_text().splitlines()[0].split("\t") == [
        "split", "epoch", "step", "train_loss", "loss", "pearson", "pearson_A", "pearson_B", "lr", "seconds",
        "windows_per_s"]
    rows = read_metrics(path)
    valid, test = rows[:-1], rows[-1]
    assert [(r["split"], r["epoch"], r["step"]) for r in valid] == [("valid", "1", "11"), ("valid", "2", "22")]
    assert test["split"] == "test"
    scores = ("loss", "pearson", "pearson_A", "pearson_B")
    assert not {test[c] for c in scores} & {r[c] for r in valid for c in scores}
    # the test row names the model it scored: the best validation's epoch and step
    best = max(valid, key=lambda r: float(r["pearson"]))
    assert (test["epoch"], test["step"]) == (best["epoch"], best["step"])
    assert test["train_loss"] == test["lr"] == test["windows_per_s"] == ""
    # the summary holds the same rows, and the test scores are the best weights' on the test windows
    assert [(r["split"], r["step"]) for r in summary.rows] == \
           [("valid", 11), ("valid", 22), ("test", int(best["step"]))]
    again = trainer.evaluate(trainer.test_set)
    assert summary.test == {"loss": again["loss"], "pearson": again["pearson"]}
    # the same number, printed in metrics.tsv with 6 significant digits
    printed = float(test["pearson"])
    assert printed == pytest.approx(again["pearson"], rel=0, abs=float_tolerance(abs(printed), dtype="%.6g"))


def test_the_learning_curve_draws_only_valid_rows(fitted, tmp_path):
    _, summary = fitted
    test_only = [r for r in summary.rows if r["split"] == "test"]
    assert not plot_learning_curve(test_only, tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    assert plot_learning_curve(summary.rows, tmp_path / "curve.png") and (tmp_path / "curve.png").stat().st_size > 0


def test_a_trainer_resumed_mid_epoch_continues_exactly(tiny, tmp_path):
    """Seven steps, a checkpoint, a new Trainer resumed from it: the same state at step 7, and
    the same weights, optimiser, best model and metrics at the end as the uninterrupted run."""
    whole = make_trainer(tiny, tmp_path / "whole", epochs=2)
    whole.sampler.set_epoch(0)
    batches = iter(whole.train_loader)
    losses = [whole.train_step(batches) for _ in range(7)]
    del batches
    assert whole.step == whole.step_in_epoch == 7 and whole.acc["loss_n"] == 7
    assert whole.acc["loss_sum"] == pytest.approx(sum(losses))
    whole.checkpoint()

    resumed = make_trainer(tiny, tmp_path / "resumed", epochs=2)
    assert resumed.step == 0
    resumed.resume_from(load_checkpoint(tmp_path / "whole" / "last.pt"))
    assert_same_state(whole, resumed)
    assert resumed.acc == whole.acc and resumed.rows == [] and resumed.best_state is None

    for trainer in (whole, resumed):
        while trainer.step < trainer.stop_step:
            trainer.run_epoch()
    assert whole.step == whole.stop_step == 22
    assert_same_state(whole, resumed)
    assert {k: whole.best[k] for k in ("pearson", "step", "epoch")} == \
           {k: resumed.best[k] for k in ("pearson", "step", "epoch")}
    for key, value in whole.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key
    assert stable(read_metrics(whole.out / "metrics.tsv")) == stable(read_metrics(resumed.out / "metrics.tsv"))
    assert [r["split"] for r in resumed.rows] == ["valid", "valid"]


def test_evaluate_is_deterministic_and_changes_nothing(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path / "a", max_steps=2)
    weights = {k: v.clone() for k, v in trainer.core.state_dict().items()}
    first = trainer.evaluate(trainer.valid_set)
    assert trainer.evaluate(trainer.valid_set) == first
    assert trainer.core.training
    for key, value in trainer.core.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert set(first["pearson_by_track"]) == {"A", "B"}
    assert first["pearson"] == pytest.approx(np.mean(list(first["pearson_by_track"].values())))
    # the same seed builds the same network; any batch size scores every window once (the mean
    # loss per bin agrees to float rounding; r of an untrained, nearly flat output is more sensitive)
    other = make_trainer(tiny, tmp_path / "b", max_steps=2, batch_size=5)
    second = other.evaluate(other.valid_set)
    assert second["loss"] == pytest.approx(first["loss"], rel=1e-6)
    assert second["pearson"] == pytest.approx(first["pearson"], abs=0.01)


def test_close_stops_the_loader_workers(tiny, tmp_path):
    with make_trainer(tiny, tmp_path, max_steps=3, workers=1) as trainer:
        trainer.run_epoch()
        assert multiprocessing.active_children()  # the loader's persistent worker
    assert multiprocessing.active_children() == []


def test_train_with_a_worker_exits_when_done(tiny, tmp_path):
    """A worker left to the interpreter's exit made the process hang there (it ignores SIGTERM)."""
    store, _, root = tiny
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    args = [sys.executable, "-m", "epiformer_cli", "-q", "train", "--data", str(store.root), "--out",
            str(tmp_path / "run"), "--config", str(root / "model.json"), "--batch-size", "2", "--device", "cpu",
            "--epochs", "1", "--workers", "1"]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    assert [r["split"] for r in read_metrics(tmp_path / "run" / "metrics.tsv")] == ["valid", "test"]
