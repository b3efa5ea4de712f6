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

from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from epiformer_cli.explain.result import Explanation, project

if TYPE_CHECKING:  # pragma: no cover - typing only
    from epiformer_cli.inference.engine import InferenceEngine


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
