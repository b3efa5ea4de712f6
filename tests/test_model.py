"""Tests for epiformer_cli.model: config and presets, the network, and the fast inference path."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.model import (
    PRESETS,
    Epiformer,
    ModelConfig,
    build_network,
    count_parameters,
    exponential_channels,
    load_config,
    prepare_for_inference,
    preset,
    save_config,
)
from tests.helpers import float_tolerance, network_reductions

# Exact parameter counts of the full-size preset (4 layers, width 768, conservation channel).
FULL_PARAMS_1_TRACK = 42_643_421
FULL_PARAMS_18_TRACKS = FULL_PARAMS_1_TRACK + 17 * (1536 + 1)


def _randomize_norms(model: Epiformer, seed: int = 0) -> Epiformer:
    """Non-trivial BatchNorm statistics, norm affines and position biases, so folding is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) * 1.5 + 0.5)
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_((torch.rand(mod.bias.shape, generator=g) - 0.5) * 0.4)
        for rel in model.rel_bias:
            rel.table.copy_(torch.randn(rel.table.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model() -> Epiformer:
    torch.manual_seed(0)
    return _randomize_norms(Epiformer(preset("tiny", n_tracks=3)))


def _inputs(cfg: ModelConfig, batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 5, (batch, cfg.seq_len), generator=g, dtype=torch.uint8)
    cons = torch.rand(batch, cfg.seq_len, generator=g)
    return model_inputs(codes, cons, cfg.conservation)


# ---- config ------------------------------------------------------------------------------------
def test_published_channel_rule():
    assert exponential_channels(384, 768, 7) == (384, 431, 484, 543, 610, 684, 768)
    assert preset("epiformer").tower_channels == (431, 484, 543, 610, 684, 768)


def test_full_preset_values():
    cfg = preset("epiformer")
    assert (cfg.seq_len, cfg.stem_channels, cfg.stem_kernel, cfg.tower_kernel) == (98_304, 384, 15, 5)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.head_hidden) == (768, 4, 4, 2048, 1536)
    assert (cfg.n_bins, cfg.crop_bins, cfg.out_bins, cfg.out_bp, cfg.crop_bp) == (768, 64, 640, 81_920, 8_192)
    assert (cfg.attn_dropout, cfg.head_dropout, cfg.conservation, cfg.in_channels) == (0.4, 0.1, "channel", 5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_128_bp_bins(name):
    cfg = preset(name)
    assert cfg.bin_size == 128
    assert cfg.n_bins * 128 == cfg.seq_len
    assert cfg.out_bins == cfg.n_bins - 2 * cfg.crop_bins > 0
    # shapes through the real network, on the meta device (no memory, no compute)
    with torch.device("meta"):
        model = build_network(cfg)
        x = torch.empty(2, cfg.in_channels, cfg.seq_len)
        z = model.stem(x)
        for block in model.tower:
            z = block(z)
        assert tuple(z.shape) == (2, cfg.d_model, cfg.seq_len // 128)
        assert tuple(model(x).shape) == (2, cfg.n_tracks, cfg.out_bins)


def test_config_round_trip(tmp_path):
    cfg = preset("small", n_tracks=18, conservation="scale")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg
    assert cfg.in_channels == 4 and preset("tiny", conservation="none").in_channels == 4


def test_config_rejects_unknown_keys(tmp_path):
    data = preset("tiny").to_dict() | {"n_layer": 3}
    with pytest.raises(UsageError, match="unknown model setting.*n_layer"):
        ModelConfig.from_dict(data)
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="c.json.*n_layer"):
        load_config(tmp_path / "c.json")
    with pytest.raises(InputFileError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(UsageError, match="unknown model preset 'huge'"):
        preset("huge")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seq_len": 1000}, "multiple of 128"),
        ({"d_model": 60}, "d_model"),
        ({"n_heads": 3}, "divisible by n_heads"),
        ({"crop_bins": 64}, "crop_bins"),
        ({"conservation": "log"}, "conservation"),
        ({"tower_channels": (36, 40, 45, 51, 64)}, "6 blocks"),
        ({"n_layers": True}, "integer"),
        ({"attn_dropout": 1.0}, "attn_dropout"),
        ({"stem_kernel": 14}, "odd"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(UsageError, match=message):
        dataclasses.replace(preset("tiny"), **change)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("tiny").n_layers = 3  # type: ignore[misc]


# ---- network -------------------------------------------------------------------------------------
def test_full_size_parameter_count_and_output_shape():
    with torch.device("meta"):  # counting needs no memory
        assert count_parameters(Epiformer(preset("epiformer"))) == FULL_PARAMS_1_TRACK
    torch.manual_seed(0)
    model18 = Epiformer(preset("epiformer", n_tracks=18)).eval()
    assert count_parameters(model18) == FULL_PARAMS_18_TRACKS
    # relative-position table sized by sequence length (2 * 768 - 1 offsets), not by width
    assert tuple(model18.rel_bias[0].table.shape) == (4, 2 * 768 - 1)
    # one full-size forward (bf16 fast path, ~0.3 s): (batch, tracks, 640 bins)
    fast = prepare_for_inference(model18, torch.bfloat16)
    y = fast(_inputs(model18.config, 1))
    assert tuple(y.shape) == (1, 18, 640)
    assert y.dtype == torch.float32 and bool(torch.isfinite(y).all()) and bool((y >= 0).all())


def test_forward_shape_and_input_check(tiny_model):
    cfg = tiny_model.config
    with torch.no_grad():
        y = tiny_model(_inputs(cfg, 2))
    assert tuple(y.shape) == (2, 3, cfg.out_bins) and bool((y > 0).all())
    with pytest.raises(ValueError, match="expected input"):
        tiny_model(torch.zeros(1, 4, cfg.seq_len))


def test_predict_codes_matches_manual_inputs(tiny_model):
    cfg = tiny_model.config
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 5, (2, cfg.seq_len), generator=g, dtype=torch.uint8)
    cons = torch.rand(2, cfg.seq_len, generator=g)
    with torch.no_grad():
        expected = tiny_model(model_inputs(codes, cons, "channel"))
    assert torch.equal(tiny_model.predict_codes(codes, cons), expected)
    assert torch.equal(tiny_model.predict_codes(codes.numpy(), cons.numpy()), expected)


def test_eval_is_deterministic_and_batch_independent(tiny_model):
    x = _inputs(tiny_model.config, 4)
    with torch.no_grad():
        a, b = tiny_model(x), tiny_model(x)
        singles = torch.cat([tiny_model(x[i:i + 1]) for i in range(4)])
    assert torch.equal(a, b)
    # oneDNN may block the eager model's convolutions differently for another batch size: float32
    # rounding through the network (4e-5 here); another window's outputs differ by 5e-5..2e-2
    tol = float_tolerance(a.abs().max(), **network_reductions(tiny_model.config))
    torch.testing.assert_close(singles, a, rtol=0, atol=tol)


def test_training_mode_uses_dropout_and_trains():
    torch.manual_seed(0)
    model = Epiformer(preset("tiny")).train()
    x = _inputs(model.config, 2)
    y1, y2 = model(x), model(x)
    assert not torch.equal(y1, y2)
    # no dropout directly before the softplus: no output is exactly softplus(0)
    assert not bool((y1 == torch.nn.functional.softplus(torch.zeros(()))).any())
    torch.nn.functional.poisson_nll_loss(y1, torch.rand_like(y1), log_input=False).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert model.rel_bias[0].table.grad.abs().sum() > 0


# ---- fast inference path ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["onednn", "gemm"])
def test_fast_path_matches_eval_model_fp32(tiny_model, impl):
    if impl == "onednn" and not torch.backends.mkldnn.is_available():
        pytest.skip("oneDNN not available")
    x = _inputs(tiny_model.config, 3)
    with torch.no_grad():
        expected = tiny_model(x)
    fast = prepare_for_inference(tiny_model, torch.float32, conv_impl=impl)
    got = fast(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    # folded norms and other kernels sum in other orders: float32 rounding through the network (4e-5
    # here). A BatchNorm folded without its statistics moves the outputs by 3e-3 mid-tower, 2e-2 in the
    # last block (by 5e-5 at the stem: this random model barely hears its first layers)
    tol = float_tolerance(expected.abs().max(), **network_reductions(tiny_model.config))
    torch.testing.assert_close(got, expected, rtol=0, atol=tol)


def test_fast_path_bf16_close_to_fp32(tiny_model):
    x = _inputs(tiny_model.config, 2)
    ref = prepare_for_inference(tiny_model, torch.float32)(x)
    got = prepare_for_inference(tiny_model, torch.bfloat16)(x)
    # bfloat16 rounding (2**-8) through 28 layers, each output rounded once per tap: the bound is 0.49
    # of the outputs (sensitive models reach 8e-2 on any CPU): this catches a bf16 path that computes
    # something else (wrong weights, layout or dtype: O(1)), not bf16's own drift
    bf16 = network_reductions(tiny_model.config, torch.bfloat16)
    assert float((got - ref).abs().max()) <= float_tolerance(ref.abs().max(), **bf16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_path_deterministic_at_any_batch_size(tiny_model, dtype):
    fast = prepare_for_inference(tiny_model, dtype)
    x = _inputs(tiny_model.config, 5, seed=7)
    full = fast(x)
    assert torch.equal(fast(x), full)
    singles = torch.cat([fast(x[i:i + 1]) for i in range(5)])
    pair = fast(x[1:3])
    if fast.conv_impl == "onednn":
        # oneDNN convolves each window on its own and the transformer runs one window at a time,
        # so a window's prediction is bit-identical whatever it is batched with
        assert torch.equal(singles, full)
        assert torch.equal(pair, full[1:3])
    else:  # pragma: no cover - torch builds without oneDNN
        tol = float_tolerance(full.abs().max(), **network_reductions(tiny_model.config, dtype))
        torch.testing.assert_close(singles, full, rtol=0, atol=tol)  # GEMMs blocked by batch size


def test_fast_path_does_not_change_the_model(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.train()
    try:
        fast = prepare_for_inference(tiny_model)
        x = _inputs(tiny_model.config, 1)
        y = fast(x)
    finally:
        tiny_model.eval()
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    with torch.no_grad():
        want = tiny_model(x)  # the eager pass: float32 rounding through the network apart
        tol = float_tolerance(want.abs().max(), **network_reductions(tiny_model.config))
        torch.testing.assert_close(y, want, rtol=0, atol=tol)


def test_scale_and_none_conservation_modes():
    for mode in ("scale", "none"):
        torch.manual_seed(0)
        model = _randomize_norms(Epiformer(preset("tiny", conservation=mode)))
        g = torch.Generator().manual_seed(0)
        codes = torch.randint(0, 4, (1, model.config.seq_len), generator=g, dtype=torch.uint8)
        cons = torch.rand(1, model.config.seq_len, generator=g)
        x = model_inputs(codes, cons, mode)
        assert x.shape[1] == 4
        with torch.no_grad():
            want = model(x)  # the eager pass: float32 rounding through the network apart
            torch.testing.assert_close(prepare_for_inference(model)(x), want, rtol=0,
                                       atol=float_tolerance(want.abs().max(), **network_reductions(model.config)))
        y_cons = model.predict_codes(codes, cons)
        y_zero = model.predict_codes(codes, torch.zeros_like(cons))
        assert torch.equal(y_cons, y_zero) == (mode == "none")

