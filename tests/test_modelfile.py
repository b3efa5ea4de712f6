"""Tests for epiformer_cli.model.modelfile: round trip, atomic writes and every refusal."""

from __future__ import annotations

import os

import pytest
import torch

from epiformer_cli.errors import ModelFileError, UsageError
from epiformer_cli.model import FORMAT_VERSION, Epiformer, load_model, preset, save_model
from epiformer_cli.model.modelfile import LoadedModel

TRACKS = ["ASCT", "OPC", "MGC"]


@pytest.fixture()
def model() -> Epiformer:
    torch.manual_seed(0)
    m = Epiformer(preset("tiny", n_tracks=3))
    with torch.no_grad():  # non-default BN statistics must travel with the file
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture()
def saved(tmp_path, model):
    path = tmp_path / "model.pt"
    save_model(path, model, model.config, TRACKS, {"scale": 2.0, "clip": [0, 128]}, {"run": "test", "epoch": 3})
    return path


def _payload(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_round_trip_gives_identical_outputs(saved, model):
    loaded = load_model(saved)
    assert isinstance(loaded, LoadedModel)
    assert loaded.config == model.config
    assert loaded.tracks == TRACKS
    assert loaded.normalization == {"scale": 2.0, "clip": [0, 128]}
    assert loaded.provenance == {"run": "test", "epoch": 3}
    assert loaded.format_version == FORMAT_VERSION == 1
    assert not loaded.model.training
    x = torch.rand(2, model.config.in_channels, model.config.seq_len)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_file_layout_is_plain_data(saved):
    payload = _payload(saved)
    assert set(payload) == {"format_version", "config", "tracks", "normalization", "provenance", "state_dict",
                            "weights_sha256"}
    assert payload["tracks"] == TRACKS
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_save_from_state_dict_and_atomic_write(tmp_path, model):
    path = tmp_path / "m.pt"
    path.write_bytes(b"old")
    save_model(path, model.state_dict(), model.config, TRACKS)
    assert load_model(path).tracks == TRACKS
    # no temporary files are left behind
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_save_refuses_bad_tracks_and_weights(tmp_path, model):
    with pytest.raises(UsageError, match="2 track names for a model with n_tracks=3"):
        save_model(tmp_path / "a.pt", model, model.config, TRACKS[:2])
    with pytest.raises(UsageError, match="unique"):
        save_model(tmp_path / "a.pt", model, model.config, ["A", "A", "B"])
    with pytest.raises(UsageError, match="do not match the model config"):
        save_model(tmp_path / "a.pt", model, preset("tiny", n_tracks=3, n_layers=1), TRACKS)
    assert not (tmp_path / "a.pt").exists()
    save_model(tmp_path / "no" / "a.pt", model, model.config, TRACKS)  # a missing folder is made (mkdir -p)
    assert (tmp_path / "no" / "a.pt").is_file()


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"missing\.pt: model file not found: check the path"):
        load_model(tmp_path / "missing.pt")


def test_truncated_file(tmp_path, saved):
    data = saved.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"truncated\.pt.*truncated or corrupt"):
        load_model(bad)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.pt"):
        load_model(empty)


def test_other_format_version(tmp_path, saved):
    payload = _payload(saved)
    payload["format_version"] = 2
    torch.save(payload, tmp_path / "v2.pt")
    with pytest.raises(ModelFileError, match=r"v2\.pt has format version 2.*reads version 1"):
        load_model(tmp_path / "v2.pt")
    torch.save({"state_dict": payload["state_dict"]}, tmp_path / "bare.pt")
    with pytest.raises(ModelFileError, match="not an epiformer model file"):
        load_model(tmp_path / "bare.pt")


class _Exploit:
    """A pickle payload that would create a file when unpickled by an unrestricted loader."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_carrying_code_is_refused_and_not_run(tmp_path, saved):
    target = tmp_path / "pwned.txt"
    payload = _payload(saved)
    payload["provenance"] = {"note": _Exploit(target)}
    evil = tmp_path / "evil.pt"
    torch.save(payload, evil)
    assert not target.exists()
    with pytest.raises(ModelFileError, match=r"refusing to load .*evil\.pt"):
        load_model(evil)
    assert not target.exists()


def test_config_that_does_not_match_weights(tmp_path, saved):
    payload = _payload(saved)
    payload["config"]["n_layers"] = 1
    torch.save(payload, tmp_path / "layers.pt")
    with pytest.raises(ModelFileError, match=r"layers\.pt.*do not match the model config.*unexpected"):
        load_model(tmp_path / "layers.pt")
    payload = _payload(saved)
    payload["config"]["stem_channels"] = 48
    torch.save(payload, tmp_path / "width.pt")
    with pytest.raises(ModelFileError, match="shape mismatch"):
        load_model(tmp_path / "width.pt")
    payload = _payload(saved)
    payload["config"]["n_layerz"] = 1
    torch.save(payload, tmp_path / "key.pt")
    with pytest.raises(ModelFileError, match=r"key\.pt.*unknown model setting.*n_layerz"):
        load_model(tmp_path / "key.pt")


@pytest.mark.parametrize("tracks, message", [([], "no tracks"), (["A", "B"], "2 track names"), ("ABC", "list")])
def test_bad_tracks_in_file(tmp_path, saved, tracks, message):
    payload = _payload(saved)
    payload["tracks"] = tracks
    torch.save(payload, tmp_path / "tracks.pt")
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path / "tracks.pt")


def test_gpu_saved_file_loads_on_cpu(tmp_path, saved, monkeypatch):
    """Storages tagged "cuda:0" (as a GPU-saved file has) load on a CPU-only machine."""
    payload = _payload(saved)
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save(payload, tmp_path / "gpu.pt")
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):  # what an unmapped load does here
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    loaded = load_model(tmp_path / "gpu.pt")
    assert next(loaded.model.parameters()).device.type == "cpu"
    assert loaded.tracks == TRACKS
