"""The fast paths of issue 25: the incremental tower's reference through the fast tower's work
buffers, margin workspaces, and the Transformer's sliced batches and kept buffers."""

import pytest
import torch

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.model.fast import _onednn_available, prepare_for_inference, trunk_chunk_rows
from epiformer_cli.model.incremental import IncrementalTower
from tests.helpers import PUBLISHED_TINY, float_tolerance, network_reductions, sensitive_model

CONV_IMPLS = ["gemm", pytest.param("onednn", marks=pytest.mark.skipif(
    not _onednn_available(torch.device("cpu")), reason="no oneDNN convolution here"))]


def window(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 4, (1, cfg.seq_len), dtype=torch.uint8, generator=g)
    cons = torch.rand(1, cfg.seq_len, generator=g)
    return model_inputs(codes, cons, cfg.conservation)


def taps_reference(tower, x):
    """The former ``IncrementalTower.reference``: every stage in fresh tensors, the tower blocks'
    convolutions as k row-shifted matrix multiplies (the arithmetic the incremental path had)."""
    cfg, pad, length = tower.config, tower.pad, tower.config.seq_len
    a = torch.zeros(length + 2 * pad, cfg.in_channels)
    a[pad:pad + length] = x[0].t()
    inputs = []
    for i, st in enumerate(tower.stages):
        inputs.append(a)
        h = st.kernel // 2
        if i == 0:
            cols = a.as_strided((length, st.kernel * st.c_in), (st.c_in, 1), (pad - h) * st.c_in)
            u = torch.addmm(st.bias, cols, st.weight)
        else:
            u = torch.addmm(st.bias, a[pad - h:pad - h + length], st.weight[0])
            for tap in range(1, st.kernel):
                u.addmm_(a[pad - h + tap:pad - h + tap + length], st.weight[tap])
        st.residual_(u)
        length //= 2
        y = torch.maximum(u[0:2 * length:2], u[1:2 * length:2])
        if i + 1 < len(tower.stages):
            a = torch.zeros(length + 2 * pad, tower.stages[i + 1].c_in)
            tower.stages[i + 1].activate_input(y, out=a[pad:pad + length])
    return inputs, y


@pytest.mark.parametrize("conv_impl", CONV_IMPLS)
@pytest.mark.parametrize("family", [{}, PUBLISHED_TINY], ids=["epiformer", "published"])
def test_the_reference_through_the_fast_tower_equals_the_tap_by_tap_one(conv_impl, family):
    model = sensitive_model(seed=4, **family)
    cfg = model.config
    tower = IncrementalTower(prepare_for_inference(model, conv_impl=conv_impl))
    x = window(cfg)
    with torch.inference_mode():
        want_inputs, want_z = taps_reference(tower, x)
    state = tower.reference(x)
    # oneDNN and the GEMM taps sum each convolution in other orders: float32 rounding through the tower
    # (a stage at the wrong offset or a margin not zero moves values by O(1))
    tol = float_tolerance(want_z.abs().max(), **network_reductions(cfg, trunk=False))
    torch.testing.assert_close(state.z, want_z, rtol=0, atol=tol)
    assert len(state.inputs) == len(want_inputs)
    for got, want in zip(state.inputs, want_inputs):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=float_tolerance(
            want.abs().max(), **network_reductions(cfg, trunk=False)))
        margin = got[:tower.pad].abs().sum() + got[-tower.pad:].abs().sum()
        assert float(margin) == 0.0  # the zero padding the patches read at the window's edges
    # the plain fast forward computes the same tower (its buffers have other margins)
    full = prepare_for_inference(model, conv_impl=conv_impl)(x)
    torch.testing.assert_close(tower.finish(state.z), full, rtol=0,
                               atol=float_tolerance(full.abs().max(), **network_reductions(cfg)))


def test_reference_slots_keep_their_own_state():
    """ISM holds both views' states at once: a reference in slot 1 leaves slot 0's intact, and a
    second reference in the same slot replaces it."""
    model = sensitive_model(seed=5)
    cfg = model.config
    tower = IncrementalTower(prepare_for_inference(model))
    x0, x1 = window(cfg, seed=2), window(cfg, seed=3)
    pos = [100, cfg.seq_len // 2]
    cols = torch.stack([x1[0, :, p:p + 1] for p in pos])
    s0 = tower.reference(x0, slot=0)
    z0, alt0 = s0.z.clone(), tower.alternative_z_many(s0, pos, cols)
    s1 = tower.reference(x1, slot=1)
    assert torch.equal(s0.z, z0)  # one path, one machine: exact
    assert torch.equal(tower.alternative_z_many(s0, pos, cols), alt0)
    assert not torch.equal(s1.z, s0.z)
    again = tower.reference(x0, slot=1)
    assert torch.equal(again.z, z0)  # the same window in another slot: the same bits
    assert s1.z.data_ptr() == again.z.data_ptr()  # slot 1's buffers, reused


@pytest.mark.parametrize("conv_impl", CONV_IMPLS)
def test_a_workspace_with_margins_gives_the_towers_output(conv_impl):
    model = sensitive_model(seed=6)
    cfg = model.config
    fast = prepare_for_inference(model, conv_impl=conv_impl)
    batch = 2 if conv_impl == "gemm" else 1
    x = torch.cat([window(cfg, seed=s) for s in range(batch)])
    with torch.inference_mode():
        want = fast.tower(x, fast.new_workspace(batch)).clone()
        got = fast.tower(x, fast.new_workspace(batch, margin=40))
    torch.testing.assert_close(got, want, rtol=0, atol=float_tolerance(
        want.abs().max(), **network_reductions(cfg, trunk=False)))
    with pytest.raises(ValueError, match="narrower"):
        fast.new_workspace(1, margin=1)
    if conv_impl == "onednn":
        with pytest.raises(ValueError, match="one window at a time"), torch.inference_mode():
            fast.tower(torch.cat([x, x]), fast.new_workspace(2, margin=40))


def test_finish_many_in_slices_equals_one_window_at_a_time():
    model = sensitive_model(seed=7)
    cfg = model.config
    fast = prepare_for_inference(model)
    assert trunk_chunk_rows(cfg) == 16  # so 40 windows are slices of 16, 16 and 8
    z = torch.randn(40, cfg.n_bins, cfg.d_model, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        many = fast.finish_many(z)
        one = fast.finish(z)
        # the kept work buffers of other row counts in between change nothing
        fast.finish_many(z[:5])
        again = fast.finish_many(z)
    torch.testing.assert_close(many, one, rtol=0, atol=float_tolerance(
        one.abs().max(), **network_reductions(cfg, tower=False)))
    assert torch.equal(again, many)
    assert not torch.equal(many[0], many[1])


def test_the_trunk_runs_outside_inference_mode_after_inside():
    """The Transformer's kept buffers are inference tensors when made in inference mode, which
    cannot be written outside it: the trunk keeps one set per mode."""
    model = sensitive_model(seed=9)
    cfg = model.config
    fast = prepare_for_inference(model)
    z = torch.randn(2, cfg.n_bins, cfg.d_model, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        inside = fast.finish(z)
    with torch.no_grad():
        outside = fast.finish(z)
    assert torch.equal(outside, inside)
