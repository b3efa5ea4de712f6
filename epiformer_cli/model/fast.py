"""The fast, deterministic inference form of a network of any family (eval only, no autograd).

:func:`prepare_for_inference` copies a trained network's weights into :class:`FastEpiformer`. Past
the tower shared by every family it runs the family's prepared trunk
(:attr:`~epiformer_cli.model.families.ModelFamily.prepare_trunk`); the tower itself runs as plain
matrix multiplications on a channels-last layout:

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
  map only for positive scales). Where folding IS exact the family's trunk does it (epiformer's:
  the head's BatchNorm and the final LayerNorm's affine compose into one affine, and each pre-LN
  LayerNorm's affine is folded into the linear layer it feeds);
* weights are stored once in the compute dtype (bf16 weights for bf16 runs; no per-call casts).

Results match the eval-mode eager model to ~1e-5 relative in float32 and are deterministic.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from epiformer_cli.model.config import ModelConfig
from epiformer_cli.model.families import family
from epiformer_cli.model.prepared import bn_affine, gelu_
from epiformer_cli.model.tower import ConvStage, NetworkBase


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


class PreparedStage:
    """One tower stage (:class:`~epiformer_cli.model.tower.ConvStage`) in GEMM form, for the fast
    tower here and the incremental tower (float64 math at preparation, stored in ``dtype``).

    Layouts are channels-last: activations (positions, channels).

    Attributes:
        kernel, c_in, c_out: the stage convolution's width (positions) and channels.
        weight: the convolution; stem: (kernel * c_in, c_out), im2col columns in (k, c_in) order;
            tower blocks: (kernel, c_in, c_out), one (c_in, c_out) matrix per tap.
        weight4: tower blocks only: the same weight as a (c_out, c_in, 1, kernel) channels-last
            2-D kernel for oneDNN.
        bias: (c_out,) the convolution's bias plus the residual pointwise conv's bias.
        pre: tower blocks only: (scale, shift) of the BatchNorm on the stage's input (None for the
            stem, whose input is the raw model input); see :meth:`activate_input`.
        res_affine: (scale, shift) of the residual branch's BatchNorm, corrected for the folded bias.
        res_weight: (c_out, c_out) the residual pointwise convolution.
    """

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
            scale, shift = bn_affine(stage.conv.norm)
            self.pre = (scale.to(dtype), shift.to(dtype))
            self.weight = w.permute(2, 1, 0).to(dtype).contiguous()  # (k, c_in, c_out)
            # the same weight as a (c_out, c_in, 1, k) channels-last 2-D kernel for oneDNN
            self.weight4 = w.to(dtype)[:, :, None, :].contiguous(memory_format=torch.channels_last)
        pw = stage.res.conv
        pw_bias = pw.bias.detach().double()
        # Fold the pointwise bias: u~ = u + b_pw is what the conv now emits, so the residual
        # u~ + t @ W_pw needs no extra add, and the BN shift is corrected by -scale * b_pw.
        self.bias = (conv.bias.detach().double() + pw_bias).to(dtype)
        scale, shift = bn_affine(stage.res.norm)
        self.res_affine = (scale.to(dtype), (shift - scale * pw_bias).to(dtype))
        self.res_weight = pw.weight.detach().double()[:, :, 0].t().to(dtype).contiguous()  # (c, c)

    def activate_input(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """GELU(x * scale + shift): this tower block's input BatchNorm and activation, applied to
        the previous stage's pooled output x (positions, c_in); written into ``out`` (which may be
        ``x``) when given. Returns the result."""
        scale, shift = self.pre
        return gelu_(torch.addcmul(shift, x, scale, out=out))

    def residual_(self, u: torch.Tensor, work: Optional[torch.Tensor] = None) -> None:
        """u += GELU(u * scale + shift) @ W_pw in place, u (rows, c_out) the convolution's output
        (the pointwise bias already folded into it); ``work``, of u's shape, is used for the
        branch when given (the fast tower reuses one buffer), else a new tensor."""
        scale, shift = self.res_affine
        t = torch.addcmul(shift, u, scale, out=work)
        gelu_(t)
        u.addmm_(t, self.res_weight)


class FastEpiformer(nn.Module):
    """Inference-only form of a network of any family: same inputs and outputs as that network in
    eval mode.

    forward(x): (batch, in_channels, seq_len) float -> (batch, n_tracks, out_bins) float32.
    Built by :func:`prepare_for_inference`; holds no trainable parameters and runs under
    ``torch.inference_mode``. Not thread-safe (it reuses per-batch-size work buffers).

    Attributes (read by the incremental tower, :mod:`~epiformer_cli.model.incremental`):
        config, dtype, device: the model's config; the tower's compute dtype and device.
        stages: the tower's :class:`PreparedStage` s, the stem first.
        trunk, trunk_dtype: the family's prepared transformer and head, and the dtype it runs in.
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
            stem, *tower = model.conv_stages()
            self.stages: List[PreparedStage] = [PreparedStage(stem, dtype, stem=True)]
            self.stages += [PreparedStage(block, dtype, stem=False) for block in tower]
        fam = family(cfg.arch)
        # a family may need its trunk in fp32 under a bf16/fp16 tower (see ModelFamily.trunk_float32)
        self.trunk_dtype = torch.float32 if fam.trunk_float32 and dtype != torch.float64 else dtype
        self.trunk = fam.prepare_trunk(model, self.trunk_dtype)
        self._workspaces: Dict[int, Dict[str, torch.Tensor]] = {}

    # ---- work buffers ---------------------------------------------------------------------------
    def _workspace(self, batch: int) -> Dict[str, torch.Tensor]:
        ws = self._workspaces.get(batch)
        if ws is not None:
            return ws
        ws = self.new_workspace(batch)
        # keep only a couple of batch sizes: buffers of the full model are ~0.5 GB per window
        if len(self._workspaces) >= 2:
            self._workspaces.pop(next(iter(self._workspaces)))
        self._workspaces[batch] = ws
        return ws

    def new_workspace(self, batch: int, margin: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """Work buffers of the tower for ``batch`` windows (what :meth:`forward` keeps per batch size).

        Every stage's input buffer ``x`` (the stem's) and ``p1``, ``p2``, ... (the tower blocks')
        is (batch, length + 2 * m, channels) with m zero rows on each side of every window; only
        the interior is ever written, so the margins stay zero. ``margin=None`` gives each stage
        the rows its own convolution needs (the stem's k // 2; k // 2 or, with oneDNN, none for the
        blocks); an int gives every stage that many (at least the largest k // 2): the incremental
        tower (:meth:`~epiformer_cli.model.incremental.IncrementalTower.reference`) keeps these
        buffers as its reference state and patches around a change inside those margins.
        After :meth:`tower` ``z`` (batch, n_bins, d_model) holds the tower's output.
        """
        cfg = self.config
        if margin is not None and margin < max(st.kernel // 2 for st in self.stages):
            raise ValueError(f"a margin of {margin} rows is narrower than a convolution's half width")
        kw = dict(dtype=self.dtype, device=self.device)
        stem = self.stages[0]
        length = cfg.seq_len
        pad = stem.kernel // 2 if margin is None else margin
        ws = {
            # zero padding rows stay zero forever: only the interior is ever written
            "x": torch.zeros(batch, length + 2 * pad, stem.c_in, **kw),
            "cols": torch.empty(batch * length, stem.c_in * stem.kernel, **kw),
            "u0": torch.empty(batch * length, stem.c_out, **kw),
            "t0": torch.empty(batch * length, stem.c_out, **kw),
        }
        length //= 2
        for i, st in enumerate(self.stages[1:], start=1):
            p = self._pad(st) if margin is None else margin
            g = p if self.conv_impl == "gemm" else 0  # rows of u between windows (the GEMM's junk rows)
            rows = batch * (length + 2 * g)
            ws[f"p{i}"] = torch.zeros(batch, length + 2 * p, st.c_in, **kw)
            ws[f"u{i}"] = torch.zeros(rows, st.c_out, **kw)
            ws[f"t{i}"] = torch.empty(rows - 2 * g, st.c_out, **kw)
            length //= 2
        ws["z"] = torch.empty(batch, length, cfg.d_model, **kw)
        return ws

    # ---- forward --------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.dim() != 3 or x.shape[1] != cfg.in_channels or x.shape[2] != cfg.seq_len:
            raise ValueError(f"expected input (batch, {cfg.in_channels}, {cfg.seq_len}), got {tuple(x.shape)}")
        batch = x.shape[0]
        ws = self._workspace(batch)
        z = self.tower(x.to(device=self.device), ws)
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

        The windows go through in slices of :func:`trunk_chunk_rows` (a function of the model
        alone): a slice's activations stay in the CPU's caches, which made 16-row slices of the
        tiny preset ~15% faster a row than one 64-row call (1 thread, CPU time, 2026-12-06).
        """
        z = z.to(self.trunk_dtype)
        step = trunk_chunk_rows(self.config)
        if len(z) <= step:
            return self.trunk(z)
        return torch.cat([self.trunk(z[i:i + step]) for i in range(0, len(z), step)])

    def tower(self, x: torch.Tensor, ws: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The tower on x (batch, in_channels, seq_len) in the buffers ``ws`` of :meth:`new_workspace`
        (of that batch size): returns ``ws["z"]`` (batch, n_bins, d_model), and leaves every
        stage's input (the raw input in ``ws["x"]``, the activated pooled outputs in ``ws["p1"]``,
        ...) in place until the next call with the same buffers."""
        batch, length = x.shape[0], self.config.seq_len
        stem = self.stages[0]
        xp = ws["x"]
        m = (xp.shape[1] - length) // 2  # the buffer's margin rows on each side
        xp[:, m:m + length].copy_(x.transpose(1, 2))
        width = stem.kernel * stem.c_in
        windows = xp.as_strided((batch, length, width), (xp.stride(0), stem.c_in, 1),
                                xp.storage_offset() + (m - stem.kernel // 2) * stem.c_in)
        ws["cols"].view(batch, length, width).copy_(windows)
        u = torch.addmm(stem.bias, ws["cols"], stem.weight, out=ws["u0"])
        stem.residual_(u, ws["t0"])
        src = u.view(batch, length, stem.c_out)
        for i, st in enumerate(self.stages[1:], start=1):
            length //= 2
            h = st.kernel // 2
            buf = ws[f"p{i}"]
            p = (buf.shape[1] - length) // 2
            dst = buf[:, p:p + length]
            torch.maximum(src[:, 0:2 * length:2], src[:, 1:2 * length:2], out=dst)
            st.activate_input(dst, out=dst)
            if self.conv_impl == "onednn":
                u = ws[f"u{i}"]
                u.copy_(st.bias.expand_as(u))
                if p:  # the margin rows are the zero padding: one window's rows, no padding asked
                    if batch != 1:
                        raise ValueError("oneDNN with margins takes one window at a time")
                    _onednn_conv_add_(u.view(batch, length, st.c_out), buf[:, p - h:p + length + h], st.weight4, 0)
                else:
                    _onednn_conv_add_(u.view(batch, length, st.c_out), buf, st.weight4, h)
                g = 0
            else:
                flat = buf.view(-1, st.c_in)
                rows = flat.shape[0] - 2 * p  # output rows; the last 2p of each sample are junk
                u = ws[f"u{i}"][:rows]
                torch.addmm(st.bias, flat[p - h:p - h + rows], st.weight[0], out=u)
                for tap in range(1, st.kernel):
                    u.addmm_(flat[p - h + tap:p - h + tap + rows], st.weight[tap])
                g = p
            st.residual_(u, ws[f"t{i}"])
            src = ws[f"u{i}"].view(batch, length + 2 * g, st.c_out)
        length //= 2
        z = ws["z"]
        torch.maximum(src[:, 0:2 * length:2], src[:, 1:2 * length:2], out=z)
        return z

    def _pad(self, st: PreparedStage) -> int:
        """Zero rows kept on each side of a sample in a stage's input buffer."""
        return 0 if self.conv_impl == "onednn" else st.kernel // 2


#: Transformer rows (windows x bins) a slice of :meth:`FastEpiformer.finish_many` holds.
_CHUNK_TOKENS = 2048


def trunk_chunk_rows(config: ModelConfig) -> int:
    """Windows per slice of :meth:`FastEpiformer.finish_many`: about 2,048 bins of activations
    (tiny preset: 16 windows of 128 bins; small: 8; full size: 2)."""
    return max(1, _CHUNK_TOKENS // config.n_bins)


def prepare_for_inference(model: NetworkBase, dtype: torch.dtype = torch.float32,
                          conv_impl: str = "auto") -> FastEpiformer:
    """Build the fast inference form of ``model`` (which is left untouched) computing in ``dtype``.

    Args:
        model: a trained (or freshly built) network of a registered family (``build_network``);
            its eval-mode behaviour is used (BatchNorm running statistics, no dropout) whatever
            mode it is in.
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
