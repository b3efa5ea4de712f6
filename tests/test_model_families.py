"""Tests for epiformer_cli.model.families: the registry from ``arch`` to a family's network, fast
trunk and checkpoint import; each family's fast and incremental paths against its plain forward;
a third family added from outside the package; and model/ importing without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.errors import ModelFileError, UsageError
from epiformer_cli.model import families
from epiformer_cli.model.checkpoint import read_published_checkpoint
from epiformer_cli.model.config import ModelConfig, preset
from epiformer_cli.model.families import ModelFamily, archs, build_network, family, family_description
from epiformer_cli.model.fast import prepare_for_inference
from epiformer_cli.model.incremental import IncrementalTower
from epiformer_cli.model.modelfile import load_model, save_model
from epiformer_cli.model.network import Epiformer
from epiformer_cli.model.prepared import PreparedTrunk
from epiformer_cli.model.published import PublishedEpiformer
from epiformer_cli.model.tower import NetworkBase
from tests.helpers import PUBLISHED_TINY, with_batchnorm_statistics

MODEL_DIR = Path(__file__).resolve().parents[1] / "epiformer_cli" / "model"


def fp32_tolerance(cfg: ModelConfig) -> float:
    """Relative float32 tolerance of a fast path against the plain forward.

    A float32 sum of K products is off by at most about K * eps relative to the sum of their
    magnitudes (Higham's gamma_K); the longest sums in the network are a tower convolution
    (kernel x channels terms), the feed-forward's hidden width and attention over the bins. The
    two paths order their sums differently, so they may differ by that much (and in practice by
    far less: errors of random sign grow like sqrt(K))."""
    longest = max(cfg.stem_kernel * cfg.in_channels, cfg.tower_kernel * max(cfg.tower_channels),
                  cfg.ffn_dim, cfg.d_model, cfg.n_bins)
    return longest * torch.finfo(torch.float32).eps


def assert_close_rel(got: torch.Tensor, want: torch.Tensor, cfg: ModelConfig) -> None:
    """Max error relative to the largest output, within :func:`fp32_tolerance`."""
    assert got.shape == want.shape
    err = float((got.double() - want.double()).abs().max() / want.double().abs().max())
    assert err <= fp32_tolerance(cfg), (err, fp32_tolerance(cfg))


def inputs(cfg: ModelConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 5, (batch, cfg.seq_len), generator=g, dtype=torch.uint8)
    return model_inputs(codes, torch.rand(batch, cfg.seq_len, generator=g), cfg.conservation)


def random_network(cfg: ModelConfig, seed: int = 0) -> NetworkBase:
    torch.manual_seed(seed)
    return with_batchnorm_statistics(build_network(cfg)).eval()


def check_fast_and_incremental(model: NetworkBase) -> None:
    """The family's fast path and incremental substitution path against its plain forward."""
    cfg = model.config
    x = inputs(cfg, batch=1)
    with torch.no_grad():
        want = model(x)
    fast = prepare_for_inference(model, torch.float32)
    assert_close_rel(fast(x), want, cfg)
    # a 3 bp substitution through the incremental tower == the plain forward of the edited window
    pos, alt = 1000, torch.tensor([[2, 0, 3]], dtype=torch.uint8)
    edited = x[:1].clone()
    column = model_inputs(alt, torch.rand(1, 3), cfg.conservation)
    edited[:, :, pos:pos + 3] = column
    tower = IncrementalTower(fast)
    state = tower.reference(x[0])
    got = tower.finish(tower.alternative_z(state, [pos], column))
    with torch.no_grad():
        assert_close_rel(got, model(edited), cfg)
    assert_close_rel(tower.finish_many(tower.alternative_z_many(state, [pos], column)), got, cfg)


# ---- the registry ------------------------------------------------------------------------------
def test_the_built_in_families_and_what_they_build():
    assert archs()[:2] == ("epiformer", "published")
    assert family("epiformer").network is Epiformer and family("published").network is PublishedEpiformer
    assert type(build_network(preset("tiny"))) is Epiformer
    assert type(build_network(preset("tiny", **PUBLISHED_TINY))) is PublishedEpiformer
    for arch in ("epiformer", "published"):
        assert family(arch).arch == arch and family(arch) is family(arch)  # loaded once
    # only the published family has a foreign checkpoint format, and needs its trunk in fp32
    assert family("published").import_checkpoint is read_published_checkpoint
    assert family("epiformer").import_checkpoint is None
    assert not family("epiformer").trunk_float32 and family("published").trunk_float32
    assert family_description("published").startswith("published Epiformer (post-LN")
    assert family_description("unknown") == "unknown"


def test_an_unknown_arch_is_a_clear_error():
    with pytest.raises(UsageError, match=r"unknown model family \(arch\) 'bpnet': known families are epiformer, published"):
        family("bpnet")
    with pytest.raises(UsageError, match="arch must be one of epiformer, published, not 'bpnet'"):
        preset("tiny", arch="bpnet")
    data = preset("tiny").to_dict() | {"arch": "bpnet"}
    with pytest.raises(ModelFileError, match="m.pt: invalid model config: arch must be one of"):
        ModelConfig.from_dict(data, error=ModelFileError, source="m.pt")


def test_register_refuses_a_taken_arch_and_keeps_the_built_ins():
    with pytest.raises(ValueError, match="already registered"):
        families.register(families.family("epiformer"))
    with pytest.raises(ValueError, match="not a registered add-on"):
        families.unregister("published")
    with pytest.raises(ValueError, match="not a registered add-on"):
        families.unregister("never-registered")


@pytest.mark.parametrize("overrides", [{}, PUBLISHED_TINY], ids=["epiformer", "published"])
def test_each_family_fast_and_incremental_paths_match_its_forward(overrides):
    check_fast_and_incremental(random_network(preset("tiny", n_tracks=2, **overrides)))


def test_the_published_trunk_runs_in_fp32_under_a_bf16_tower():
    model = random_network(preset("tiny", n_tracks=2, **PUBLISHED_TINY))
    assert prepare_for_inference(model, torch.bfloat16).trunk_dtype == torch.float32
    assert prepare_for_inference(random_network(preset("tiny")), torch.bfloat16).trunk_dtype == torch.bfloat16


# ---- a third family, added without touching epiformer_cli ---------------------------------------
class PooledNetwork(NetworkBase):
    """A toy family: the shared tower, then one linear layer per bin and a softplus."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.out = nn.Linear(cfg.d_model, cfg.n_tracks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.tower_output(x)  # (batch, n_bins, d_model)
        c = self.config.crop_bins
        return F.softplus(self.out(z[:, c:z.shape[1] - c])).transpose(1, 2)


class PooledTrunk(PreparedTrunk):
    def __init__(self, model: PooledNetwork, dtype: torch.dtype) -> None:
        self.config = model.config
        self.w = model.out.weight.detach().to(dtype)
        self.b = model.out.bias.detach().to(dtype)

    def transformer(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.tracks(torch.addmm(self.b, self.cropped_rows(x), self.w.t()), x.shape[0])


@pytest.fixture()
def pooled_family():
    fam = families.register(ModelFamily(arch="pooled", description="pooled (tower and a linear head)",
                                        network=PooledNetwork, prepare_trunk=PooledTrunk))
    try:
        yield fam
    finally:
        families.unregister("pooled")


def test_a_third_family_works_through_the_registry(pooled_family, tmp_path):
    cfg = preset("tiny", n_tracks=2, arch="pooled")
    model = random_network(cfg)
    assert type(model) is PooledNetwork and family_description("pooled") == "pooled (tower and a linear head)"
    check_fast_and_incremental(model)
    # a model file of the new family reads back as that family, with the same outputs
    save_model(tmp_path / "m.pt", model, cfg, ["a", "b"])
    loaded = load_model(tmp_path / "m.pt")
    assert type(loaded.model) is PooledNetwork and loaded.config == cfg
    x = inputs(cfg, batch=1)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_an_unregistered_family_is_unknown_again(pooled_family):
    families.unregister("pooled")
    try:
        with pytest.raises(UsageError, match="arch must be one of epiformer, published, not 'pooled'"):
            preset("tiny", arch="pooled")
    finally:
        families.register(pooled_family)  # for the fixture's own clean-up


# ---- structure ---------------------------------------------------------------------------------
def _model_imports() -> dict:
    """model module -> the model modules it imports (anywhere in the file, typing-only included)."""
    graph = {}
    for path in MODEL_DIR.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("epiformer_cli.model."):
                found.add(node.module.rsplit(".", 1)[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "epiformer_cli.model":
                found.update(a.name for a in node.names)
        graph[path.stem] = found - {path.stem}
    return graph


def test_model_modules_import_each_other_without_a_cycle():
    graph = _model_imports()
    assert graph["families"] == set()  # the registry names its families' modules, never imports them
    done, path = set(), []

    def visit(mod: str) -> None:
        assert mod not in path, f"import cycle: {' -> '.join(path[path.index(mod):] + [mod])}"
        if mod in done or mod == "__init__":
            return
        path.append(mod)
        for dep in graph.get(mod, ()):
            visit(dep)
        path.pop()
        done.add(mod)

    for mod in graph:
        visit(mod)


def test_the_fast_paths_use_no_private_name_of_another_module():
    for name in ("fast", "incremental"):
        tree = ast.parse((MODEL_DIR / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not any(a.name.startswith("_") for a in node.names), (name, ast.dump(node))
            # attributes with a leading underscore only on self or the module's own torch internals
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                owner = base.id if isinstance(base, ast.Name) else ast.unparse(base)
                assert owner in ("self", "torch", "torch._C", "torch.ops.mkldnn"), f"{name}.py: {owner}.{node.attr}"
