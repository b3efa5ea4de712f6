"""The Epiformer network: a convolutional tower that pools DNA to 128 bp bins, a transformer over
the bins, and a per-track softplus head. This is the trainable (eager) form; the fast inference
form is built from it by :func:`epiformer_cli.model.fast.prepare_for_inference`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.model.config import ModelConfig


class PreActConv(nn.Module):
    """BatchNorm -> GELU -> Conv1d with "same" padding: (batch, c_in, L) -> (batch, c_out, L)."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(c_in)
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.gelu(self.norm(x)))


class ConvStage(nn.Module):
    """One halving of the tower: ``conv`` -> ``x + res(x)`` -> max-pool 2.

    (batch, c_in, L) -> (batch, c_out, L // 2). ``conv`` is a plain Conv1d in the stem and a
    pre-activation convolution (not residual) in the tower blocks; ``res`` is a pre-activation
    pointwise convolution added back to its input.
    """

    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.res = PreActConv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x + self.res(x)
        return F.max_pool1d(x, 2)


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


class NetworkBase(nn.Module):
    """What both model families share: the convolutional tower, input checks, ``predict_codes``.

    ``stem`` and ``tower`` are :class:`ConvStage` s of the same layout in both families, so the fast
    inference path and the incremental SNV tower serve both.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.stem = ConvStage(
            nn.Conv1d(cfg.in_channels, cfg.stem_channels, cfg.stem_kernel, padding=cfg.stem_kernel // 2),
            cfg.stem_channels,
        )
        chans = (cfg.stem_channels,) + tuple(cfg.tower_channels)
        self.tower = nn.ModuleList(
            ConvStage(PreActConv(c_in, c_out, cfg.tower_kernel), c_out)
            for c_in, c_out in zip(chans[:-1], chans[1:])
        )

    def _tower(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, seq_len) -> (batch, n_bins, d_model), after checking the shape."""
        cfg = self.config
        if x.dim() != 3 or x.shape[1] != cfg.in_channels or x.shape[2] != cfg.seq_len:
            raise ValueError(
                f"expected input (batch, {cfg.in_channels}, {cfg.seq_len}), got {tuple(x.shape)}"
            )
        x = self.stem(x)
        for block in self.tower:
            x = block(x)
        return x.transpose(1, 2)

    @torch.no_grad()
    def predict_codes(self, codes: torch.Tensor, conservation: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predict from uint8 base codes (batch, seq_len) and conservation (batch, seq_len) or None.

        Builds the input on the model's device with ``encoding.model_inputs`` and this model's
        conservation mode. Does not change train/eval mode: call ``.eval()`` first for inference.
        Returns (batch, n_tracks, out_bins).
        """
        param = next(self.parameters())
        codes = torch.as_tensor(codes).to(param.device)
        if conservation is not None:
            conservation = torch.as_tensor(conservation).to(param.device)
        return self(model_inputs(codes, conservation, self.config.conservation, dtype=param.dtype))


class Epiformer(NetworkBase):
    """Epiformer: DNA (+ conservation) window -> accessibility per track in 128 bp bins.

    forward(x): x is (batch, cfg.in_channels, cfg.seq_len) float, channels one-hot A, C, G, T
    (plus conservation in [0, 1] as channel 5 when ``cfg.conservation == "channel"``); returns
    (batch, cfg.n_tracks, cfg.out_bins) non-negative predictions (softplus), bin ``i`` covering
    bp ``[crop_bp + 128 i, crop_bp + 128 (i + 1))`` of the window (0-based, half-open).

    This is the ``epiformer`` family; :func:`build_network` builds either family from a config.
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
        x = self._tower(x)  # (batch, n_bins, d_model)
        for layer, rel in zip(self.layers, self.rel_bias):
            x = layer(x, rel())
        x = self.final_norm(x).transpose(1, 2)  # (batch, d_model, n_bins)
        return self.head(x)


def build_network(cfg: ModelConfig) -> nn.Module:
    """The network ``cfg.arch`` names: :class:`Epiformer` or the published family's
    :class:`~epiformer_cli.model.published.PublishedEpiformer`."""
    if cfg.arch == "published":
        from epiformer_cli.model.published import PublishedEpiformer

        return PublishedEpiformer(cfg)
    return Epiformer(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
