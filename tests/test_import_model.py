"""`epiformer import-model`: published checkpoints run in epiformer exactly as the published forward
pass (tests/published_reference.py, written independently from the reference note), and every kind
of file that is not such a checkpoint is refused in one line with nothing written."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.errors import ModelFileError, UsageError
from epiformer_cli.jobs.import_model import import_model
from epiformer_cli.model.fast import prepare_for_inference
from epiformer_cli.model.modelfile import load_model
from tests.helpers import float_tolerance, network_reductions, predict, predict_inputs, read_bw
from tests.published_reference import (
    published_checkpoint,
    published_param,
    published_state_dict,
    reference_forward,
)

runner = CliRunner()

#: a small published variant: 18 tracks, 8 heads, wider than the tiny preset, 3 layers.
SMALL = dict(seq_len=16_384, max_len=160, embed_size=140, num_heads=8, num_encoder_layers=3, multiout_dim=18,
             crop_size=16, dim_feedforward=256)
SMALL_SIZES = dict(stem_channels=64, width=128)


def write_checkpoint(path, param, sizes=None, **save):
    sd = published_state_dict(param, **(sizes or {}))
    torch.save(published_checkpoint(param, sd, **save), path)
    return path, sd


def window(seq_len, seed=1):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 4, (1, seq_len), dtype=torch.uint8, generator=g)
    codes[0, 100:140] = 4  # an N run: all-zero one-hot in both implementations
    return codes, torch.rand(1, seq_len, generator=g)


def reference(sd, param, codes, cons):
    """The published forward in float64: the yardstick."""
    one_hot = torch.nn.functional.one_hot(codes.long().clamp(max=4), 5)[..., :4].permute(0, 2, 1).double()
    return reference_forward({k: v.double() if v.is_floating_point() else v for k, v in sd.items()}, param,
                             one_hot, cons.double())


def max_rel(got, want):
    return float((got.double() - want).abs().max() / want.abs().max())


def compare(tmp_path, param, sizes, precisions=("fp32",)):
    """Import a random checkpoint and return {path name: max relative error vs the reference} and
    {precision: its bound}: float32 or bfloat16 rounding through the imported network against the
    float64 reference (tests.helpers.float_tolerance, relative to the largest output)."""
    ckpt, sd = write_checkpoint(tmp_path / "m.best_corr.pth.tar", param, sizes)
    import_model(ckpt, tmp_path / "m.pt", tracks=[f"t{i}" for i in range(param["multiout_dim"])])
    model = load_model(tmp_path / "m.pt").model
    codes, cons = window(param["seq_len"])
    want = reference(sd, param, codes, cons)
    x = model_inputs(codes, cons, model.config.conservation)
    errors = {}
    if "fp32" in precisions:
        with torch.no_grad():
            errors["plain fp32"] = max_rel(model(x), want)
        errors["fast fp32"] = max_rel(prepare_for_inference(model, torch.float32)(x), want)
    if "bf16" in precisions:
        errors["fast bf16"] = max_rel(prepare_for_inference(model, torch.bfloat16)(x), want)
    assert float(want.std()) > 1e-3  # the outputs do vary, so the comparison can fail
    bounds = {name: float_tolerance(1.0, **network_reductions(model.config, dtype))
              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    return errors, bounds


def test_multi_track_8_head_wider_variant_matches_the_reference(tmp_path):
    errors, bounds = compare(tmp_path, published_param(**SMALL), SMALL_SIZES)
    assert errors["plain fp32"] < bounds["fp32"] and errors["fast fp32"] < bounds["fp32"], (errors, bounds)


def test_the_relative_term_and_positions_are_really_compared(tmp_path):
    """A wrong sign of the relative offset (r[j - i]) would be caught: the reference moves."""
    param = published_param(**SMALL)
    ckpt, sd = write_checkpoint(tmp_path / "m.pth.tar", param, SMALL_SIZES)
    import_model(ckpt, tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt").model
    codes, cons = window(param["seq_len"])
    x = model_inputs(codes, cons, "scale")
    flipped = {k: (v.flip(0) if "distance_embedding" in k else v) for k, v in sd.items()}
    want, other = reference(sd, param, codes, cons), reference(flipped, param, codes, cons)
    with torch.no_grad():
        got = model(x)
    bound = float_tolerance(1.0, **network_reductions(model.config))  # float32 rounding, relative
    assert max_rel(got, want) < bound < max_rel(got, other)


@pytest.mark.slow
def test_full_size_published_model_matches_the_reference(tmp_path):
    """The published 8-layer, 1-track network at 98,304 bp (768 bins, 640 out), fp32."""
    errors, bounds = compare(tmp_path, published_param(), None)
    assert errors["plain fp32"] < bounds["fp32"] and errors["fast fp32"] < bounds["fp32"], (errors, bounds)


@pytest.mark.slow
def test_full_length_multi_track_8_heads_fp32_and_bf16(tmp_path):
    """98,304 bp, 768 bins, 18 tracks, 8 heads, fp32 and bf16. Narrow channels: bf16 has no
    hardware support on the CI CPU (a full-width bf16 forward takes minutes there)."""
    param = published_param(num_heads=8, multiout_dim=18, num_encoder_layers=4, dim_feedforward=256)
    errors, bounds = compare(tmp_path, param, dict(stem_channels=48, width=96), precisions=("fp32", "bf16"))
    assert errors["plain fp32"] < bounds["fp32"] and errors["fast fp32"] < bounds["fp32"], (errors, bounds)
    assert errors["fast bf16"] < bounds["bf16"], (errors, bounds)


def test_bf16_on_the_small_variant_stays_within_bf16_rounding(tmp_path):
    # measured 1.5e-2 (GEMM tower on an AVX2 CPU rounds each of the k taps' sums to bf16); the bound,
    # bf16 rounding through the tower's 14 layers (the published trunk stays float32), is 0.24: it
    # catches a bf16 path that computes something else (O(1)), not bf16's own drift
    errors, bounds = compare(tmp_path, published_param(**SMALL), SMALL_SIZES, precisions=("bf16",))
    assert errors["fast bf16"] < bounds["bf16"], (errors, bounds)


# ---- the files users hold ---------------------------------------------------------------------
@pytest.fixture()
def small_param():
    return published_param(**{**SMALL, "num_encoder_layers": 1, "multiout_dim": 2})


def _outputs(path, codes, cons):
    model = load_model(path).model
    with torch.no_grad():
        return model(model_inputs(codes, cons, model.config.conservation))


def test_module_prefix_and_gpu_saved_checkpoints_import_the_same_weights(tmp_path, small_param, monkeypatch):
    sd = published_state_dict(small_param, **SMALL_SIZES)
    torch.save(published_checkpoint(small_param, sd), tmp_path / "plain.pth.tar")
    torch.save(published_checkpoint(small_param, sd, module_prefix=True), tmp_path / "ddp.pth.tar")
    # a file saved on a GPU: its storages are tagged cuda:0; torch.load without map_location
    # fails on a machine without one, which is what the research scripts did
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(published_checkpoint(small_param, sd), tmp_path / "gpu.pth.tar")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.load(tmp_path / "gpu.pth.tar", weights_only=True)
    codes, cons = window(small_param["seq_len"])
    outs = []
    for name in ("plain", "ddp", "gpu"):
        import_model(tmp_path / f"{name}.pth.tar", tmp_path / f"{name}.pt", tracks="a,b")
        outs.append(_outputs(tmp_path / f"{name}.pt", codes, cons))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_model_file_carries_tracks_and_provenance(tmp_path, small_param):
    import epiformer_cli as epi

    ckpt, _ = write_checkpoint(tmp_path / "brain.best_corr.pth.tar", small_param, SMALL_SIZES)
    (tmp_path / "names.txt").write_text("# cell types\nASCT\tastrocytes\n\nOPC\n")
    path = epi.import_model(ckpt, tmp_path / "m.pt", tracks=str(tmp_path / "names.txt"))  # the notebook API
    loaded = epi.load_model(path)
    assert loaded.tracks == ["ASCT", "OPC"]
    assert loaded.config.arch == "published" and loaded.config.n_layers == 1 and loaded.config.n_heads == 8
    prov = loaded.provenance
    from epiformer_cli.io.identity import sha256_file

    assert prov["checkpoint"]["name"] == "brain.best_corr.pth.tar"
    assert prov["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert prov["param"]["embed_size"] == 140 and prov["metrics"]["current_valid_corr"] == pytest.approx(0.58)


def test_without_track_names_one_warning_and_placeholders(tmp_path, small_param, caplog):
    ckpt, _ = write_checkpoint(tmp_path / "m.pth.tar", small_param, SMALL_SIZES)
    with caplog.at_level(logging.WARNING):
        import_model(ckpt, tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt").tracks == ["track1", "track2"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--tracks" in warnings[0].getMessage()


@pytest.mark.parametrize("tracks, message", [
    ("a,b,c", "3 track names but checkpoint"),
    ("a,a", "appears twice"),
])
def test_wrong_track_names_are_refused(tmp_path, small_param, tracks, message):
    ckpt, _ = write_checkpoint(tmp_path / "m.pth.tar", small_param, SMALL_SIZES)
    with pytest.raises(UsageError, match=message):
        import_model(ckpt, tmp_path / "m.pt", tracks=tracks)
    assert not (tmp_path / "m.pt").exists()


def _edit(param, sd, kind):
    """A broken or foreign checkpoint dict of the given kind."""
    sd = dict(sd)
    if kind == "missing":
        del sd["trans.layers.0.mha.key.weight"]
    elif kind == "shape":
        sd["conv.tower.2.0.2.weight"] = sd["conv.tower.2.0.2.weight"][:, :, :3].clone()
    elif kind == "foreign":
        sd = torch.nn.Linear(4, 2).state_dict()
    elif kind == "param":
        param = {**param, "multiout_dim": 5}
    elif kind == "nan":
        sd["ptw.linear.0.weight"] = sd["ptw.linear.0.weight"].clone().fill_(float("nan"))
    return published_checkpoint(param, sd)


@pytest.mark.parametrize("kind, message", [
    ("missing", "missing trans.layers.0.mha.key.weight"),
    ("shape", r"conv.tower.2.0.2.weight has shape \(543, 484, 3\)"),
    ("foreign", "unexpected weight weight: this is not a published Epiformer checkpoint"),
    ("param", r"param\['multiout_dim'\] is 5 but the weights hold 2"),
    ("nan", "ptw.linear.0.weight holds NaN"),
])
def test_broken_or_foreign_checkpoints_are_refused_naming_the_first_problem(tmp_path, small_param, kind, message):
    sd = published_state_dict(small_param, **SMALL_SIZES) if kind != "shape" else published_state_dict(small_param)
    torch.save(_edit(small_param, sd, kind), tmp_path / "m.pth.tar")
    with pytest.raises(ModelFileError, match=message):
        import_model(tmp_path / "m.pth.tar", tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


class Payload:
    """Stands for a pickled object: what torch.save(model) writes."""


def test_files_that_are_not_checkpoints_are_refused(tmp_path, small_param):
    ckpt, _ = write_checkpoint(tmp_path / "m.pth.tar", small_param, SMALL_SIZES)
    data = ckpt.read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": {}, "param": small_param, "extra": Payload()}, tmp_path / "code.pth.tar")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth.tar")
    cases = {
        "cut.pth.tar": "truncated or corrupt",
        "code.pth.tar": "holds an object of class tests.test_import_model.Payload, and loading it could run code",
        "other.pth.tar": "not a published Epiformer checkpoint",
        "absent.pth.tar": "checkpoint not found",
    }
    for name, message in cases.items():
        with pytest.raises(ModelFileError, match=message):
            import_model(tmp_path / name, tmp_path / "m.pt")
        assert not (tmp_path / "m.pt").exists()
    with pytest.raises(ModelFileError, match="is a published Epiformer checkpoint.*epiformer import-model"):
        load_model(ckpt)  # given as --model directly: the fix is named
    import_model(ckpt, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match="already an epiformer model file"):
        import_model(tmp_path / "m.pt", tmp_path / "again.pt")


# ---- the command line -----------------------------------------------------------------------------
def test_cli_import_then_info(tmp_path, small_param):
    ckpt, _ = write_checkpoint(tmp_path / "brain.pth.tar", small_param, SMALL_SIZES)
    result = runner.invoke(app, ["import-model", str(ckpt), "--out", str(tmp_path / "m.pt"), "--tracks", "ASCT,OPC"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["import-model", str(ckpt), "--out", str(tmp_path / "m.pt"), "--tracks", "ASCT,OPC"])
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    info = runner.invoke(app, ["info", str(tmp_path / "m.pt")])
    assert info.exit_code == 0, info.output
    assert "published Epiformer" in info.output and "ASCT, OPC" in info.output
    assert "16,384 bp, one-hot x exp(phastCons)" in info.output and "96 bins of 128 bp" in info.output
    assert "imported from brain.pth.tar" in info.output
    data = json.loads(runner.invoke(app, ["info", "--json"], env={"EPIFORMER_MODEL": str(tmp_path / "m.pt")}).output)
    assert data["tracks"] == ["ASCT", "OPC"] and data["config"]["n_heads"] == 8 and data["output_bins"] == 96
    bad = runner.invoke(app, ["import-model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "x.pt")])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "Traceback" not in bad.output
    none = runner.invoke(app, ["info"], env={"EPIFORMER_MODEL": ""})
    assert none.exit_code == 2 and "EPIFORMER_MODEL" in none.output


def test_imported_model_predicts_genome_wide_like_its_own_forward(tmp_path):
    """predict with RC averaging over an imported model: the bigWig holds the model's own
    averaged forward and reverse passes of each window."""
    from epiformer_cli.data.encoding import reverse_complement

    inputs = predict_inputs(tmp_path)
    param = published_param(**{**SMALL, "num_encoder_layers": 1, "multiout_dim": 2, "embed_size": 128,
                                "max_len": 128})
    ckpt, _ = write_checkpoint(tmp_path / "m.pth.tar", param, dict(stem_channels=16, width=32))
    import_model(ckpt, tmp_path / "pub.pt", tracks="ASCT,OPC")
    out = tmp_path / "pred.bw"
    predict(fasta=inputs["fasta"], cons=inputs["cons"], model=tmp_path / "pub.pt", out=out, device="cpu",
            rc_average=True, batch_size=2, regions=None)
    got = read_bw(tmp_path / "pred.ASCT.bw")
    # the first window of chr2 (conservation under Ensembl name 2), its first output bin
    from epiformer_cli.io.genome import Genome
    import pyBigWig

    model = load_model(tmp_path / "pub.pt").model
    cfg = model.config
    genome = Genome(inputs["fasta"])
    # the first window starts crop_bp before the chromosome (N there), so that bin 0 is predicted
    start = -cfg.crop_bp
    codes = torch.as_tensor(genome.fetch("chr2", start, start + cfg.seq_len))[None]
    bw = pyBigWig.open(str(inputs["cons"]))
    values = np.nan_to_num(np.array(bw.values("2", 0, start + cfg.seq_len), dtype=np.float32))
    cons = torch.as_tensor(np.concatenate([np.zeros(-start, np.float32), values]))[None].clamp(0, 1)
    with torch.no_grad():
        fwd = model.predict_codes(codes, cons)
        rc_codes, rc_cons, _ = reverse_complement(codes, cons)
        rev = model.predict_codes(rc_codes, rc_cons).flip(-1)
    expected = ((fwd + rev) / 2)[0, 0, 0].item()
    starts, _, values = got["chr2"]
    assert starts[0] == 0
    # the engine's fast path vs the eager model: float32 rounding through the network
    tol = float_tolerance(max(fwd.abs().max(), rev.abs().max()), **network_reductions(cfg))
    assert values[0] == pytest.approx(expected, rel=0, abs=tol)
