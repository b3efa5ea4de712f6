"""The ``epiformer`` model family: a convolutional tower that pools DNA to 128 bp bins, a
transformer over the bins, and a per-track softplus head.

:class:`Epiformer` is the trainable (eager) form; :class:`EpiformerTrunk` is its transformer and
head prepared for the fast inference form (:func:`epiformer_cli.model.fast.prepare_for_inference`);
:data:`FAMILY` registers both (:mod:`epiformer_cli.model.families`).
"""

from __future__ import annotations

import threading
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from epiformer_cli.model.config import ModelConfig
from epiformer_cli.model.families import ModelFamily
from epiformer_cli.model.families import build_network  # noqa: F401 - its former home, still imported from here
from epiformer_cli.model.prepared import PreparedTrunk, bn_affine, gelu_
from epiformer_cli.model.tower import NetworkBase


class RelativePositionBias(nn.Module):
    """A learned additive attention bias per head and per relative distance.

    The table holds ``2 * n_bins - 1`` entries per head: it is sized by the sequence length (one
    entry per possible offset i - j), not by the model width (the published code's quirk 9).
    It never materialises an (L, L, d) tensor; the bias is (heads, L, L).
    """

    def __init__(self, n_heads: int, n_bins: int) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.table = nn.Parameter(torch.zeros(n_heads, 2 * n_bins - 1))
        pos = torch.arange(n_bins)
        self.register_buffer("index", pos[:, None] - pos[None, :] + n_bins - 1, persistent=False)

    def forward(self) -> torch.Tensor:
        """Returns (heads, n_bins, n_bins): bias[h, i, j] = table[h, i - j + n_bins - 1]."""
        return self.table[:, self.index]


class Attention(nn.Module):
    """Multi-head self-attention with an additive relative-position bias.

    x: (batch, L, d_model) -> (batch, L, d_model). Uses ``scaled_dot_product_attention``, so the
    score matrix is handled by PyTorch's fused kernel where one exists.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=bias.to(x.dtype),
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class SwiGLU(nn.Module):
    """Gated feed-forward: (..., d) -> (..., d) = W_out(silu(W_a x) * W_b x), with real gate weights."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d, 2 * hidden)
        self.out = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.inp(x).chunk(2, dim=-1)
        return self.out(F.silu(a) * g)


class TransformerLayer(nn.Module):
    """Pre-LayerNorm transformer layer: x + drop(attn(LN(x))), then x + drop(ffn(LN(x))).

    Pre-LN (rather than the published post-LN) keeps an identity path from input to output, which
    trains stably with Adam at lr 1e-4 without depending on a long warm-up, and lets the fast
    inference path fold each LayerNorm's affine into the linear layer that follows it.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), bias))
        return x + self.drop(self.ffn(self.norm2(x)))


class Head(nn.Module):
    """Crop, BN -> GELU -> pointwise conv to 2*head_hidden, SwiGLU gate, dropout, pointwise to
    tracks, softplus. (batch, d_model, n_bins) -> (batch, n_tracks, out_bins), non-negative.

    The dropout sits before the last linear layer, never directly before the softplus (the
    published code's quirk 2 made 10% of training-mode outputs exactly softplus(0)).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.crop = cfg.crop_bins
        self.norm = nn.BatchNorm1d(cfg.d_model)
        self.conv = nn.Conv1d(cfg.d_model, 2 * cfg.head_hidden, 1)
        self.drop = nn.Dropout(cfg.head_dropout)
        self.out = nn.Conv1d(cfg.head_hidden, cfg.n_tracks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            x = x[..., self.crop:-self.crop]
        a, g = self.conv(F.gelu(self.norm(x))).chunk(2, dim=1)
        return F.softplus(self.out(self.drop(F.silu(a) * g)))


class Epiformer(NetworkBase):
    """Epiformer: DNA (+ conservation) window -> accessibility per track in 128 bp bins.

    forward(x): x is (batch, cfg.in_channels, cfg.seq_len) float, channels one-hot A, C, G, T
    (plus conservation in [0, 1] as channel 5 when ``cfg.conservation == "channel"``); returns
    (batch, cfg.n_tracks, cfg.out_bins) non-negative predictions (softplus), bin ``i`` covering
    bp ``[crop_bp + 128 i, crop_bp + 128 (i + 1))`` of the window (0-based, half-open).

    This is the ``epiformer`` family; :func:`~epiformer_cli.model.families.build_network` builds
    the network of any family from a config.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.arch != "epiformer":
            raise ValueError(f"Epiformer builds arch 'epiformer', not {cfg.arch!r}: use build_network(cfg)")
        super().__init__(cfg)
        self.rel_bias = nn.ModuleList(RelativePositionBias(cfg.n_heads, cfg.n_bins) for _ in range(cfg.n_layers))
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.head = Head(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tower_output(x)  # (batch, n_bins, d_model)
        for layer, rel in zip(self.layers, self.rel_bias):
            x = layer(x, rel())
        x = self.final_norm(x).transpose(1, 2)  # (batch, d_model, n_bins)
        return self.head(x)


class EpiformerTrunk(PreparedTrunk):
    """epiformer's transformer and head, prepared: each pre-LN LayerNorm's affine folded into the
    linear layer it feeds, the final LayerNorm and head BatchNorm composed into one affine.

    __call__(z): (batch, n_bins, d_model) tower output -> (batch, n_tracks, out_bins) float32.
    """

    def __init__(self, model: Epiformer, dtype: torch.dtype) -> None:
        self.config = model.config
        self.layers = [self._prepare_layer(layer, rel, dtype) for layer, rel in zip(model.layers, model.rel_bias)]
        fn = model.final_norm
        scale, shift = bn_affine(model.head.norm)
        # final LN affine then head BN affine -> one affine (exact composition)
        self.final_affine = (
            (fn.weight.double() * scale).to(dtype),
            (fn.bias.double() * scale + shift).to(dtype),
        )
        self.final_eps = fn.eps
        self.head_w = model.head.conv.weight.detach()[:, :, 0].to(dtype).contiguous()
        self.head_b = model.head.conv.bias.detach().to(dtype)
        self.out_w = model.head.out.weight.detach()[:, :, 0].to(dtype).contiguous()
        self.out_b = model.head.out.bias.detach().to(dtype)
        self._bufs: Dict[int, Dict[tuple, Tuple[torch.Tensor, torch.Tensor]]] = {}  # per thread

    @staticmethod
    def _prepare_layer(layer: TransformerLayer, rel: RelativePositionBias, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
        def fold_ln(ln: nn.LayerNorm, lin: nn.Linear) -> Tuple[torch.Tensor, torch.Tensor]:
            # linear(ln_affine(z)) = z @ (W diag(g))^T + (W beta + b)
            w = lin.weight.double()
            return ((w * ln.weight.double()).to(dtype).contiguous(),
                    (lin.bias.double() + w @ ln.bias.double()).to(dtype))

        qkv_w, qkv_b = fold_ln(layer.norm1, layer.attn.qkv)
        ffn_w, ffn_b = fold_ln(layer.norm2, layer.ffn.inp)
        return {
            "eps1": layer.norm1.eps, "eps2": layer.norm2.eps, "n_heads": layer.attn.n_heads,
            "qkv_w": qkv_w, "qkv_b": qkv_b,
            "out_w": layer.attn.out.weight.detach().to(dtype).contiguous(),
            "out_b": layer.attn.out.bias.detach().to(dtype),
            "ffn_w": ffn_w, "ffn_b": ffn_b,
            "ffn_out_w": layer.ffn.out.weight.detach().to(dtype).contiguous(),
            "ffn_out_b": layer.ffn.out.bias.detach().to(dtype),
            "bias": rel().detach().to(dtype).unsqueeze(0).contiguous(),  # (1, heads, L, L)
        }

    def transformer(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        x = x.reshape(b * length, d).clone()
        qkv_buf, ffn_buf = self._buffers(b * length, x)
        for p in self.layers:
            h = F.layer_norm(x, (d,), eps=p["eps1"])
            qkv = torch.addmm(p["qkv_b"], h, p["qkv_w"].t(), out=qkv_buf)
            qkv = qkv.view(b, length, 3, p["n_heads"], d // p["n_heads"]).permute(2, 0, 3, 1, 4)
            # the CPU kernel returns y as a transposed view of a (b, L, heads, head size) tensor,
            # so the reshape below is free
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=p["bias"])
            y = y.transpose(1, 2).reshape(b * length, d)
            x.addmm_(y, p["out_w"].t()).add_(p["out_b"])
            h = F.layer_norm(x, (d,), eps=p["eps2"])
            a, g = torch.addmm(p["ffn_b"], h, p["ffn_w"].t(), out=ffn_buf).chunk(2, dim=-1)
            x.addmm_(F.silu(a, inplace=True).mul_(g), p["ffn_out_w"].t()).add_(p["ffn_out_b"])
        return x.view(b, length, d)

    def _buffers(self, rows: int, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The qkv (rows, 3 d_model) and feed-forward (rows, 2 ffn_dim) products' buffers, kept per
        row count (the last three) and per thread (views computed at once in lanes,
        :mod:`~epiformer_cli.inference.lanes`, must not share them): fresh multi-MB tensors each
        call cost page faults, ~15% of a 64-row call of the tiny preset."""
        bufs = self._bufs.setdefault(threading.get_ident(), {})
        # inference tensors cannot be written outside inference mode: a buffer per mode
        key = (rows, like.dtype, like.device, torch.is_inference_mode_enabled())
        if key not in bufs:
            if len(bufs) >= 3:
                bufs.pop(next(iter(bufs)))
            cfg = self.config
            bufs[key] = (like.new_empty(rows, 3 * cfg.d_model), like.new_empty(rows, 2 * cfg.ffn_dim))
        return bufs[key]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.cropped_rows(x)
        scale, shift = self.final_affine
        h = F.layer_norm(rows, (x.shape[-1],), eps=self.final_eps)
        h = gelu_(torch.addcmul(shift, h, scale))
        a, g = torch.addmm(self.head_b, h, self.head_w.t()).chunk(2, dim=-1)
        return self.tracks(torch.addmm(self.out_b, F.silu(a).mul_(g), self.out_w.t()), x.shape[0])


FAMILY = ModelFamily(
    arch="epiformer",
    description="epiformer (pre-LN transformer, gated SwiGLU, per-head relative bias)",
    network=Epiformer,
    prepare_trunk=EpiformerTrunk,
)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
