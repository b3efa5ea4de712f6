"""Fine-tuning (`train --init`): the body and the shared tracks' output rows come from the model
file, new tracks start fresh, the run records which file it started from and keeps it on resume,
and the published family trains."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.data.training_store import TrainingStore
from epiformer_cli.errors import UsageError
from epiformer_cli.io.identity import sha256_file
from epiformer_cli.jobs.train import resolve_config, train_model
from epiformer_cli.model.config import ModelConfig
from epiformer_cli.model.modelfile import load_model, save_model
from epiformer_cli.model.network import build_network
from epiformer_cli.options import TrainOptions
from epiformer_cli.training.trainer import OUTPUT_LAYER, InitModel, Trainer
from tests import helpers

runner = CliRunner()

#: the published family at the test window: 32 bins, so tables of at least 32 rows.
PUBLISHED = {"arch": "published", "conservation": "scale", "rel_positions": 32, "abs_positions": 32}
FAST = {"batch_size": 2, "workers": 0, "device": "cpu", "warmup_steps": 2}


def write_init(path: Path, tracks, seed: int, **changes) -> Path:
    """A random model of the test config (``changes`` applied) with non-trivial BatchNorm
    statistics, saved as a model file."""
    cfg = ModelConfig.from_dict({**helpers.TEST_CONFIG, "n_tracks": len(tracks), **changes})
    torch.manual_seed(seed)
    model = helpers.with_batchnorm_statistics(build_network(cfg))
    return save_model(path, model, cfg, list(tracks), provenance={"tool": "test"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny store (4,096 bp windows, tracks A and B) and two init models: ``epiformer`` with
    tracks A, X and ``published`` with track B."""
    root = tmp_path_factory.mktemp("init")
    store = helpers.make_tiny_store(root)
    return {
        "root": root, "store": store,
        "epiformer": write_init(root / "epi.pt", ["A", "X"], seed=1),
        "published": write_init(root / "pub.pt", ["B"], seed=2, **PUBLISHED),
    }


def make_trainer(store: TrainingStore, out: Path, init_path: Path) -> Trainer:
    """A fine-tuning trainer, built as the job builds it."""
    init = InitModel.read(init_path)
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(store, resolve_config(store, None, None, init=init), TrainOptions(init=init_path, **FAST),
                   out=out, init=init)


def train_args(store, out, *extra):
    return ["train", "--data", str(store), "--out", str(out), "--batch-size", "2", "--workers", "0",
            "--device", "cpu", "--warmup-steps", "2", *map(str, extra)]


# -- the weights a fine-tuning run starts from -----------------------------------------------------
@pytest.mark.parametrize("family, kept, new", [("epiformer", "A", "B"), ("published", "B", "A")])
def test_body_and_shared_rows_come_from_the_init_model_and_new_rows_start_fresh(tiny, tmp_path, family, kept, new):
    store = TrainingStore(tiny["store"])
    init = load_model(tiny[family])
    trainer = make_trainer(store, tmp_path / "run", tiny[family])
    assert trainer.cfg == init.config.replace(n_tracks=2) and trainer.tracks == ["A", "B"]
    state, source = trainer.core.state_dict(), init.model.state_dict()
    assert set(state) == set(source)
    for key in state:
        if key not in OUTPUT_LAYER:
            assert torch.equal(state[key], source[key]), key
    i_kept, i_new, j_kept = trainer.tracks.index(kept), trainer.tracks.index(new), init.tracks.index(kept)
    for key in OUTPUT_LAYER:
        assert torch.equal(state[key][i_kept], source[key][j_kept]), key
        # a new track's row: the layer's own initialisation under the training seed, none of init's rows
        assert all(not torch.equal(state[key][i_new], row) for row in source[key]), key
    fresh = Trainer(store, trainer.cfg, TrainOptions(**FAST), out=tmp_path / "run").core.state_dict()
    for key in OUTPUT_LAYER:
        assert torch.equal(state[key][i_new], fresh[key][i_new]), key
    assert trainer.init_record == {"name": tiny[family].name, "sha256": sha256_file(tiny[family]),
                                   "tracks_kept": [kept], "tracks_new": [new]}


def test_a_model_of_another_window_is_refused_naming_both_lengths(tiny, tmp_path):
    other = write_init(tmp_path / "long.pt", ["A"], seed=3, seq_len=8192)
    with pytest.raises(UsageError) as caught:
        train_model(data=tiny["store"], out=tmp_path / "run", options=TrainOptions(init=other, **FAST))
    message = str(caught.value)
    assert "8192 bp windows" in message and "4096 bp windows" in message and "--window 8192" in message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


def test_a_conservation_model_needs_a_store_with_conservation(tiny, tmp_path):
    store = Path(shutil.copytree(tiny["store"], tmp_path / "store"))
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["conservation"]["source"] = None  # as `prepare --no-cons` writes it
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match=r"uses conservation \('channel' mode\).*--no-cons.*--cons"):
        resolve_config(TrainingStore(store), None, None, init=InitModel.read(tiny["epiformer"]))
    without = write_init(tmp_path / "none.pt", ["A"], seed=4, conservation="none")
    assert resolve_config(TrainingStore(store), None, None, init=InitModel.read(without)).conservation == "none"


def test_init_is_kept_as_an_absolute_path_and_fixed_on_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert TrainOptions(init="m.pt").init == str(tmp_path / "m.pt")
    assert "init" in TrainOptions.fixed_on_resume() and "init" in TrainOptions().fingerprint()
    with pytest.raises(UsageError, match="init"):
        TrainOptions(init="other.pt").resumed(TrainOptions(init="m.pt").to_dict())
    assert TrainOptions().resumed(TrainOptions(init="m.pt").to_dict()).init == str(tmp_path / "m.pt")


# -- the command -----------------------------------------------------------------------------------
@pytest.mark.parametrize("other", [["--preset", "tiny"], ["--config", "model.json"]])
def test_init_with_preset_or_config_exits_2_with_one_line(tiny, tmp_path, other):
    if other[0] == "--config":
        other = ["--config", str(tiny["root"] / "model.json")]
    result = runner.invoke(app, train_args(tiny["store"], tmp_path / "run", "--init", tiny["epiformer"], *other))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"epiformer: error: --init {tiny['epiformer']} brings its own "
                                          f"architecture: drop {other[0]} (see epiformer train -h)"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # trains
def test_fine_tune_through_the_cli_records_its_init_and_resume_keeps_it(tiny, tmp_path):
    init = tmp_path / "brain.pt"
    shutil.copy(tiny["epiformer"], init)
    out = tmp_path / "run"
    result = runner.invoke(app, train_args(tiny["store"], out, "--init", init, "--epochs", "2", "--max-steps", "2"))
    assert result.exit_code == 0, result.output
    assert "epiformer: --init brain.pt: 1 track(s) carried over (A), 1 new (B)" in result.stderr.splitlines()
    record = {"name": "brain.pt", "sha256": sha256_file(init), "tracks_kept": ["A"], "tracks_new": ["B"]}
    loaded = load_model(out / "model.pt")
    assert loaded.tracks == ["A", "B"] and loaded.config == load_model(init).config.replace(n_tracks=2)
    assert loaded.provenance["init"] == record
    assert loaded.provenance["options"]["init"] == str(init)
    assert json.loads((out / "config.json").read_text())["init"] == record
    info = runner.invoke(app, ["info", str(out / "model.pt")])
    assert info.exit_code == 0 and "fine-tuned from brain.pt" in info.output

    # another file, or the same name holding other weights, cannot continue the run
    other = runner.invoke(app, train_args(tiny["store"], out, "--init", tiny["published"], "--resume"))
    assert other.exit_code == 2 and "(--init: " in other.stderr and " in the run, " in other.stderr, other.output
    write_init(init, ["A", "X"], seed=9)
    changed = runner.invoke(app, train_args(tiny["store"], out, "--resume"))
    assert changed.exit_code == 2, changed.output
    lines = changed.stderr.splitlines()
    assert len(lines) == 1 and f"--init {init} has changed" in lines[0] and "--force" in lines[0]
    # the original back: the run continues (--init left out means the run's own)
    shutil.copy(tiny["epiformer"], init)
    resumed = runner.invoke(app, train_args(tiny["store"], out, "--resume", "--max-steps", "3"))
    assert resumed.exit_code == 0, resumed.output
    assert load_model(out / "model.pt").provenance["init"] == record


@pytest.mark.slow  # trains
def test_a_run_without_init_cannot_resume_with_one(tiny, tmp_path):
    out = tmp_path / "run"
    config = tiny["root"] / "model.json"
    assert runner.invoke(app, train_args(tiny["store"], out, "--config", config, "--max-steps", "1")).exit_code == 0
    result = runner.invoke(app, train_args(tiny["store"], out, "--init", tiny["epiformer"], "--resume"))
    assert result.exit_code == 2 and "(--init: none in the run, " in result.stderr, result.output


# -- the published family trains ---------------------------------------------------------------------
@pytest.mark.slow  # trains
def test_a_fine_tuned_published_model_trains_loads_and_predicts(tiny, tmp_path):
    out = tmp_path / "run"
    summary = train_model(data=tiny["store"], out=out, options=TrainOptions(init=tiny["published"], max_steps=3,
                                                                            **FAST))
    assert summary.steps == 3
    assert all(math.isfinite(float(r["train_loss"])) and math.isfinite(float(r["loss"]))
               for r in summary.rows if r["split"] == "valid")
    loaded = load_model(out / "model.pt")
    assert loaded.config.arch == "published" and loaded.tracks == ["A", "B"]
    before = load_model(tiny["published"]).model.state_dict()
    assert not torch.equal(loaded.model.state_dict()["head.conv.weight"], before["head.conv.weight"])  # it learned
    pred = helpers.predict(fasta=tiny["root"] / "g.fa", cons=tiny["root"] / "cons.bw", model=out / "model.pt",
                           out=tmp_path / "pred.bw", chunk_windows=4, batch_size=4, device="cpu", rc_average=False)
    assert set(pred.outputs) == {"A", "B"}
    values = helpers.read_bw(pred.outputs["B"])["chr8"][2]
    assert len(values) and np.isfinite(values).all() and (values >= 0).all()
