"""The published Epiformer network (``arch: published``), exact to the research code in eval mode.

This is the family the published brain-atlas checkpoints were trained as (Li et al., Science 2023);
``epiformer import-model`` loads their weights into it. What differs from epiformer's own network:

* input ``one_hot * exp(phastCons)`` (``conservation: scale``), 4 channels; the conv tower is the
  one every family shares (:mod:`~epiformer_cli.model.tower`);
* an absolute sinusoidal position table added once after the tower;
* post-LayerNorm layers: ``x = LN1(x + attn(x)); x = LN2(x + ffn(x))``;
* attention in the ``relative_key`` form: ``score = (q.k + q.r[i - j]) / sqrt(head size)``, ``r`` a
  learned table of head-size vectors shared by the heads of a layer, and no output projection
  (the heads are concatenated);
* a feed-forward ``Linear -> silu(h) * h -> Linear`` (called SwiGLU there; it has no gate weights);
* a head ``crop -> BN -> GELU -> Conv1d k=1 -> Linear -> softplus`` with no non-linearity between
  the last two layers.

Dropout sits where the research code trains with it, except directly before the softplus (the
published code's mistake 2): it is moved before the last linear layer. In eval mode, the only mode
predictions are made in, dropout is the identity, so outputs are the published ones exactly.

The module names here follow epiformer's; ``epiformer_cli.model.checkpoint`` maps the research
code's state-dict names onto them. :class:`PublishedTrunk` is the transformer and head prepared for
the fast inference form; :data:`FAMILY` registers the network, that trunk and the checkpoint import
(:mod:`epiformer_cli.model.families`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from epiformer_cli.model.checkpoint import read_published_checkpoint
from epiformer_cli.model.config import ModelConfig
from epiformer_cli.model.families import ModelFamily
from epiformer_cli.model.prepared import PreparedTrunk, bn_affine, gelu_
from epiformer_cli.model.tower import NetworkBase


def sinusoidal_table(rows: int, width: int) -> torch.Tensor:
    """(rows, width) float32 absolute position features: sin on even, cos on odd features.

    ``table[p, 2i] = sin(p / 10000^(2i / width))``, ``table[p, 2i + 1] = cos(same)``.
    """
    pos = torch.arange(rows, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float64) * (-math.log(10000.0) / width))
    table = torch.zeros(rows, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.float()


def relative_offsets_index(n_bins: int, device=None) -> torch.Tensor:
    """(n_bins, n_bins) index into the reversed offset table: ``idx[i, j] = n_bins - 1 - i + j``.

    With ``rev[m] = r[offset (n_bins - 1 - m)]`` (offsets ``n_bins - 1`` down to ``-(n_bins - 1)``),
    ``rev[idx[i, j]] = r[i - j]``.
    """
    pos = torch.arange(n_bins, device=device)
    return n_bins - 1 - pos[:, None] + pos[None, :]


def reversed_offset_table(table: torch.Tensor, rel_positions: int, n_bins: int) -> torch.Tensor:
    """The rows of a ``relative_key`` table that a window of ``n_bins`` uses, reversed.

    table: (2 * rel_positions - 1, head size), row ``d + rel_positions - 1`` for offset ``d = i - j``.
    Returns (2 * n_bins - 1, head size): row ``m`` is offset ``n_bins - 1 - m``.
    """
    lo = rel_positions - n_bins  # row of offset -(n_bins - 1)
    return table[lo:lo + 2 * n_bins - 1].flip(0)


def relative_key_term(q: torch.Tensor, rev_table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The query-dependent relative-position scores ``t[..., i, j] = q_i . r[i - j]``.

    Computed as one matrix product per head, ``q @ rev^T`` of shape (..., L, 2L - 1), then a
    gather of L entries per row (the "relative shift"): the (L, L, head size) tensor of gathered
    table vectors is never formed. q: (..., L, head size); rev_table: (2L - 1, head size) from
    :func:`reversed_offset_table`; index: from :func:`relative_offsets_index`. Returns (..., L, L).
    """
    scores = q @ rev_table.transpose(0, 1)
    return scores.gather(-1, index.expand(*scores.shape[:-1], index.shape[-1]))


class RelativeKeyAttention(nn.Module):
    """Multi-head self-attention in the ``relative_key`` form, no output projection.

    x: (batch, L, d_model) -> (batch, L, d_model), the heads concatenated. The relative term
    ``q_i . r[i - j]`` depends on q, so it is computed per window (:func:`relative_key_term`) and
    handed to ``scaled_dot_product_attention`` as an additive mask, already divided by
    sqrt(head size) like the q.k term the kernel scales itself.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.rel_positions = cfg.rel_positions
        self.attn_dropout = cfg.attn_dropout
        self.query = nn.Linear(cfg.d_model, cfg.d_model)
        self.key = nn.Linear(cfg.d_model, cfg.d_model)
        self.value = nn.Linear(cfg.d_model, cfg.d_model)
        self.distance = nn.Embedding(2 * cfg.rel_positions - 1, cfg.head_dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x: (batch, L, d_model); index: :func:`relative_offsets_index` of L (shared by the layers)."""
        b, length, d = x.shape
        h, dh = self.n_heads, d // self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, h, dh).transpose(1, 2)  # (b, h, L, dh)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        rev = reversed_offset_table(self.distance.weight, self.rel_positions, length)
        bias = relative_key_term(q, rev, index) / math.sqrt(dh)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return y.transpose(1, 2).reshape(b, length, d)


class SiluTimesX(nn.Module):
    """The published feed-forward: (..., d) -> (..., d) = W_out(drop(silu(h) * h)), h = W_in x."""

    def __init__(self, d: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(d, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(self.drop(F.silu(h) * h))


class PostNormLayer(nn.Module):
    """Post-LayerNorm layer: x = LN1(x + drop(attn(x))); x = LN2(x + drop(ffn(x)))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = RelativeKeyAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.ffn = SiluTimesX(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, index)))
        return self.norm2(x + self.drop(self.ffn(x)))


class PublishedHead(nn.Module):
    """Crop, BN -> GELU -> pointwise conv (d_model -> head_hidden) -> dropout -> linear to tracks
    -> softplus. (batch, d_model, n_bins) -> (batch, n_tracks, out_bins), non-negative."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.crop = cfg.crop_bins
        self.norm = nn.BatchNorm1d(cfg.d_model)
        self.conv = nn.Conv1d(cfg.d_model, cfg.head_hidden, 1)
        self.drop = nn.Dropout(cfg.head_dropout)
        self.out = nn.Linear(cfg.head_hidden, cfg.n_tracks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            x = x[..., self.crop:-self.crop]
        h = self.drop(self.conv(F.gelu(self.norm(x))))  # (batch, head_hidden, out_bins)
        return F.softplus(self.out(h.transpose(1, 2))).transpose(1, 2)


class PublishedEpiformer(NetworkBase):
    """The published Epiformer (``arch: published``): same inputs, outputs and bin layout as
    :class:`~epiformer_cli.model.network.Epiformer`.

    forward(x): (batch, 4, seq_len) float input (``one_hot * exp(phastCons)``, or one-hot for
    ``conservation: none``) -> (batch, n_tracks, out_bins) non-negative.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.arch != "published":
            raise ValueError(f"PublishedEpiformer builds arch 'published', not {cfg.arch!r}")
        super().__init__(cfg)
        positions = sinusoidal_table(cfg.abs_positions, cfg.d_model) if cfg.abs_positions else torch.zeros(0)
        # derived from the config, so not part of the state dict (the research code stores none)
        self.register_buffer("positions", positions, persistent=False)
        # (n_bins, n_bins) int64 (4.7 MB at 768 bins): one for all layers
        self.register_buffer("rel_index", relative_offsets_index(cfg.n_bins), persistent=False)
        self.layers = nn.ModuleList(PostNormLayer(cfg) for _ in range(cfg.n_layers))
        self.head = PublishedHead(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tower_output(x)  # (batch, n_bins, d_model)
        if self.positions.numel():
            x = x + self.positions[:x.shape[1]].to(x.dtype)
        for layer in self.layers:
            x = layer(x, self.rel_index)
        return self.head(x.transpose(1, 2))


class PublishedTrunk(PreparedTrunk):
    """The published family's transformer and head, prepared for inference.

    * q, k and v are one (3 d, d) matrix multiply;
    * the ``relative_key`` term ``q_i . r[i - j] / sqrt(head size)`` depends on q, so it cannot
      be a constant mask: per window and layer it is ONE matrix product per head, q (L, dh) times
      the used rows of the table, reversed and pre-divided by sqrt(head size) ((2L - 1, dh), made
      once here), then a gather of L of the 2L - 1 columns of each row ("relative shift") into a
      (heads, L, L) additive mask for the fused attention kernel (which scales q.k itself).
      About twice the FLOPs of q.k, and the (L, L, dh) tensor of table vectors is never formed;
    * post-LN LayerNorms keep their affine (their output is the residual stream itself, so
      there is no following linear layer to fold it into);
    * the head's Conv1d (d -> head_hidden) and Linear (head_hidden -> tracks) have no
      non-linearity between them (dropout is the identity at inference), so they are folded
      into one (tracks, d) matrix: exact up to rounding, and the 2 d-wide hidden layer is skipped;
      the BatchNorm before them is one per-channel affine.

    __call__(z): (batch, n_bins, d_model) tower output -> (batch, n_tracks, out_bins) float32.
    """

    def __init__(self, model: PublishedEpiformer, dtype: torch.dtype) -> None:
        cfg = model.config
        self.config = cfg
        length, device = cfg.n_bins, model.head.out.weight.device
        self.positions = model.positions[:length].to(dtype) if model.positions.numel() else None
        self.index = relative_offsets_index(length, device=device)
        self.layers = []
        for layer in model.layers:
            att = layer.attn
            rev = reversed_offset_table(att.distance.weight.detach().double(), cfg.rel_positions, length)
            self.layers.append({
                "n_heads": att.n_heads,
                "qkv_w": torch.cat([att.query.weight, att.key.weight, att.value.weight]).detach().to(dtype).contiguous(),
                "qkv_b": torch.cat([att.query.bias, att.key.bias, att.value.bias]).detach().to(dtype),
                "rev": (rev / math.sqrt(cfg.head_dim)).to(dtype).contiguous(),
                "ln1": (layer.norm1.weight.detach().to(dtype), layer.norm1.bias.detach().to(dtype), layer.norm1.eps),
                "ffn_w": layer.ffn.inp.weight.detach().to(dtype).contiguous(),
                "ffn_b": layer.ffn.inp.bias.detach().to(dtype),
                "ffn_out_w": layer.ffn.out.weight.detach().to(dtype).contiguous(),
                "ffn_out_b": layer.ffn.out.bias.detach().to(dtype),
                "ln2": (layer.norm2.weight.detach().to(dtype), layer.norm2.bias.detach().to(dtype), layer.norm2.eps),
            })
        head = model.head
        scale, shift = bn_affine(head.norm)
        self.head_affine = (scale.to(dtype), shift.to(dtype))
        w_conv = head.conv.weight.detach().double()[:, :, 0]  # (hidden, d)
        w_out = head.out.weight.detach().double()  # (tracks, hidden)
        self.head_w = (w_out @ w_conv).to(dtype).contiguous()  # (tracks, d)
        self.head_b = (w_out @ head.conv.bias.detach().double() + head.out.bias.detach().double()).to(dtype)

    def transformer(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        x = (x + self.positions) if self.positions is not None else x
        x = x.reshape(b * length, d)
        for p in self.layers:
            heads = p["n_heads"]
            qkv = torch.addmm(p["qkv_b"], x, p["qkv_w"].t())
            qkv = qkv.view(b, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            bias = relative_key_term(q, p["rev"], self.index)  # (b, heads, L, L)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            y = y.transpose(1, 2).reshape(b * length, d)
            w1, b1, eps1 = p["ln1"]
            x = F.layer_norm(y.add_(x), (d,), w1, b1, eps1)
            h = torch.addmm(p["ffn_b"], x, p["ffn_w"].t())
            f = torch.addmm(p["ffn_out_b"], F.silu(h).mul_(h), p["ffn_out_w"].t())
            w2, b2, eps2 = p["ln2"]
            x = F.layer_norm(f.add_(x), (d,), w2, b2, eps2)
        return x.view(b, length, d)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.head_affine
        h = gelu_(torch.addcmul(shift, self.cropped_rows(x), scale))
        return self.tracks(torch.addmm(self.head_b, h, self.head_w.t()), x.shape[0])


FAMILY = ModelFamily(
    arch="published",
    description="published Epiformer (post-LN transformer, relative_key attention, silu(x)*x feed-forward)",
    network=PublishedEpiformer,
    prepare_trunk=PublishedTrunk,
    # The post-LN trunk re-normalises a residual stream whose bf16 rounding cost 1.4% max relative
    # error at full size (0.6% with an fp32 trunk); it is ~14% of the FLOPs, so it runs in fp32
    # whatever the tower's dtype.
    trunk_float32=True,
    import_checkpoint=read_published_checkpoint,
)
