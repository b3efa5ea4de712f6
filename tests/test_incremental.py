"""The SNV fast path equals a full forward pass (within float rounding), at any batch size."""

import numpy as np
import pytest
import torch

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.model.incremental import IncrementalTower, changed_bins
from epiformer_cli.model.fast import prepare_for_inference
from tests.helpers import PUBLISHED_TINY, float_tolerance, network_reductions
from tests.helpers import sensitive_model as random_model


def window(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 4, (1, cfg.seq_len), dtype=torch.uint8, generator=g)
    cons = torch.rand(1, cfg.seq_len, generator=g)
    return codes, cons


@pytest.mark.parametrize("conservation,family", [
    ("channel", {}), ("scale", {}), ("none", {}),
    ("scale", PUBLISHED_TINY), ("none", {**PUBLISHED_TINY, "conservation": "none"}),
], ids=["channel", "scale", "none", "published", "published-none"])
def test_fast_path_equals_full_forward(conservation, family):
    model = random_model(**{"conservation": conservation, **family})
    cfg = model.config
    fast = prepare_for_inference(model)
    tower = IncrementalTower(fast)
    codes, cons = window(cfg)
    x = model_inputs(codes, cons, conservation)
    state = tower.reference(x)
    ref = tower.finish(state.z)
    full_ref = fast(x)
    # the patched tower and the full pass sum in other orders: the bound of float32 rounding through
    # the whole network (5.6e-5 of the largest output here; Zen 4 saw 6.1e-6 on outputs of 0.62). A
    # real bug (a change missed or put in the wrong bin) moves outputs by the effect itself, up to
    # 2e-2..1.5e-1 per value for these sensitive models: 400x the bound
    tol = float_tolerance(full_ref.abs().max(), **network_reductions(cfg))
    torch.testing.assert_close(ref, full_ref, rtol=0, atol=tol)
    rng = np.random.default_rng(3)
    L = cfg.seq_len
    # window edges, bin and pool boundaries, and random places
    positions = [0, 1, 2, 7, 127, 128, L // 2, L - 129, L - 2, L - 1] + rng.integers(0, L, 10).tolist()
    alts = codes.repeat(len(positions), 1)
    for i, p in enumerate(positions):
        alts[i, p] = (alts[i, p] + 1 + i % 3) % 4
    xa = model_inputs(alts, cons.expand(len(positions), -1), conservation)
    columns = torch.stack([xa[i, :, p:p + 1] for i, p in enumerate(positions)])
    alt = tower.finish(tower.alternative_z(state, positions, columns))
    full_alt = fast(xa)
    tol = float_tolerance(max(full_alt.abs().max(), full_ref.abs().max()), **network_reductions(cfg))
    torch.testing.assert_close(alt, full_alt, rtol=0, atol=tol)
    # the effects themselves (alt - ref) agree, not just the levels: each sums |alt - ref| over the
    # out_bins, 2 x out_bins outputs whose errors add as a random walk
    effect_fast = (alt - ref).abs().sum(-1)
    effect_full = (full_alt - full_ref).abs().sum(-1)
    assert float(effect_full.max()) > 1e-3  # the test model does respond to single bases
    effect_tol = float_tolerance(max(full_alt.abs().max(), full_ref.abs().max()), summed=2 * cfg.out_bins,
                                 **network_reductions(cfg))
    torch.testing.assert_close(effect_fast, effect_full, rtol=0, atol=effect_tol)


@pytest.mark.parametrize("family", [{}, PUBLISHED_TINY], ids=["epiformer", "published"])
@pytest.mark.parametrize("width", [1, 3])
def test_batched_propagation_equals_one_at_a_time(family, width):
    """``alternative_z_many`` (ISM's path) gives the z of ``alternative_z`` within float rounding,
    at the window's edges and pool boundaries too, and so the same predictions as full passes."""
    model = random_model(seed=6, **family)
    cfg = model.config
    fast = prepare_for_inference(model)
    tower = IncrementalTower(fast)
    codes, cons = window(cfg, seed=7)
    state = tower.reference(model_inputs(codes, cons, cfg.conservation))
    L = cfg.seq_len
    positions = [0, 1, 2, 127, 128, 129, L // 2, L - width - 1, L - width]
    alts = codes.repeat(len(positions), 1)
    for i, p in enumerate(positions):
        alts[i, p:p + width] = (alts[i, p:p + width] + 1 + i % 3) % 4
    xa = model_inputs(alts, cons.expand(len(positions), -1), cfg.conservation)
    columns = torch.stack([xa[i, :, p:p + width] for i, p in enumerate(positions)])
    one_at_a_time = tower.alternative_z(state, positions, columns)
    batched = tower.alternative_z_many(state, positions, columns)
    # batched patches are other matrix shapes, so other kernel blockings: float32 rounding through the
    # tower (2.8e-5 of |z|), where a patch at the wrong offset moves z by O(|z|)
    z_tol = float_tolerance(one_at_a_time.abs().max(), **network_reductions(cfg, trunk=False))
    torch.testing.assert_close(batched, one_at_a_time, rtol=0, atol=z_tol)
    assert not torch.equal(batched[0], state.z)  # each row holds its own change
    # batched matrix multiplies round differently (measured up to 2.5e-5 relative on these outputs):
    # float32 rounding through the whole network
    want = fast(xa)
    torch.testing.assert_close(tower.finish_many(batched), want, rtol=0,
                               atol=float_tolerance(want.abs().max(), **network_reductions(cfg)))


def test_multi_base_substitution_and_batch_independence():
    model = random_model(seed=2)
    cfg = model.config
    fast = prepare_for_inference(model)
    tower = IncrementalTower(fast)
    codes, cons = window(cfg, seed=5)
    state = tower.reference(model_inputs(codes, cons, cfg.conservation))
    L = cfg.seq_len
    positions = [0, 300, L - 3, 5000]
    alts = codes.repeat(len(positions), 1)
    for i, p in enumerate(positions):
        alts[i, p:p + 3] = (alts[i, p:p + 3] + 2) % 4
    xa = model_inputs(alts, cons.expand(len(positions), -1), cfg.conservation)
    columns = torch.stack([xa[i, :, p:p + 3] for i, p in enumerate(positions)])
    z = tower.alternative_z(state, positions, columns)
    want = fast(xa)  # the full pass sums in other orders: float32 rounding through the network
    torch.testing.assert_close(tower.finish(z), want, rtol=0,
                               atol=float_tolerance(want.abs().max(), **network_reductions(cfg)))
    one_by_one = torch.cat([tower.alternative_z(state, [p], columns[i:i + 1]) for i, p in enumerate(positions)])
    assert torch.equal(one_by_one, z)  # bit-identical whatever the batch
    reordered = tower.alternative_z(state, positions[::-1], columns.flip(0))
    assert torch.equal(reordered.flip(0), z)


def test_only_the_receptive_field_changes():
    model = random_model(seed=3)
    cfg = model.config
    tower = IncrementalTower(prepare_for_inference(model))
    codes, cons = window(cfg)
    x = model_inputs(codes, cons, cfg.conservation)
    state = tower.reference(x)
    p = 5000
    col = x[:, :, p:p + 1].clone()
    col[0, :4, 0] = torch.roll(col[0, :4, 0], 1)
    z = tower.alternative_z(state, [p], col)[0]
    changed = torch.nonzero((z != state.z).any(-1)).flatten()
    assert 0 < len(changed) <= changed_bins(cfg)
    assert abs(int(changed.float().mean()) - p // cfg.bin_size) <= 2


def test_rejects_substitutions_outside_the_window():
    model = random_model()
    tower = IncrementalTower(prepare_for_inference(model))
    codes, cons = window(model.config)
    state = tower.reference(model_inputs(codes, cons, model.config.conservation))
    with pytest.raises(ValueError):
        tower.alternative_z(state, [model.config.seq_len], torch.zeros(1, 5, 1))
