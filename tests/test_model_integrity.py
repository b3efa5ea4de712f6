"""Model files prove they are whole (issue 21): the weights digest checked on every load, and
non-finite weights refused on save and on load (epiformer_cli.model.modelfile)."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import EpiformerError, ModelFileError
from epiformer_cli.model import load_model, save_model
from epiformer_cli.model.modelfile import DIGEST_KEY, first_non_finite, weights_digest
from tests.helpers import predict_inputs, random_model

TRACKS = ["ASCT", "OPC"]
DAMAGED = ("its weights do not match the digest stored in it (the file is damaged or was edited): copy it again, "
           "or re-run the command that made it")


@pytest.fixture()
def model():
    return random_model(seed=3)


@pytest.fixture()
def saved(tmp_path, model) -> Path:
    return save_model(tmp_path / "model.pt", model, model.config, TRACKS)


def _payload(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _largest_data_record(path: Path) -> str:
    """The zip record holding the most tensor bytes: a weight's storage (torch names them .../data/N)."""
    with zipfile.ZipFile(path) as archive:
        records = [info for info in archive.infolist() if "/data/" in info.filename]
    return max(records, key=lambda info: info.file_size).filename


def _rewrite_with_bytes_changed(path: Path, record: str, at: int, count: int, out: Path) -> None:
    """Copy the zip ``path`` to ``out`` record by record, with the lowest bit of ``count`` bytes of
    ``record`` flipped from byte ``at``: a structurally valid zip (CRCs recomputed) whose weights
    differ, as a file edited, or damaged below the zip layer, would be."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == record:
                data = bytearray(data)
                for i in range(at, at + count):
                    data[i] ^= 0x01
                data = bytes(data)
            dst.writestr(info, data)


@pytest.fixture()
def damaged(tmp_path, saved) -> Path:
    out = tmp_path / "damaged.pt"
    _rewrite_with_bytes_changed(saved, _largest_data_record(saved), at=64, count=40, out=out)
    return out


def test_save_stores_the_digest_of_the_weights(saved, model):
    payload = _payload(saved)
    assert payload[DIGEST_KEY] == weights_digest(model.state_dict())
    assert len(payload[DIGEST_KEY]) == 64 and int(payload[DIGEST_KEY], 16) >= 0


def test_digest_is_stable_over_a_round_trip_and_order_and_layout(tmp_path, saved, model):
    digest = _payload(saved)[DIGEST_KEY]
    loaded = load_model(saved)
    again = save_model(tmp_path / "again.pt", loaded.model, loaded.config, loaded.tracks)
    assert _payload(again)[DIGEST_KEY] == digest  # saved, loaded, saved again: bit-exact
    state = model.state_dict()
    reordered = {k: state[k] for k in reversed(list(state))}
    assert weights_digest(reordered) == digest
    # a non-contiguous view of the same values hashes as its contiguous copy
    weight = state["stem.conv.weight"]
    strided = {**state, "stem.conv.weight": weight.transpose(0, 1).contiguous().transpose(0, 1)}
    assert not strided["stem.conv.weight"].is_contiguous()
    assert weights_digest(strided) == digest


def test_digest_sees_one_bit_a_dtype_a_shape_and_a_name(model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    digest = weights_digest(state)
    flipped = dict(state)
    raw = flipped["head.out.weight"].clone()
    raw.view(torch.int32).view(-1)[0] ^= 1  # the lowest mantissa bit of one weight
    flipped["head.out.weight"] = raw
    assert weights_digest(flipped) != digest
    assert weights_digest({**state, "head.out.bias": state["head.out.bias"].double()}) != digest
    assert weights_digest({**state, "head.out.weight": state["head.out.weight"].reshape(-1)}) != digest
    renamed = {("x" + k if k == "head.out.bias" else k): v for k, v in state.items()}
    assert weights_digest(renamed) != digest


def test_bytes_changed_inside_a_weight_record_are_refused_naming_the_file(damaged, saved):
    assert zipfile.ZipFile(damaged).testzip() is None  # the zip itself is sound
    before, after = _payload(saved)["state_dict"], _payload(damaged)["state_dict"]
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == 1 and torch.isfinite(after[changed[0]]).all()  # silent: finite, plausible values
    with pytest.raises(ModelFileError) as caught:
        load_model(damaged)
    assert str(caught.value) == f"model file {damaged}: {DAMAGED}"


def test_an_edited_stored_digest_is_refused(tmp_path, saved):
    payload = _payload(saved)
    payload[DIGEST_KEY] = "0" * 64
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ModelFileError) as caught:
        load_model(tmp_path / "edited.pt")
    assert str(caught.value) == f"model file {tmp_path / 'edited.pt'}: {DAMAGED}"


@pytest.mark.parametrize("command", ["info", "predict"])
def test_cli_refuses_a_damaged_model_with_one_line(tmp_path, damaged, command):
    (tmp_path / "inputs").mkdir()
    if command == "info":
        args = ["info", str(damaged)]
    else:  # good inputs, so the model is the only thing wrong (-q: without the FASTA's indexing notice)
        files = predict_inputs(tmp_path / "inputs")
        args = ["-q", "predict", "--model", str(damaged), "--fasta", str(files["fasta"]), "--cons", str(files["cons"]),
                "--device", "cpu", "--out", str(tmp_path / "pred.bw")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"epiformer: error: model file {damaged}: {DAMAGED}"]
    assert not list(tmp_path.glob("pred*"))  # no bigWig, no prediction store


def _nan_file(tmp_path, saved, value=float("nan")) -> Path:
    """A model file whose digest is right but whose ``tower.2.conv.conv.weight`` holds ``value``:
    what save_model refuses to write, made by hand."""
    payload = _payload(saved)
    payload["state_dict"]["tower.2.conv.conv.weight"][0, 0, 0] = value
    payload[DIGEST_KEY] = weights_digest(payload["state_dict"])
    torch.save(payload, tmp_path / "nan.pt")
    return tmp_path / "nan.pt"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_on_load_naming_the_file_and_weight(tmp_path, saved, value):
    path = _nan_file(tmp_path, saved, value)
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    assert str(caught.value) == (f"model file {path}: weight tower.2.conv.conv.weight holds NaN or infinite "
                                 "values, so every score would be NaN: re-train or re-import the model")


def test_non_finite_weights_are_refused_by_the_cli(tmp_path, saved):
    path = _nan_file(tmp_path, saved)
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 1, result.output
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        (f"epiformer: error: model file {path}: weight tower.2.conv.conv.weight holds NaN or infinite values, "
         "so every score would be NaN: re-train or re-import the model")]


def test_save_refuses_non_finite_weights_and_keeps_the_old_file(tmp_path, saved, model):
    good = saved.read_bytes()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["layers.1.ffn.out.weight"][3, 4] = float("nan")
    with pytest.raises(EpiformerError) as caught:
        save_model(saved, state, model.config, TRACKS)
    assert not isinstance(caught.value, ModelFileError) and caught.value.exit_code == 1
    assert str(caught.value) == (
        f"cannot save {saved}: weight layers.1.ffn.out.weight holds NaN or infinite values, which a model file "
        "must not: the training diverged (train again with a lower --lr); nothing was written")
    assert saved.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    with torch.no_grad():
        model.head.out.bias.fill_(float("inf"))
    with pytest.raises(EpiformerError, match="weight head.out.bias holds NaN"):
        save_model(tmp_path / "new.pt", model, model.config, TRACKS)
    assert not (tmp_path / "new.pt").exists()


def test_first_non_finite_names_the_first_floating_tensor_in_order():
    state = {"a": torch.ones(2), "n": torch.tensor([5, 7]), "b": torch.tensor([1.0, float("nan")]),
             "c": torch.tensor([float("inf")], dtype=torch.float16)}
    assert first_non_finite(state) == "b"
    assert first_non_finite({"c": state["c"], "b": state["b"]}) == "c"
    assert first_non_finite({"a": state["a"], "n": state["n"]}) is None
    # finite values whose sum overflows (fp16 tops out at 65504) are not mistaken for non-finite ones
    big = torch.full((10,), 60_000.0, dtype=torch.float16)
    assert not torch.isfinite(big.sum()) and first_non_finite({"big": big}) is None
    assert first_non_finite({"big": big, "late": torch.tensor([0.0, -float("inf")])}) == "late"


def test_a_file_without_digest_loads_with_one_warning(tmp_path, saved, model, caplog):
    payload = _payload(saved)
    del payload[DIGEST_KEY]
    torch.save(payload, tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING, logger="epiformer_cli.model.modelfile"):
        loaded = load_model(tmp_path / "old.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [(f"model file {tmp_path / 'old.pt'} carries no weights digest (written by an older "
                         "epiformer): it cannot be checked; save it again with a current epiformer to add one")]
    # and a file with its digest loads without a word
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="epiformer_cli.model.modelfile"):
        load_model(saved)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_file_without_digest_is_still_refused_when_its_weights_are_nan(tmp_path, saved):
    path = _nan_file(tmp_path, saved)
    payload = _payload(path)
    del payload[DIGEST_KEY]
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="weight tower.2.conv.conv.weight holds NaN"):
        load_model(path)
