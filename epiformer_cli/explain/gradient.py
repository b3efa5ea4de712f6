"""Gradient x input contributions of a span, reverse-complement averaged, on the plain network.

The explained quantity is the same as ISM's: the prediction summed over the output bins that
overlap the span, per track, averaged over the forward and reverse-complement views by the
engine's own averaging (:meth:`~epiformer_cli.inference.engine.InferenceEngine.average_views`, as
``predict``). Its gradient with respect to the one-hot input (conservation held fixed) is taken
by autograd through BOTH views at once (:meth:`~epiformer_cli.inference.strand.View.one_hot`), so
the reverse view's gradient lands on the forward strand's bases and letters by itself.

The gradient of a one-hot input has an arbitrary per-position offset (only differences between
bases are defined on the simplex the data live on), so the mean over the four bases is removed
at each position before projecting (Majdandzic et al. 2023's correction; tangermeme and captum
leave it to the user): ``hypothetical[b, p] = g[b, p] - mean_b' g[b', p]``, and the contribution
of the reference base is ``hypothetical[ref, p]`` (what input x gradient gives after the
correction).

Cost per span: one forward pass per view (keeping its graph: ~1.4 plain forwards) and one
backward pass per view and track (input gradients only: ~1.25 forwards), so about
``views x (1.4 + 1.25 x tracks)`` plain forward passes; measured 5.0 (tiny, 1 track, 2 views),
10.0 (3 tracks) and 7.2 at full size (benchmarks/README.md). One window per call, so a span's
values never depend on what else is explained.

captum's ``InputXGradient`` computes the same product; it is not used because it adds a dependency
for one autograd call and knows neither the strand averaging nor the correction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Optional

import numpy as np

from epiformer_cli.explain.result import Explanation, project

if TYPE_CHECKING:  # pragma: no cover - typing only
    from epiformer_cli.inference.engine import InferenceEngine


#: float bytes a span's arrays take per track and base at their peak (:meth:`GradientExplainer.explain`):
#: the float64 gradients (T, 4, L) 32, their stack 32, the centred copy 32 and its numpy copy 32,
#: the float32 matrix 16 and contributions 4.
_SPAN_BYTES_PER_BASE = 148


def graph_bytes(config) -> int:
    """Bytes autograd keeps for the backward pass of one window through the plain network, in
    float32: per convolution stage (input length L_i, channels c_in -> c_out) the inputs of its
    BatchNorm, GELU and convolution (3 c_in L_i; the stem's plain convolution: c_in L), the
    residual branch's three and the max-pool's input and indices (5 c_out L_i); per Transformer
    layer (n bins, width d, heads h, feed-forward f) ~12 n d + 3 h n^2 + 3 n f. Within 5% of the
    saved tensors counted by ``torch.autograd.graph.saved_tensors_hooks`` (tiny: 32 MB; small:
    258 MB; full size: 2.3 GB).
    """
    L = config.seq_len
    chans = (config.stem_channels,) + tuple(config.tower_channels)
    numbers = config.in_channels * L + 5 * chans[0] * L
    length = L // 2
    for c_in, c_out in zip(chans[:-1], chans[1:]):
        numbers += 3 * c_in * length + 5 * c_out * length
        length //= 2
    n, d = config.n_bins, config.d_model
    numbers += config.n_layers * (12 * n * d + 3 * config.n_heads * n * n + 3 * n * config.ffn_dim)
    return int(4 * numbers)


def gradient_memory_parts(config, n_tracks: int, span_bp: int, views: int = 2,
                          device_type: str = "cpu") -> Dict[str, int]:
    """Bytes gradient x input of one span allocates beyond the loaded model, by part (their sum,
    :func:`gradient_memory_bytes`, is the memory pre-check's estimate). Spans are explained one
    at a time, so the number of regions does not enter.

    * ``graph``: the forward graph of every view at once (:func:`graph_bytes` each);
    * ``backward``: the gradients flowing back through the stem, a few (seq_len, stem channels)
      float32 tensors at a time (3 counted);
    * ``span``: the span's arrays, :data:`_SPAN_BYTES_PER_BASE` per track and base.

    On a CUDA GPU the first two are the GPU's memory, not the host's, and are left out.
    """
    parts = {
        "graph": views * graph_bytes(config),
        "backward": 3 * 4 * config.seq_len * config.stem_channels,
        "span": _SPAN_BYTES_PER_BASE * int(n_tracks) * int(span_bp),
    }
    if device_type == "cuda":
        parts["graph"] = parts["backward"] = 0
    return parts


def gradient_memory_bytes(config, n_tracks: int, span_bp: int, views: int = 2, device_type: str = "cpu") -> int:
    """The sum of :func:`gradient_memory_parts`."""
    return int(sum(gradient_memory_parts(config, n_tracks, span_bp, views, device_type).values()))


class GradientExplainer:
    """Gradient x input of spans of model windows.

    Args:
        model: the plain network (:class:`~epiformer_cli.model.network.NetworkBase`) on the
            engine's device; its eval-mode behaviour is used.
        engine: the engine whose views, tracks, device and precision to follow.
    """

    method = "gradient"

    def __init__(self, model, engine: "InferenceEngine") -> None:
        if engine.context:
            raise ValueError("gradients do not take input shifts")
        self.model = model.eval()
        self.engine = engine
        self.config = model.config

    @staticmethod
    def mutants(codes: np.ndarray) -> int:
        return 0

    def memory_bytes(self, span_bp: int) -> int:
        """:func:`gradient_memory_bytes` of a span of ``span_bp`` with this explainer's engine."""
        engine = self.engine
        return gradient_memory_bytes(self.config, len(engine.tracks), span_bp, len(engine.views), engine.device.type)

    def explain(self, codes: np.ndarray, cons: np.ndarray, first: int, last: int, bins: tuple,
                progress: Optional[Callable[[int], None]] = None) -> Explanation:
        """Gradient x input of window offsets ``[first, last)``.

        Args:
            codes: (seq_len,) uint8 window codes; cons: (seq_len,) float32 conservation.
            first, last: the span (window offsets); bins: (b0, b1) output bins summed.

        Returns:
            :class:`Explanation` with ``matrix`` = hypothetical contributions (tracks, 4, L).
        """
        import torch

        from epiformer_cli.data.encoding import inputs_from_one_hot, one_hot
        from epiformer_cli.device import autocast

        engine, cfg = self.engine, self.config
        device = engine.device
        b0, b1 = bins
        tracks = engine.tracks
        dtype = next(self.model.parameters()).dtype  # float32 (float64 for finite-difference checks)
        x = one_hot(torch.from_numpy(np.ascontiguousarray(codes))[None].to(device), dtype=dtype).requires_grad_(True)
        c = torch.from_numpy(np.ascontiguousarray(cons, dtype=np.float32))[None].to(device=device, dtype=dtype)

        def predict_view(view) -> "torch.Tensor":
            xv, cv = view.one_hot(x, c)
            with autocast(device, engine.precision):
                y = self.model(inputs_from_one_hot(xv, cv, cfg.conservation))
            if y.dtype in (torch.float16, torch.bfloat16):
                y = y.float()  # sum autocast outputs in float32
            return y

        with torch.enable_grad():
            total = engine.average_views(predict_view)  # (1, T, out_bins), the engine's tracks
            sums = total[0, :, b0:b1].sum(-1)  # (T,)
            grads = []
            for t in range(len(tracks)):
                (g,) = torch.autograd.grad(sums[t], x, retain_graph=t + 1 < len(tracks))
                grads.append(g[0, :, first:last].double())
        g = torch.stack(grads)  # (T, 4, L)
        hyp = (g - g.mean(dim=1, keepdim=True)).cpu().numpy()
        span = np.asarray(codes[first:last])
        hyp[:, :, span > 3] = np.nan
        matrix = hyp.astype(np.float32)
        pred = total.detach()[0].cpu().numpy().astype(np.float32)
        if progress is not None:
            progress(1)
        return Explanation(codes=span.copy(), matrix=matrix, contrib=project(matrix, span), pred=pred,
                           total=sums.detach().double().cpu().numpy())
