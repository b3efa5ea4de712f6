"""Tests of tests/published_reference.py itself: the literal reference of the published Epiformer
that epiformer's checkpoint import is checked against. Small configs only (the default layout is
checked from shapes, without building or running the 54.8 M-parameter model)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from epiformer_cli.model.config import preset
from tests.helpers import PUBLISHED_TINY, float_tolerance, network_reductions
from tests.published_reference import (
    PUBLISHED_PARAMETERS,
    _relative_attention,
    count_parameters,
    published_checkpoint,
    published_param,
    published_shapes,
    published_state_dict,
    reference_forward,
    sinusoidal_table,
    tower_channels,
)

# 16,384 bp -> 128 bins of 128 bp; crop 16 each side -> 96 output bins.
SMALL = dict(seq_len=16_384, max_len=128, embed_size=128, num_encoder_layers=2, crop_size=16, multiout_dim=3)
SMALL_DIMS = dict(width=64, stem_channels=32)
#: the same sizes as an epiformer ModelConfig (the tiny preset's tower, 2 layers, 2,048 feed-forward),
#: for the float32 bound of tests.helpers.network_reductions
SMALL_CONFIG = preset("tiny", **PUBLISHED_TINY, ffn_dim=2048)
BATCH = 2


def _inputs(param: dict, batch: int = BATCH, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 4, (batch, param["seq_len"]), generator=g)
    one_hot = F.one_hot(codes, 4).transpose(1, 2).to(dtype)  # (B, 4, L)
    phastcons = torch.rand(batch, param["seq_len"], generator=g, dtype=dtype)  # (B, L)
    return one_hot, phastcons


@pytest.fixture(scope="module")
def small():
    """(param, float64 state dict, one_hot, phastcons, output) of the small config."""
    param = published_param(**SMALL)
    sd = published_state_dict(param, **SMALL_DIMS, dtype=torch.float64)
    one_hot, cons = _inputs(param)
    return param, sd, one_hot, cons, reference_forward(sd, param, one_hot, cons)


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


# ---- param and layout ----------------------------------------------------------------------------
def test_published_param_defaults_and_overrides():
    param = published_param()
    assert (param["seq_len"], param["bin_size"], param["num_cnn_layer"], param["max_len"]) == (98_304, 128, 6, 768)
    assert (param["embed_size"], param["num_heads"], param["dim_feedforward"]) == (768, 4, 2048)
    assert (param["num_encoder_layers"], param["crop_size"], param["multiout_dim"]) == (8, 64, 1)
    assert param["if_cons"] is True and param["add_positional_encoding"] is True and param["batch_first"] is True
    dropouts = (param["att_dropout"], param["enc_dropout"], param["ptw_dropout"])
    assert dropouts == (0.4, 0.4, 0.1) and param["accum_iter"] == 8
    assert {"penalty", "if_augment", "lr", "batch_size", "epochs"} <= set(param)
    assert published_param(num_encoder_layers=4, multiout_dim=18)["num_encoder_layers"] == 4
    assert published_param()["num_encoder_layers"] == 8  # overrides do not leak into the defaults
    with pytest.raises(KeyError):
        published_param(num_layers=4)


def test_default_layout_has_the_published_parameter_count():
    shapes = published_shapes(published_param())
    assert tower_channels(384, 768, 7) == (384, 431, 484, 543, 610, 684, 768)
    assert count_parameters(shapes) == PUBLISHED_PARAMETERS == 54_819_693
    assert len(shapes) == 222
    assert next(iter(shapes)) == "conv.stem.0.weight" and list(shapes)[-1] == "ptw.linear.0.bias"
    assert shapes["conv.stem.0.weight"] == (384, 4, 15)
    assert shapes["conv.stem.1.module.0.num_batches_tracked"] == ()
    assert shapes["conv.tower.5.0.2.weight"] == (768, 684, 5)
    assert shapes["conv.tower.5.1.module.2.weight"] == (768, 768, 1)
    assert shapes["trans.layers.7.mha.distance_embedding.weight"] == (1535, 192)
    assert shapes["trans.layers.7.linear_net.3.weight"] == (768, 2048)
    assert shapes["ptw.conv.2.weight"] == (1536, 768, 1)
    assert shapes["ptw.linear.0.weight"] == (1, 1536)
    assert "trans.layers.8.norm1.weight" not in shapes
    # the 18-track variant only grows the last linear layer
    assert count_parameters(published_shapes(published_param(multiout_dim=18))) == PUBLISHED_PARAMETERS + 17 * 1537


def test_state_dict_matches_layout_and_is_seeded():
    param = published_param(**SMALL)
    shapes = published_shapes(param, **SMALL_DIMS)
    sd = published_state_dict(param, **SMALL_DIMS)
    assert list(sd) == list(shapes)
    assert all(tuple(sd[k].shape) == shapes[k] for k in sd)
    assert count_parameters(sd) == count_parameters(shapes)
    assert sd["trans.layers.1.mha.distance_embedding.weight"].shape == (2 * 128 - 1, 64 // 4)
    for key, tensor in sd.items():
        if key.endswith("num_batches_tracked"):
            assert tensor.dtype == torch.int64 and tensor.dim() == 0
        else:
            assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
        if key.endswith("running_var"):
            assert (tensor > 0).all()
    again = published_state_dict(param, **SMALL_DIMS)
    other = published_state_dict(param, **SMALL_DIMS, seed=1)
    wide = published_state_dict(param, **SMALL_DIMS, dtype=torch.float64)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    assert not torch.equal(sd["conv.stem.0.weight"], other["conv.stem.0.weight"])
    assert wide["conv.stem.0.weight"].dtype == torch.float64
    assert all(torch.equal(sd[k].to(wide[k].dtype), wide[k]) for k in sd)  # same values, cast


# ---- forward pass --------------------------------------------------------------------------------
def test_output_shape_range_and_spread(small):
    param, sd, one_hot, cons, out = small
    assert out.shape == (BATCH, 3, 128 - 2 * 16)
    assert out.dtype == torch.float64
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert 0.05 < float(out.mean()) < 10.0  # neither ~0 nor huge
    assert float(out.std(dim=-1).min()) > 1e-3  # varies along every track of every window
    assert float((out[0] - out[1]).abs().mean()) > 1e-3  # depends on the sequence
    assert not torch.allclose(out[:, 0], out[:, 1])  # tracks differ


def test_deterministic_and_dtype_consistent(small):
    param, sd, one_hot, cons, out = small
    assert torch.equal(reference_forward(sd, param, one_hot, cons), out)
    sd32 = published_state_dict(param, **SMALL_DIMS)  # float32 values == the float64 dict's
    out32 = reference_forward(sd32, param, one_hot.float(), cons.float())
    assert out32.dtype == torch.float32
    # float32 vs float64: float32 rounding through the network (1.8e-4 here; seen 1.1e-6)
    tol = float_tolerance(out.abs().max(), **network_reductions(SMALL_CONFIG))
    torch.testing.assert_close(out32.double(), out, rtol=0, atol=tol)
    # the state dict is cast to the input's dtype, whatever its own: the same float64 values through
    # the same code, so the same bits
    torch.testing.assert_close(reference_forward(sd32, param, one_hot, cons), out, rtol=0, atol=0)


def test_relative_attention_matches_an_explicit_loop():
    """The einsum form equals score[i, j] = (q_i.k_j + q_i.r[i - j + embed_size - 1]) / sqrt(d) per head."""
    g = torch.Generator().manual_seed(3)
    B, N, E, H, embed = 2, 7, 12, 3, 9
    d = E // H
    sd = {f"m.{n}.{p}": torch.randn(*((E, E) if p == "weight" else (E,)), generator=g, dtype=torch.float64)
          for n in ("query", "key", "value") for p in ("weight", "bias")}
    sd["m.distance_embedding.weight"] = torch.randn(2 * embed - 1, d, generator=g, dtype=torch.float64)
    x = torch.randn(B, N, E, generator=g, dtype=torch.float64)
    got = _relative_attention(x, sd, "m", H, embed)

    q = F.linear(x, sd["m.query.weight"], sd["m.query.bias"])
    k = F.linear(x, sd["m.key.weight"], sd["m.key.bias"])
    v = F.linear(x, sd["m.value.weight"], sd["m.value.bias"])
    r = sd["m.distance_embedding.weight"]
    want = torch.zeros(B, N, E, dtype=torch.float64)
    top = 0.0  # the largest |score|
    for b in range(B):
        for h in range(H):
            cols = slice(h * d, (h + 1) * d)
            for i in range(N):
                qi = q[b, i, cols]
                terms = [qi @ k[b, j, cols] + qi @ r[i - j + embed - 1] for j in range(N)]
                scores = torch.stack(terms) / math.sqrt(d)
                top = max(top, float(scores.abs().max()))
                want[b, i, cols] = torch.softmax(scores, dim=0) @ v[b, :, cols]
    # float64, summed in another order: the projections (12 terms), scores and softmax x values (3
    # sums); the scores' rounding reaches the output through softmax, whose slope is |v|, so the scale
    # is max|score| x max|v| (1.2e-12 here; seen 9e-15). A wrong offset r[j - i] moves outputs by O(1)
    tol = float_tolerance(top * float(v.abs().max()), terms=E, depth=3, dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=tol)


def test_relative_position_table_matters(small):
    param, sd, one_hot, cons, out = small
    zeroed = {k: (torch.zeros_like(v) if "distance_embedding" in k else v) for k, v in sd.items()}
    flipped = {k: (v.flip(0) if "distance_embedding" in k else v) for k, v in sd.items()}  # r[j - i]
    assert _rel_diff(reference_forward(zeroed, param, one_hot, cons), out) > 1e-3
    assert _rel_diff(reference_forward(flipped, param, one_hot, cons), out) > 1e-3


def test_sinusoidal_table_and_positional_encoding_matter(small):
    pe = sinusoidal_table(768, 768)
    assert pe.shape == (768, 768)
    assert torch.equal(pe[0, 0::2], torch.zeros(384, dtype=torch.float64))
    assert torch.equal(pe[0, 1::2], torch.ones(384, dtype=torch.float64))
    assert float(pe[5, 0]) == pytest.approx(math.sin(5.0))
    assert float(pe[5, 1]) == pytest.approx(math.cos(5.0))
    assert float(pe[5, 10]) == pytest.approx(math.sin(5.0 / 10000 ** (10 / 768)))
    assert float(pe[5, 11]) == pytest.approx(math.cos(5.0 / 10000 ** (10 / 768)))
    param, sd, one_hot, cons, out = small
    no_pe = dict(param, add_positional_encoding=False)
    assert _rel_diff(reference_forward(sd, no_pe, one_hot, cons), out) > 1e-3


def test_conservation_scaling(small):
    param, sd, one_hot, cons, out = small
    without = reference_forward(sd, param, one_hot, None)
    assert _rel_diff(out, without) > 1e-3  # exp(phastCons) scaling changes predictions
    torch.testing.assert_close(reference_forward(sd, param, one_hot, torch.zeros_like(cons)), without, rtol=0, atol=0)
    # missing (NaN) conservation counts as 0
    holes = cons.clone()
    holes[:, ::3] = float("nan")
    filled = cons.clone()
    filled[:, ::3] = 0.0
    with_holes = reference_forward(sd, param, one_hot, holes)
    torch.testing.assert_close(with_holes, reference_forward(sd, param, one_hot, filled), rtol=0, atol=0)  # same bits
    # with if_cons off, phastCons is ignored
    off = dict(param, if_cons=False)
    torch.testing.assert_close(reference_forward(sd, off, one_hot, cons), without, rtol=0, atol=0)


def test_sizes_that_do_not_fit_are_refused(small):
    param, sd, one_hot, cons, _ = small
    with pytest.raises(ValueError):  # relative table too short for 128 bins
        reference_forward(sd, dict(param, embed_size=64), one_hot, cons)
    with pytest.raises(ValueError):  # sinusoidal table too short
        reference_forward(sd, dict(param, max_len=100), one_hot, cons)
    with pytest.raises(ValueError):  # not a whole number of bins
        reference_forward(sd, param, one_hot[:, :, :-1], cons[:, :-1])


# ---- checkpoint ----------------------------------------------------------------------------------
@pytest.mark.parametrize("module_prefix", [False, True])
def test_checkpoint_round_trip(tmp_path, small, module_prefix):
    param, sd, one_hot, cons, out = small
    ckpt = published_checkpoint(param, sd, module_prefix=module_prefix, device="cpu")
    assert set(ckpt) == {
        "state_dict", "optimizer", "current_model_loss", "current_model_corr",
        "current_valid_loss", "current_valid_corr", "param",
    }  # fmt: skip
    prefix = "module." if module_prefix else ""
    assert list(ckpt["state_dict"]) == [prefix + k for k in sd]
    assert ckpt["param"] == param and ckpt["param"] is not param
    assert all(type(ckpt[k]) is float for k in ckpt if k.startswith("current_"))
    assert {"state", "param_groups"} <= set(ckpt["optimizer"])

    path = tmp_path / "brain.Epiformer.best_corr.pth.tar"
    torch.save(ckpt, path)
    loaded = torch.load(path, weights_only=True, map_location="cpu")
    assert set(loaded) == set(ckpt) and loaded["param"] == param
    assert loaded["optimizer"]["param_groups"][0]["lr"] == param["lr"]
    state = {k[len(prefix):]: v for k, v in loaded["state_dict"].items()}
    assert all(torch.equal(state[k], sd[k]) for k in sd)
    assert torch.equal(reference_forward(state, loaded["param"], one_hot, cons), out)
