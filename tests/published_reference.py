"""An independent, literal reference of the *published* Epiformer (Li et al., Science 2023).

Written only from the facts in the project's reference note on the original research code
("original-epiformer.md", sections "Architecture" and "The published checkpoint files", and its
state-dict listing), not from the research code and not from ``epiformer_cli``. It exists so the test
suite can check epiformer's import of the published checkpoints without the real files:

* :func:`published_param` - the ``param`` dict the training script stores in a checkpoint;
* :func:`published_shapes` / :func:`published_state_dict` - every key and shape of the published
  state dict, filled with seeded random weights scaled so activations stay O(1);
* :func:`published_checkpoint` - the dict the training script ``torch.save``s;
* :func:`reference_forward` - the published forward pass in eval mode (BatchNorm on running
  statistics, no dropout), written out step by step with ``torch.nn.functional`` only.

It imports nothing from ``epiformer_cli`` on purpose: it is the yardstick, not the thing measured.
Clarity beats speed here (the relative-position term is gathered into an (L, L, head size) tensor).

Units: sequence positions are base pairs (bp); after the conv tower one position is one bin of
``bin_size`` (128) bp. ``B`` is the batch size, ``L`` the input length in bp, ``N = L / bin_size`` the
number of bins, ``E`` the transformer width, ``T`` the number of output tracks.

Decisions where the note is silent (see also the individual docstrings):

* query/key/value features are split into heads as contiguous blocks of ``E / num_heads`` features
  (head h owns features ``h*d .. (h+1)*d - 1``) and the heads are concatenated back in that order;
* the relative score uses ``r[i - j + embed_size - 1]`` for query bin ``i`` and key bin ``j``;
* the sinusoidal table has ``E`` (transformer width) features, frequencies ``10000^(-2i/E)``;
* 'same' padding of the odd-sized convolutions is symmetric, zero-valued; max-pooling is kernel 2,
  stride 2, no padding;
* the offset of the relative table is ``param["embed_size"]`` (the table has ``2*embed_size - 1`` rows),
  which need not equal the width ``E`` read from the weights.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PUBLISHED_PARAMETERS",
    "published_param",
    "tower_channels",
    "published_shapes",
    "count_parameters",
    "published_state_dict",
    "published_checkpoint",
    "sinusoidal_table",
    "reference_forward",
]

#: Trainable parameters of the published 8-layer, 1-track model (header of the state-dict listing).
PUBLISHED_PARAMETERS = 54_819_693

BN_EPS = 1e-5  # torch.nn.BatchNorm1d default
LN_EPS = 1e-5  # torch.nn.LayerNorm default

# Init scales of published_state_dict (variance of a weight = gain / fan_in). Measured with a random
# 98,304 bp input through the default model: every tower stage has std 1.0-2.4, attention scores
# std 0.06-2.7, softplus outputs 1.00-1.12 (std 0.02 over bins: 8 random post-LN layers average the
# positions towards each other). On a small 6-block tower a conv gain of 1.0 shrank the signal to
# std ~0.26 and 2.0 grew it to ~18.
CONV_GAIN = 1.2
LINEAR_GAIN = 1.0
REL_TABLE_STD = 1.0  # q.r comparable to q.k: a flipped or shifted relative index changes outputs ~1%

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


# ---- param ---------------------------------------------------------------------------------------
_PUBLISHED_PARAM = {
    # construction arguments (values of the published brain model)
    "seq_len": 98_304,  # input length, bp
    "bin_size": 128,  # bp per output bin (= 2 ** (num_cnn_layer + 1))
    "num_cnn_layer": 6,  # tower blocks after the stem
    "max_len": 768,  # rows of the absolute sinusoidal table
    "add_positional_encoding": True,
    "embed_size": 768,  # transformer width; also sizes the relative table (2 * embed_size - 1 rows)
    "num_heads": 4,
    "att_dropout": 0.4,
    "dim_feedforward": 2048,
    "enc_dropout": 0.4,
    "batch_first": True,
    "num_encoder_layers": 8,
    "crop_size": 64,  # bins cropped on each side before the head
    "ptw_dropout": 0.1,
    "multiout_dim": 1,  # number of output tracks
    "if_cons": True,  # input = one_hot * exp(phastCons)
    "if_augment": True,
    "penalty": 0.0,  # the note gives no value; it does not enter the forward pass
    "accum_iter": 8,
    # training settings (plausible values from the note: Adam, lr 1e-4, batch 8, 100 epochs)
    "lr": 1e-4,
    "batch_size": 8,
    "epochs": 100,
}


def published_param(**overrides) -> dict:
    """The ``param`` dict as the research training script stores it in a checkpoint.

    Plain Python scalars only (so ``torch.load(weights_only=True)`` accepts it). ``overrides`` replace
    fields, e.g. ``published_param(num_encoder_layers=4, multiout_dim=18)``; an unknown field name
    raises ``KeyError`` (a typo would otherwise silently build the published model).
    """
    unknown = sorted(set(overrides) - set(_PUBLISHED_PARAM))
    if unknown:
        raise KeyError(f"unknown published param field(s): {unknown}")
    param = dict(_PUBLISHED_PARAM)
    param.update(overrides)
    return param


# ---- layout --------------------------------------------------------------------------------------
def tower_channels(start: int, end: int, num: int) -> Tuple[int, ...]:
    """``num`` channel counts growing exponentially from ``start`` to ``end``, rounded to integers:
    ``round(start * exp(log(end / start) / (num - 1)) ** i)``; (384, 768, 7) gives
    (384, 431, 484, 543, 610, 684, 768). The first is the stem's, the rest are the tower blocks'."""
    base = math.exp(math.log(end / start) / (num - 1))
    return tuple(int(np.round(start * base**i)) for i in range(num))


def published_shapes(
    param: dict,
    *,
    stem_channels: int = 384,
    width: int = 768,
    tower_kernel: int = 5,
    stem_kernel: int = 15,
) -> Dict[str, Tuple[int, ...]]:
    """Every key of the published state dict, in order, with its shape (no tensors are made).

    ``width`` is the last tower channel count and the transformer width E; layers, heads,
    feed-forward width, tracks and the relative-table size come from ``param``
    (``num_encoder_layers``, ``num_heads``, ``dim_feedforward``, ``multiout_dim``, ``embed_size``).
    """
    n_blocks = int(param["num_cnn_layer"])
    heads = int(param["num_heads"])
    if width % heads:
        raise ValueError(f"width {width} is not divisible by num_heads {heads}")
    head_size = width // heads
    ffn = int(param["dim_feedforward"])
    tracks = int(param["multiout_dim"])
    rel_rows = 2 * int(param["embed_size"]) - 1
    chans = tower_channels(stem_channels, width, n_blocks + 1)

    shapes: Dict[str, Tuple[int, ...]] = {}

    def batchnorm(prefix: str, c: int) -> None:
        shapes[f"{prefix}.weight"] = (c,)
        shapes[f"{prefix}.bias"] = (c,)
        shapes[f"{prefix}.running_mean"] = (c,)
        shapes[f"{prefix}.running_var"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def conv(prefix: str, c_out: int, c_in: int, k: int) -> None:
        shapes[f"{prefix}.weight"] = (c_out, c_in, k)
        shapes[f"{prefix}.bias"] = (c_out,)

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        shapes[f"{prefix}.weight"] = (n_out, n_in)
        shapes[f"{prefix}.bias"] = (n_out,)

    # stem: conv, residual(BN, GELU, conv 1x1), maxpool
    conv("conv.stem.0", chans[0], 4, stem_kernel)
    batchnorm("conv.stem.1.module.0", chans[0])
    conv("conv.stem.1.module.2", chans[0], chans[0], 1)
    # tower: (BN, GELU, conv k), residual(BN, GELU, conv 1x1), maxpool
    for b in range(n_blocks):
        c_in, c_out = chans[b], chans[b + 1]
        batchnorm(f"conv.tower.{b}.0.0", c_in)
        conv(f"conv.tower.{b}.0.2", c_out, c_in, tower_kernel)
        batchnorm(f"conv.tower.{b}.1.module.0", c_out)
        conv(f"conv.tower.{b}.1.module.2", c_out, c_out, 1)
    # transformer
    for i in range(int(param["num_encoder_layers"])):
        p = f"trans.layers.{i}"
        linear(f"{p}.mha.query", width, width)
        linear(f"{p}.mha.key", width, width)
        linear(f"{p}.mha.value", width, width)
        shapes[f"{p}.mha.distance_embedding.weight"] = (rel_rows, head_size)
        linear(f"{p}.linear_net.0", ffn, width)
        linear(f"{p}.linear_net.3", width, ffn)
        shapes[f"{p}.norm1.weight"] = (width,)
        shapes[f"{p}.norm1.bias"] = (width,)
        shapes[f"{p}.norm2.weight"] = (width,)
        shapes[f"{p}.norm2.bias"] = (width,)
    # head: BN, GELU, conv 1x1 (E -> 2E), [dropout], linear (2E -> T), [dropout], softplus
    batchnorm("ptw.conv.0", width)
    conv("ptw.conv.2", 2 * width, width, 1)
    linear("ptw.linear.0", tracks, 2 * width)
    return shapes


def _is_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _BUFFER_SUFFIXES


def count_parameters(shapes_or_state_dict: dict) -> int:
    """Trainable parameters of a shape dict (from :func:`published_shapes`) or a state dict,
    excluding BatchNorm running statistics and ``num_batches_tracked``."""
    total = 0
    for key, value in shapes_or_state_dict.items():
        if _is_buffer(key):
            continue
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
        total += int(np.prod(shape, dtype=np.int64))
    return total


# ---- random weights ------------------------------------------------------------------------------
def published_state_dict(
    param: dict,
    *,
    stem_channels: int = 384,
    width: int = 768,
    tower_kernel: int = 5,
    stem_kernel: int = 15,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Dict[str, torch.Tensor]:
    """A state dict in the published layout (keys and shapes of :func:`published_shapes`), with
    random weights from a ``torch.Generator`` seeded with ``seed``.

    Values are drawn in float32 in key order and then cast to ``dtype``, so the float64 dict holds
    exactly the float32 dict's values. Scales (chosen so activations stay O(1) through 8 layers and
    the softplus outputs are O(0.1..few)):

    * conv weights: uniform(-sqrt(3.6 / fan_in), +sqrt(3.6 / fan_in)) (variance 1.2 / fan_in,
      fan_in = in_channels * kernel; a little above 1 / fan_in, because with 1 / fan_in the signal
      shrinks ~4x over the 7 stages of GELU and eval-mode BatchNorm with unmatched running statistics);
      linear weights: uniform(-sqrt(3 / fan_in), +sqrt(3 / fan_in)) (variance 1 / fan_in);
      biases (both): uniform(-1 / sqrt(fan_in), +1 / sqrt(fan_in));
    * BatchNorm: weight 1 + 0.1 N(0, 1), bias 0.1 N(0, 1), running_mean 0.1 N(0, 1),
      running_var uniform(0.5, 2), num_batches_tracked a 0-d int64 tensor;
    * LayerNorm: weight 1 + 0.1 N(0, 1), bias 0.1 N(0, 1);
    * relative-position table: N(0, 1), so q.r / sqrt(d) is about as large as q.k / sqrt(d) and a
      wrong index direction or offset changes outputs clearly (~1%), not at float32 round-off level
      (a BERT-like N(0, 0.02) would move outputs by ~1e-4 only).
    """
    shapes = published_shapes(
        param, stem_channels=stem_channels, width=width, tower_kernel=tower_kernel, stem_kernel=stem_kernel
    )
    g = torch.Generator().manual_seed(int(seed))

    def uniform(shape, bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=g) * 2.0 - 1.0) * bound

    def normal(shape, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std

    out: Dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        owner, name = key.rsplit(".", 1)
        if name == "num_batches_tracked":
            out[key] = torch.randint(1_000, 100_000, (), generator=g, dtype=torch.int64)
            continue
        is_norm = f"{owner}.running_var" in shapes or owner.endswith((".norm1", ".norm2"))
        if owner.endswith("distance_embedding"):
            value = normal(shape, REL_TABLE_STD)
        elif is_norm and name == "weight":
            value = 1.0 + normal(shape, 0.1)
        elif is_norm and name == "bias":
            value = normal(shape, 0.1)
        elif name == "running_mean":
            value = normal(shape, 0.1)
        elif name == "running_var":
            value = 0.5 + 1.5 * torch.rand(shape, generator=g)
        elif name == "weight":  # conv (out, in, k) or linear (out, in)
            fan_in = int(np.prod(shape[1:]))
            gain = CONV_GAIN if len(shape) == 3 else LINEAR_GAIN
            value = uniform(shape, math.sqrt(3.0 * gain / fan_in))  # variance gain / fan_in
        elif name == "bias":
            fan_in = int(np.prod(shapes[f"{owner}.weight"][1:]))
            value = uniform(shape, 1.0 / math.sqrt(fan_in))
        else:  # pragma: no cover - the layout has no other kinds
            raise AssertionError(f"no init rule for {key}")
        out[key] = value.to(dtype)
    return out


def published_checkpoint(
    param: dict,
    state_dict: Dict[str, torch.Tensor],
    *,
    module_prefix: bool = False,
    device=None,
) -> dict:
    """The dict the research training script ``torch.save``s (a ``.pth.tar`` file).

    Keys: ``state_dict`` (keys prefixed ``module.`` when ``module_prefix``, as a copy saved from a
    DataParallel wrapper has them; tensors moved to ``device`` when given, e.g. ``"cuda"``),
    ``optimizer`` (a small Adam-like state: no per-parameter moments), ``current_model_loss``,
    ``current_model_corr``, ``current_valid_loss``, ``current_valid_corr`` (plain floats) and
    ``param`` (a copy). Plain data only: it round-trips through
    ``torch.load(..., weights_only=True, map_location="cpu")``.
    """
    prefix = "module." if module_prefix else ""
    sd = {}
    for key, tensor in state_dict.items():
        sd[prefix + key] = tensor.to(device) if device is not None else tensor
    n_params = sum(1 for key in state_dict if not _is_buffer(key))
    optimizer = {
        "state": {},
        "param_groups": [
            {
                "lr": float(param.get("lr", 1e-4)),
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0.0,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": None,
                "params": list(range(n_params)),
            }
        ],
    }
    return {
        "state_dict": sd,
        "optimizer": optimizer,
        "current_model_loss": 0.8125,
        "current_model_corr": 0.61,
        "current_valid_loss": 0.8437,
        "current_valid_corr": 0.58,
        "param": dict(param),
    }


# ---- forward pass --------------------------------------------------------------------------------
def sinusoidal_table(max_len: int, width: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The absolute position table, (max_len, width): ``pe[pos, 2i] = sin(pos / 10000^(2i/width))``
    and ``pe[pos, 2i+1] = cos(pos / 10000^(2i/width))``; ``pos`` counts bins from 0."""
    if width % 2:
        raise ValueError(f"the sinusoidal table needs an even width, got {width}")
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
    two_i = torch.arange(0, width, 2, dtype=torch.float64)  # (width / 2,)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), two_i / width)
    pe = torch.zeros(max_len, width, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.to(dtype=dtype, device=device)


def _batchnorm_eval(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """BatchNorm1d in eval mode on (B, C, L): (x - running_mean) / sqrt(running_var + eps) * w + b."""
    mean = sd[f"{prefix}.running_mean"][None, :, None]
    var = sd[f"{prefix}.running_var"][None, :, None]
    weight = sd[f"{prefix}.weight"][None, :, None]
    bias = sd[f"{prefix}.bias"][None, :, None]
    return (x - mean) / torch.sqrt(var + BN_EPS) * weight + bias


def _conv_same(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """Conv1d with an odd kernel and symmetric zero 'same' padding: (B, C_in, L) -> (B, C_out, L)."""
    weight = sd[f"{prefix}.weight"]
    k = weight.shape[-1]
    if k % 2 != 1:
        raise ValueError(f"{prefix}: 'same' padding needs an odd kernel, got {k}")
    return F.conv1d(x, weight, sd[f"{prefix}.bias"], padding=k // 2)


def _bn_gelu_conv(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """``prefix.0`` BatchNorm -> (``.1``) exact GELU -> ``prefix.2`` Conv1d 'same'."""
    h = _batchnorm_eval(x, sd, f"{prefix}.0")
    h = F.gelu(h)  # exact (erf) GELU
    return _conv_same(h, sd, f"{prefix}.2")


def _residual(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """x + conv1x1(gelu(bn(x))) with the block at ``prefix.module``."""
    return x + _bn_gelu_conv(x, sd, f"{prefix}.module")


def _maxpool2(x: torch.Tensor) -> torch.Tensor:
    """Max over non-overlapping pairs of positions: (B, C, L) -> (B, C, L // 2)."""
    return F.max_pool1d(x, kernel_size=2, stride=2)


def _conv_tower(x: torch.Tensor, sd: dict, n_blocks: int) -> torch.Tensor:
    """Stem and tower: (B, 4, L) bp -> (B, E, L / 2**(n_blocks + 1)) bins."""
    x = _conv_same(x, sd, "conv.stem.0")
    x = _residual(x, sd, "conv.stem.1")
    x = _maxpool2(x)
    for b in range(n_blocks):
        x = _bn_gelu_conv(x, sd, f"conv.tower.{b}.0")  # not residual: changes the channel count
        x = _residual(x, sd, f"conv.tower.{b}.1")
        x = _maxpool2(x)
    return x


def _layernorm(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    weight = sd[f"{prefix}.weight"]
    return F.layer_norm(x, (weight.shape[0],), weight, sd[f"{prefix}.bias"], eps=LN_EPS)


def _linear(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.linear(x, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"])


def _relative_attention(x: torch.Tensor, sd: dict, prefix: str, num_heads: int, embed_size: int) -> torch.Tensor:
    """Multi-head self-attention with "relative_key" positions, no output projection.

    x: (B, N, E). For each head, with q, k, v its (B, N, d) slices (d = E / num_heads, contiguous
    blocks of features) and r = ``prefix.distance_embedding.weight`` (2 * embed_size - 1, d), shared by
    all heads::

        score[i, j] = (q_i . k_j + q_i . r[i - j + embed_size - 1]) / sqrt(d)
        out_i       = sum_j softmax_j(score[i, :]) v_j

    Returns the heads concatenated in order, (B, N, E).
    """
    B, N, E = x.shape
    d = E // num_heads
    table = sd[f"{prefix}.distance_embedding.weight"]
    if table.shape != (2 * embed_size - 1, d):
        raise ValueError(f"{prefix}: relative table {tuple(table.shape)} != ({2 * embed_size - 1}, {d})")
    if N > embed_size:
        raise ValueError(f"{N} bins need embed_size >= {N} for the relative table, got {embed_size}")

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # (B, N, E) -> (B, H, N, d)
        return t.view(B, N, num_heads, d).transpose(1, 2)

    q = split_heads(_linear(x, sd, f"{prefix}.query"))
    k = split_heads(_linear(x, sd, f"{prefix}.key"))
    v = split_heads(_linear(x, sd, f"{prefix}.value"))

    i = torch.arange(N, device=x.device).unsqueeze(1)  # query bin
    j = torch.arange(N, device=x.device).unsqueeze(0)  # key bin
    index = i - j + embed_size - 1  # (N, N), in 0 .. 2 * embed_size - 2
    r = table[index]  # (N, N, d): r[i, j] = table[i - j + embed_size - 1]

    content = torch.einsum("bhid,bhjd->bhij", q, k)  # q_i . k_j
    position = torch.einsum("bhid,ijd->bhij", q, r)  # q_i . r[i - j + embed_size - 1]
    del r
    scores = (content + position) / math.sqrt(d)
    probs = torch.softmax(scores, dim=-1)  # over key bins j
    out = torch.einsum("bhij,bhjd->bhid", probs, v)  # (B, H, N, d)
    return out.transpose(1, 2).reshape(B, N, E)


def _encoder_layer(x: torch.Tensor, sd: dict, prefix: str, num_heads: int, embed_size: int) -> torch.Tensor:
    """One post-LayerNorm layer on (B, N, E)::

        x = norm1(x + attn(x))
        h = linear_net.0(x);  x = norm2(x + linear_net.3(silu(h) * h))
    """
    x = _layernorm(x + _relative_attention(x, sd, f"{prefix}.mha", num_heads, embed_size), sd, f"{prefix}.norm1")
    h = _linear(x, sd, f"{prefix}.linear_net.0")
    ffn = _linear(F.silu(h) * h, sd, f"{prefix}.linear_net.3")
    return _layernorm(x + ffn, sd, f"{prefix}.norm2")


def _head(x: torch.Tensor, sd: dict, crop: int) -> torch.Tensor:
    """(B, E, N) -> crop ``crop`` bins each side -> BN -> GELU -> Conv1d k=1 (E -> 2E)
    -> Linear (2E -> T) on the channel axis -> Softplus: (B, T, N - 2 crop)."""
    N = x.shape[-1]
    x = x[:, :, crop : N - crop]
    x = _bn_gelu_conv(x, sd, "ptw.conv")  # (B, 2E, N')
    x = F.linear(x.transpose(1, 2), sd["ptw.linear.0.weight"], sd["ptw.linear.0.bias"])  # (B, N', T)
    return F.softplus(x.transpose(1, 2))  # (B, T, N')


def reference_forward(
    state_dict: Dict[str, torch.Tensor],
    param: dict,
    one_hot: torch.Tensor,
    phastcons: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The published forward pass in eval mode, literally: predicted signal per bin and track.

    Args:
        state_dict: published layout (no ``module.`` prefix); cast to ``one_hot``'s dtype and device.
        param: the checkpoint's ``param`` (uses ``num_cnn_layer``, ``bin_size``, ``max_len``,
            ``add_positional_encoding``, ``embed_size``, ``num_heads``, ``num_encoder_layers``,
            ``crop_size``, ``if_cons``).
        one_hot: (B, 4, L) float, A, C, G, T channels; L bp, a multiple of ``bin_size``.
        phastcons: (B, L) conservation per bp in 0..1; ``None`` or NaN means 0 (missing). Used only
            when ``param["if_cons"]``: input = one_hot * exp(phastcons).

    Returns:
        (B, multiout_dim, L / bin_size - 2 * crop_size), non-negative (Softplus), in ``one_hot``'s dtype.

    Steps: stem conv k=15 'same' -> residual (x + conv1x1(gelu(bn(x)))) -> maxpool 2; ``num_cnn_layer``
    blocks of conv k=5 on gelu(bn(x)) -> residual -> maxpool 2; to (B, N, E); + sinusoidal table rows
    0..N-1 (if ``add_positional_encoding``); ``num_encoder_layers`` post-LN layers (see
    ``_encoder_layer``); head (see ``_head``). BatchNorm uses running statistics (eps 1e-5); no dropout.
    """
    if one_hot.dim() != 3 or one_hot.shape[1] != 4:
        raise ValueError(f"one_hot must be (B, 4, L), got {tuple(one_hot.shape)}")
    dtype, device = one_hot.dtype, one_hot.device
    sd = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v) for k, v in state_dict.items()}
    n_blocks = int(param["num_cnn_layer"])
    bin_size = 2 ** (n_blocks + 1)
    if int(param["bin_size"]) != bin_size:
        raise ValueError(f"bin_size {param['bin_size']} != 2 ** (num_cnn_layer + 1) = {bin_size}")
    B, _, L = one_hot.shape
    if L % bin_size:
        raise ValueError(f"input length {L} is not a multiple of bin_size {bin_size}")

    # input: conservation scales the one-hot columns
    x = one_hot
    if param["if_cons"]:
        if phastcons is None:
            cons = torch.zeros(B, L, dtype=dtype, device=device)
        else:
            if tuple(phastcons.shape) != (B, L):
                raise ValueError(f"phastcons must be (B, L) = {(B, L)}, got {tuple(phastcons.shape)}")
            cons = torch.nan_to_num(phastcons.to(device=device, dtype=dtype), nan=0.0)
        x = one_hot * torch.exp(cons).unsqueeze(1)

    # conv tower: (B, 4, L) -> (B, E, N)
    x = _conv_tower(x, sd, n_blocks)
    x = x.transpose(1, 2)  # (B, N, E)
    N, E = x.shape[1], x.shape[2]

    if param["add_positional_encoding"]:
        max_len = int(param["max_len"])
        if N > max_len:
            raise ValueError(f"{N} bins exceed the sinusoidal table's max_len {max_len}")
        x = x + sinusoidal_table(max_len, E, dtype=dtype, device=device)[:N].unsqueeze(0)

    for layer in range(int(param["num_encoder_layers"])):
        x = _encoder_layer(x, sd, f"trans.layers.{layer}", int(param["num_heads"]), int(param["embed_size"]))

    crop = int(param["crop_size"])
    if 2 * crop >= N:
        raise ValueError(f"crop_size {crop} leaves no bins of {N}")
    return _head(x.transpose(1, 2), sd, crop)
