"""The fast, deterministic inference form of an :class:`Epiformer` (eval only, no autograd).

:func:`prepare_for_inference` copies a trained network's weights into :class:`FastEpiformer`, which
runs the convolutional tower as plain matrix multiplications on a channels-last layout:

* activations live as ``(batch, positions + padding, channels)`` row-major buffers, so a width-k
  convolution is k accumulating GEMMs over row-shifted views of one padded buffer (no im2col copy
  for the tower; the stem, with only 4-5 input channels, uses a small im2col);
* every large activation buffer is allocated once per batch size and reused: on Linux a fresh
  100 MB tensor costs ~25k page faults, which was a third of the eager model's time;
* each residual ``u + conv1x1(t)`` is one in-place ``addmm_`` (beta=1), and the pointwise conv's
  bias is folded into the preceding conv's bias and the BatchNorm shift;
* BatchNorm becomes a per-channel affine applied in place just before an in-place GELU. It cannot
  be folded into the previous convolution exactly: that convolution's raw output also feeds the
  residual sum (and in the tower the BN input is a max-pool output, which commutes with an affine
  map only for positive scales). Where folding IS exact it is done: the head's BatchNorm and the
  final LayerNorm's affine compose into one affine, and each pre-LN LayerNorm's affine is folded
  into the linear layer it feeds;
* weights are stored once in the compute dtype (bf16 weights for bf16 runs; no per-call casts).

Results match the eval-mode eager model to ~1e-5 relative in float32 and are deterministic.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from epiformer_cli.model.config import ModelConfig
from epiformer_cli.model.network import ConvStage, Epiformer, NetworkBase
from epiformer_cli.model.published import relative_key_term, relative_offsets_index, reversed_offset_table

_BN = Tuple[torch.Tensor, torch.Tensor]


def _bn_affine(bn: nn.BatchNorm1d) -> _BN:
    """Eval-mode BatchNorm as (scale, shift) in float64: y = x * scale + shift."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place; in-place avoids allocating (and page-faulting) a new buffer."""
    return torch._C._nn.gelu_(x)


def _onednn_available(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's fused convolution runs here in ``dtype``: its bf16 and fp16 kernels need
    CPU instructions (AVX-512 BW/VL/DQ or AVX-NE-CONVERT) that e.g. AVX2-only CPUs lack; there the
    GEMM convolution runs instead of an error."""
    if not (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")):
        return False
    support = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    if support is None:
        return True
    check = getattr(torch.ops.mkldnn, support, None)
    return bool(check()) if check is not None else False


def _onednn_conv_add_(out: torch.Tensor, x: torch.Tensor, weight4: torch.Tensor, pad: int) -> None:
    """out += conv1d(x, w) with "same" padding, via oneDNN, in place; layouts (batch, L, C).

    Uses the fused conv + in-place add kernel PyTorch's own compiler emits
    (``mkldnn._convolution_pointwise_.binary``): the (batch, L, C) buffers are viewed as
    channels-last (batch, C, 1, L) images, so no layout copy happens.
    """
    def as_nchw(t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(1).permute(0, 3, 1, 2)

    torch.ops.mkldnn._convolution_pointwise_.binary(
        as_nchw(out), as_nchw(x), weight4, None, [0, pad], [1, 1], [1, 1], 1,
        "add", 1.0, None, [], None,
    )


class _ConvGemm:
    """One tower stage's weights in GEMM form (float64 math at preparation, stored in ``dtype``)."""

    def __init__(self, stage: ConvStage, dtype: torch.dtype, stem: bool) -> None:
        conv = stage.conv if stem else stage.conv.conv
        w = conv.weight.detach().double()  # (c_out, c_in, k)
        c_out, c_in, k = w.shape
        self.kernel, self.c_in, self.c_out = k, c_in, c_out
        if stem:
            self.pre = None
            # im2col column order (k, c_in): row l of the columns is the contiguous run
            # x_padded[l : l + k, :], so building them is a plain strided memcpy
            self.weight = w.permute(2, 1, 0).reshape(k * c_in, c_out).to(dtype).contiguous()
        else:
            scale, shift = _bn_affine(stage.conv.norm)
            self.pre = (scale.to(dtype), shift.to(dtype))
            self.weight = w.permute(2, 1, 0).to(dtype).contiguous()  # (k, c_in, c_out)
            # the same weight as a (c_out, c_in, 1, k) channels-last 2-D kernel for oneDNN
            self.weight4 = w.to(dtype)[:, :, None, :].contiguous(memory_format=torch.channels_last)
        pw = stage.res.conv
        pw_bias = pw.bias.detach().double()
        # Fold the pointwise bias: u~ = u + b_pw is what the conv now emits, so the residual
        # u~ + t @ W_pw needs no extra add, and the BN shift is corrected by -scale * b_pw.
        self.bias = (conv.bias.detach().double() + pw_bias).to(dtype)
        scale, shift = _bn_affine(stage.res.norm)
        self.res_affine = (scale.to(dtype), (shift - scale * pw_bias).to(dtype))
        self.res_weight = pw.weight.detach().double()[:, :, 0].t().to(dtype).contiguous()  # (c, c)


class FastEpiformer(nn.Module):
    """Inference-only Epiformer: same inputs and outputs as :class:`Epiformer` in eval mode.

    forward(x): (batch, in_channels, seq_len) float -> (batch, n_tracks, out_bins) float32.
    Built by :func:`prepare_for_inference`; holds no trainable parameters and runs under
    ``torch.inference_mode``. Not thread-safe (it reuses per-batch-size work buffers).
    """

    def __init__(self, model: NetworkBase, dtype: torch.dtype = torch.float32, conv_impl: str = "auto") -> None:
        super().__init__()
        cfg: ModelConfig = model.config
        self.config = cfg
        self.dtype = dtype
        device = next(model.parameters()).device
        self.device = device
        if conv_impl == "auto":
            conv_impl = "onednn" if _onednn_available(device, dtype) else "gemm"
        if conv_impl not in ("onednn", "gemm"):
            raise ValueError(f"conv_impl must be auto, onednn or gemm, not {conv_impl!r}")
        if conv_impl == "onednn" and not _onednn_available(device, dtype):
            raise ValueError(f"conv_impl='onednn' needs a CPU build of torch with oneDNN (mkldnn) that runs {dtype} here")
        self.conv_impl = conv_impl
        with torch.no_grad():
            self.stages: List[_ConvGemm] = [_ConvGemm(model.stem, dtype, stem=True)]
            self.stages += [_ConvGemm(block, dtype, stem=False) for block in model.tower]
        # The published family's post-LN trunk re-normalises a residual stream whose bf16 rounding
        # cost 1.4% max relative error at full size (0.6% with an fp32 trunk); it is ~14% of the
        # FLOPs, so it runs in fp32 whatever the tower's dtype.
        self.trunk_dtype = torch.float32 if model.config.arch == "published" and dtype != torch.float64 else dtype
        self.trunk = _trunk_for(model, self.trunk_dtype)
        self._workspaces: Dict[int, Dict[str, torch.Tensor]] = {}

    # ---- work buffers ---------------------------------------------------------------------------
    def _workspace(self, batch: int) -> Dict[str, torch.Tensor]:
        ws = self._workspaces.get(batch)
        if ws is not None:
            return ws
        cfg = self.config
        kw = dict(dtype=self.dtype, device=self.device)
        stem = self.stages[0]
        length, pad = cfg.seq_len, stem.kernel // 2
        ws = {
            # zero padding rows stay zero forever: only the interior is ever written
            "x": torch.zeros(batch, length + 2 * pad, stem.c_in, **kw),
            "cols": torch.empty(batch * length, stem.c_in * stem.kernel, **kw),
            "u0": torch.empty(batch * length, stem.c_out, **kw),
            "t0": torch.empty(batch * length, stem.c_out, **kw),
        }
        length //= 2
        for i, st in enumerate(self.stages[1:], start=1):
            p = self._pad(st)
            rows = batch * (length + 2 * p)
            ws[f"p{i}"] = torch.zeros(batch, length + 2 * p, st.c_in, **kw)
            ws[f"u{i}"] = torch.zeros(rows, st.c_out, **kw)
            ws[f"t{i}"] = torch.empty(rows - 2 * p, st.c_out, **kw)
            length //= 2
        ws["z"] = torch.empty(batch, length, cfg.d_model, **kw)
        # keep only a couple of batch sizes: buffers of the full model are ~0.5 GB per window
        if len(self._workspaces) >= 2:
            self._workspaces.pop(next(iter(self._workspaces)))
        self._workspaces[batch] = ws
        return ws

    # ---- forward --------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.dim() != 3 or x.shape[1] != cfg.in_channels or x.shape[2] != cfg.seq_len:
            raise ValueError(f"expected input (batch, {cfg.in_channels}, {cfg.seq_len}), got {tuple(x.shape)}")
        batch = x.shape[0]
        ws = self._workspace(batch)
        z = self._tower(x.to(device=self.device), ws)
        return self.finish(z)  # one window at a time past the tower (a few % of the work)

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        """Transformer and head on tower outputs z (batch, n_bins, d_model) -> (batch, n_tracks, out_bins).

        One window at a time: matrix-multiply kernels may pick a different blocking for a
        different row count, and a window's prediction must not depend on what it was batched with.
        """
        return torch.cat([self.trunk(z[i:i + 1].to(self.trunk_dtype)) for i in range(z.shape[0])])

    @torch.inference_mode()
    def finish_many(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`finish` with all windows in one call: much faster for small models (larger matrix
        multiplies), equal to it within float rounding but not bitwise. For callers whose batches
        are fixed by the input and the model alone (ISM's mutants of a span, score-variants' alleles
        of a chunk: see :func:`~epiformer_cli.model.incremental.trunk_batch_rows`), so results stay
        reproducible. ``predict`` keeps :meth:`finish` (its outputs must not depend on the batch).
        """
        return self.trunk(z.to(self.trunk_dtype))

    def _tower(self, x: torch.Tensor, ws: Dict[str, torch.Tensor]) -> torch.Tensor:
        batch, length = x.shape[0], self.config.seq_len
        stem = self.stages[0]
        pad = stem.kernel // 2
        xp = ws["x"]
        xp[:, pad:pad + length].copy_(x.transpose(1, 2))
        width = stem.kernel * stem.c_in
        windows = xp.as_strided((batch, length, width), (xp.stride(0), stem.c_in, 1))
        ws["cols"].view(batch, length, width).copy_(windows)
        u = torch.addmm(stem.bias, ws["cols"], stem.weight, out=ws["u0"])
        self._residual(u, ws["t0"], stem)
        src = u.view(batch, length, stem.c_out)
        for i, st in enumerate(self.stages[1:], start=1):
            length //= 2
            p = self._pad(st)
            buf = ws[f"p{i}"]
            dst = buf[:, p:p + length]
            torch.maximum(src[:, 0:2 * length:2], src[:, 1:2 * length:2], out=dst)
            scale, shift = st.pre
            torch.addcmul(shift, dst, scale, out=dst)
            _gelu_(dst)
            if self.conv_impl == "onednn":
                u = ws[f"u{i}"]
                u.copy_(st.bias.expand_as(u))
                _onednn_conv_add_(u.view(batch, length, st.c_out), buf, st.weight4, st.kernel // 2)
            else:
                flat = buf.view(-1, st.c_in)
                rows = flat.shape[0] - 2 * p  # output rows; the last 2p of each sample are junk
                u = ws[f"u{i}"][:rows]
                torch.addmm(st.bias, flat[0:rows], st.weight[0], out=u)
                for tap in range(1, st.kernel):
                    u.addmm_(flat[tap:tap + rows], st.weight[tap])
            self._residual(u, ws[f"t{i}"], st)
            src = ws[f"u{i}"].view(batch, length + 2 * p, st.c_out)
        length //= 2
        z = ws["z"]
        torch.maximum(src[:, 0:2 * length:2], src[:, 1:2 * length:2], out=z)
        return z

    def _pad(self, st: _ConvGemm) -> int:
        """Zero rows kept on each side of a sample in a stage's input buffer."""
        return 0 if self.conv_impl == "onednn" else st.kernel // 2

    @staticmethod
    def _residual(u: torch.Tensor, t: torch.Tensor, st: _ConvGemm) -> None:
        """u += GELU(u * scale + shift) @ W_pw, in place (bias already folded into u)."""
        scale, shift = st.res_affine
        torch.addcmul(shift, u, scale, out=t)
        _gelu_(t)
        u.addmm_(t, st.res_weight)


class _Trunk:
    """The transformer and head of a prepared model: z (batch, n_bins, d_model) -> (batch, n_tracks,
    out_bins) float32. Subclasses prepare weights and define ``_transformer`` and ``_head``."""

    config: ModelConfig

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self._head(self._transformer(z))

    def _cropped_rows(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_bins, d) -> (batch * out_bins, d): the bins the head predicts."""
        b, length, d = x.shape
        c = self.config.crop_bins
        return x[:, c:length - c].reshape(-1, d)

    def _tracks(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        """Head outputs (batch * out_bins, n_tracks) before softplus -> (batch, n_tracks, out_bins) float32."""
        cfg = self.config
        return F.softplus(y.float()).view(batch, cfg.out_bins, cfg.n_tracks).transpose(1, 2).contiguous()


class _EpiformerTrunk(_Trunk):
    """epiformer's transformer and head, prepared: each pre-LN LayerNorm's affine folded into the
    linear layer it feeds, the final LayerNorm and head BatchNorm composed into one affine.

    __call__(z): (batch, n_bins, d_model) tower output -> (batch, n_tracks, out_bins) float32.
    """

    def __init__(self, model: Epiformer, dtype: torch.dtype) -> None:
        self.config = model.config
        self.layers = [self._prepare_layer(layer, rel, dtype) for layer, rel in zip(model.layers, model.rel_bias)]
        fn = model.final_norm
        scale, shift = _bn_affine(model.head.norm)
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

    @staticmethod
    def _prepare_layer(layer, rel, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
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

    def _transformer(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        x = x.reshape(b * length, d).clone()
        for p in self.layers:
            h = F.layer_norm(x, (d,), eps=p["eps1"])
            qkv = torch.addmm(p["qkv_b"], h, p["qkv_w"].t())
            qkv = qkv.view(b, length, 3, p["n_heads"], d // p["n_heads"]).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=p["bias"])
            y = y.transpose(1, 2).reshape(b * length, d)
            x.addmm_(y, p["out_w"].t()).add_(p["out_b"])
            h = F.layer_norm(x, (d,), eps=p["eps2"])
            a, g = torch.addmm(p["ffn_b"], h, p["ffn_w"].t()).chunk(2, dim=-1)
            x.addmm_(F.silu(a).mul_(g), p["ffn_out_w"].t()).add_(p["ffn_out_b"])
        return x.view(b, length, d)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._cropped_rows(x)
        scale, shift = self.final_affine
        h = F.layer_norm(rows, (x.shape[-1],), eps=self.final_eps)
        h = _gelu_(torch.addcmul(shift, h, scale))
        a, g = torch.addmm(self.head_b, h, self.head_w.t()).chunk(2, dim=-1)
        return self._tracks(torch.addmm(self.out_b, F.silu(a).mul_(g), self.out_w.t()), x.shape[0])


class _PublishedTrunk(_Trunk):
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

    def __init__(self, model, dtype: torch.dtype) -> None:
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
        scale, shift = _bn_affine(head.norm)
        self.head_affine = (scale.to(dtype), shift.to(dtype))
        w_conv = head.conv.weight.detach().double()[:, :, 0]  # (hidden, d)
        w_out = head.out.weight.detach().double()  # (tracks, hidden)
        self.head_w = (w_out @ w_conv).to(dtype).contiguous()  # (tracks, d)
        self.head_b = (w_out @ head.conv.bias.detach().double() + head.out.bias.detach().double()).to(dtype)

    def _transformer(self, x: torch.Tensor) -> torch.Tensor:
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

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.head_affine
        h = _gelu_(torch.addcmul(shift, self._cropped_rows(x), scale))
        return self._tracks(torch.addmm(self.head_b, h, self.head_w.t()), x.shape[0])


def _trunk_for(model, dtype: torch.dtype):
    """The prepared transformer + head of ``model``'s family."""
    if model.config.arch == "published":
        return _PublishedTrunk(model, dtype)
    return _EpiformerTrunk(model, dtype)


def prepare_for_inference(model: NetworkBase, dtype: torch.dtype = torch.float32,
                          conv_impl: str = "auto") -> FastEpiformer:
    """Build the fast inference form of ``model`` (which is left untouched) computing in ``dtype``.

    Args:
        model: a trained (or freshly built) :class:`Epiformer`; its eval-mode behaviour is used
            (BatchNorm running statistics, no dropout) whatever mode it is in.
        dtype: ``torch.float32`` or ``torch.bfloat16`` (weights are converted once).
        conv_impl: how the width-k tower convolutions run: ``onednn`` (oneDNN's fused
            convolution, CPU only), ``gemm`` (k accumulating matrix multiplies, any device) or
            ``auto`` (oneDNN when available).

    Returns:
        a :class:`FastEpiformer`; call it like the model: (batch, in_channels, seq_len) ->
        (batch, n_tracks, out_bins) float32.
    """
    if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise ValueError(f"unsupported inference dtype {dtype}")
    return FastEpiformer(model, dtype, conv_impl).eval()
