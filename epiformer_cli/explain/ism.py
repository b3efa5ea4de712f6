"""In-silico saturation mutagenesis (ISM) of a span, on the variant-scoring fast path.

Every base of the span is changed to each of the three other bases, one at a time, conservation
kept at the reference (as the published Epiformer notebooks did). The effect of a mutant is the
change of the prediction summed over the output bins that overlap the span, per track, averaged
over the engine's views (forward and reverse-complement strand) exactly as ``predict`` averages.

Speed: the reference window's conv tower runs once per view, as the fast tower itself
(:meth:`~epiformer_cli.model.incremental.IncrementalTower.reference`: about one plain pass); each mutant recomputes the tower
only inside its receptive field (a few of the transformer's bins), and mutants go through the
transformer and head in batches (:meth:`FastEpiformer.finish_many`). The result equals full
reference + mutant forward passes within float rounding.

Conventions (compare tangermeme's ``saturation_mutagenesis``, which runs full passes): the effect
matrix is (tracks, 4, L) with 0 at the reference base; the contribution of the reference base is
MINUS the mean effect of its three mutations (tangermeme's per-position mean over all four bases,
reference included, is 3/4 of it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Dict, Optional

import numpy as np

from epiformer_cli.explain.result import Explanation, ism_contributions

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from epiformer_cli.inference.engine import InferenceEngine

#: memory the trunk's activations of one mutant batch may take (bytes): the batch is sized from the
#: model alone, so results never depend on the device or on --batch-size.
_BATCH_BUDGET = 256 << 20
_MAX_BASES_PER_BATCH = 64


def bases_per_batch(config) -> int:
    """Bases whose 3 mutants share one transformer call: a function of the model's size only."""
    per_window = 4 * (config.n_bins * config.d_model * 8 + config.n_heads * config.n_bins ** 2 * 3)
    return int(max(1, min(_MAX_BASES_PER_BATCH, _BATCH_BUDGET // (3 * per_window))))


#: bytes of one number in each ``--precision``'s compute dtype.
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: float bytes a span's arrays take per track and base at their peak (:meth:`IsmExplainer.explain`
#: and the piece written from it): the float64 effects (T, 4, L) 32, the float32 matrix 16, the
#: contributions' float64 copy of the matrix and its sum 40, the float32 contributions 4; for a
#: variant the reference's matrix and contributions (20) are kept while the ALT is explained.
_SPAN_BYTES_PER_BASE = 112


def ism_memory_parts(config, n_tracks: int, span_bp: int, views: int = 2, precision: str = "fp32",
                     device_type: str = "cpu") -> Dict[str, int]:
    """Bytes ISM of one span allocates beyond the loaded model, by part (what
    :func:`~epiformer_cli.runs.space.require_memory` is given is their sum,
    :func:`ism_memory_bytes`). Every span is explained alone, so the number of regions does not
    enter; the outputs are assembled from the pieces one at a time.

    * ``reference``: per view, the incremental tower's kept stage inputs (``seq_len / 2^i``
      positions x the stage's input channels, a few padding rows aside) and its (n_bins,
      d_model) output;
    * ``reference pass``: the fast tower's temporaries, which the incremental tower keeps between
      windows (:meth:`~epiformer_cli.model.incremental.IncrementalTower.reference`): the stem's
      im2col matrix (seq_len x stem kernel x input channels), its output and residual branch
      (seq_len x stem channels, twice), and each block's output and residual branch;
    * ``mutants``: one batch of 3 x :func:`bases_per_batch` mutants through the Transformer (the
      budget's own per-window count, ~8 n_bins d_model + 3 heads n_bins^2 numbers) and their
      predictions (mutants, model tracks, out_bins) float32 per view;
    * ``span``: the span's arrays, :data:`_SPAN_BYTES_PER_BASE` per track and base.

    On a CUDA GPU all but the span are the GPU's memory, not the host's, and are left out.

    Args:
        n_tracks: tracks explained; span_bp: the longest span explained (bp); views: the engine's
            (2 with strand averaging).
    """
    size = _DTYPE_BYTES[precision]
    L, n, d = config.seq_len, config.n_bins, config.d_model
    chans = (config.in_channels, config.stem_channels) + tuple(config.tower_channels)
    kept = sum((L >> i) * c for i, c in enumerate(chans[:-1])) + n * d
    rows = 3 * bases_per_batch(config)
    per_window = 4 * (n * d * 8 + config.n_heads * n ** 2 * 3)
    parts = {
        "reference": views * kept * size,
        "reference pass": (L * config.stem_kernel * config.in_channels + 2 * L * config.stem_channels
                           + sum(2 * (L >> i) * c for i, c in enumerate(config.tower_channels, start=1))) * size,
        "mutants": rows * per_window + rows * n * d * size + views * rows * config.n_tracks * config.out_bins * 4,
        "span": _SPAN_BYTES_PER_BASE * int(n_tracks) * int(span_bp),
    }
    if device_type == "cuda":
        parts["reference"] = parts["reference pass"] = parts["mutants"] = 0
    return parts


def ism_memory_bytes(config, n_tracks: int, span_bp: int, views: int = 2, precision: str = "fp32",
                     device_type: str = "cpu") -> int:
    """The sum of :func:`ism_memory_parts`: the memory pre-check's estimate of ISM of a span."""
    return int(sum(ism_memory_parts(config, n_tracks, span_bp, views, precision, device_type).values()))


def variant_mutants(n_variants: int, flank: int) -> int:
    """ISM mutants of explaining ``n_variants`` SNVs with ``flank`` bases on each side, both alleles
    (what ``explain``'s ``--max-mutants`` guard counts): 3 per base of 2 x (2 flank + 1) bases."""
    return 3 * 2 * (2 * int(flank) + 1) * int(n_variants)


class IsmExplainer:
    """ISM of spans of model windows with one engine (its fast model, views and tracks).

    Args:
        engine: an :class:`~epiformer_cli.inference.engine.InferenceEngine` without shifts.
    """

    method = "ism"

    def __init__(self, engine: "InferenceEngine") -> None:
        from epiformer_cli.model.incremental import IncrementalTower

        if engine.context:
            raise ValueError("ISM does not take input shifts")
        self.engine = engine
        self.config = engine.config
        self.tower = IncrementalTower(engine.fast, max_width=1)
        self.bases_per_batch = bases_per_batch(self.config)

    def mutants(self, codes: np.ndarray) -> int:
        """Mutants of a span (3 per A/C/G/T base; N bases are not mutated)."""
        return 3 * int((np.asarray(codes) < 4).sum())

    def memory_bytes(self, span_bp: int) -> int:
        """:func:`ism_memory_bytes` of a span of ``span_bp`` with this explainer's engine."""
        engine = self.engine
        return ism_memory_bytes(self.config, len(engine.tracks), span_bp, len(engine.views), engine.precision,
                                engine.device.type)

    def explain(self, codes: np.ndarray, cons: np.ndarray, first: int, last: int, bins: tuple,
                progress: Optional[Callable[[int], None]] = None) -> Explanation:
        """ISM of window offsets ``[first, last)``.

        Args:
            codes: (seq_len,) uint8 base codes of the window; cons: (seq_len,) float32 conservation.
            first, last: the span (window offsets); bins: (b0, b1) output bins summed.
            progress: called with the number of mutants after each batch.

        Returns:
            :class:`Explanation` with ``matrix`` = effects (tracks, 4, L): summed prediction of the
            mutant minus the reference's, 0 at the reference base, NaN at N bases.
        """
        import torch

        from epiformer_cli.data.encoding import model_inputs

        cfg, tower, engine = self.config, self.tower, self.engine
        L = cfg.seq_len
        b0, b1 = bins
        mode, dtype = cfg.conservation, tower.dtype
        span = np.asarray(codes[first:last])
        n_tracks = len(engine.tracks)
        t_cons = torch.from_numpy(np.ascontiguousarray(cons, dtype=np.float32))[None]
        states = {}

        def state(view):
            """The view's reference tower state and model input (made once per view)."""
            if view not in states:
                v_codes, v_cons = view.inputs(codes, t_cons)
                x = model_inputs(torch.from_numpy(np.ascontiguousarray(v_codes))[None], v_cons, mode, dtype=dtype)
                # one slot per view: both views' states stay valid through the span's batches
                # (and the views may run at once, in lanes: inference/lanes.py)
                states[view] = (tower.reference(x, slot=engine.views.index(view)), v_cons)
            return states[view]

        # the reference: full prediction (for the track plot) and its summed value
        ref_pred = engine.average_views(lambda view: tower.finish(state(view)[0].z), parallel=True).cpu().numpy()[0]
        ref_sum = ref_pred[:, b0:b1].astype(np.float64).sum(-1)

        positions = [p for p in range(last - first) if span[p] < 4]
        effects = np.full((n_tracks, 4, last - first), np.nan, dtype=np.float64)
        effects[:, :, positions] = 0.0
        step = self.bases_per_batch
        bases = [np.array([b], dtype=np.uint8) for b in range(4)]  # a mutant's one-base ALT
        for k in range(0, len(positions), step):
            batch = positions[k:k + step]
            mutants = [(p, b) for p in batch for b in range(4) if b != span[p]]

            def predict_view(view) -> "torch.Tensor":
                st, v_cons = state(view)
                offs, columns = [], []
                for p, b in mutants:
                    off, base = view.mirror(first + p, 1, bases[b], L)
                    offs.append(off)
                    col = torch.from_numpy(base)[None]  # (1, 1) uint8
                    columns.append(model_inputs(col, v_cons[:, off:off + 1], mode, dtype=dtype)[0])
                z = tower.alternative_z_many(st, offs, torch.stack(columns))
                return tower.finish_many(z)

            preds = engine.average_views(predict_view, parallel=True).cpu().numpy()  # (mutants, tracks, out_bins)
            sums = preds[:, :, b0:b1].astype(np.float64).sum(-1)
            for (p, b), value in zip(mutants, sums):
                effects[:, b, p] = value - ref_sum
            if progress is not None:
                progress(len(mutants))
        matrix = effects.astype(np.float32)
        return Explanation(codes=span.copy(), matrix=matrix, contrib=ism_contributions(matrix, span),
                           pred=ref_pred, total=ref_sum)


def estimate_seconds(engine: "InferenceEngine", mutants: int) -> float:
    """How long ``mutants`` (times the engine's views) would take here: one batch is timed."""
    import time

    import torch

    cfg = engine.config
    tower = engine.fast
    batch = 3 * bases_per_batch(cfg)
    z = torch.zeros(batch, cfg.n_bins, cfg.d_model, dtype=tower.dtype, device=tower.device)
    tower.finish_many(z)  # warm-up: the first call allocates
    started = time.perf_counter()
    tower.finish_many(z)
    if tower.device.type == "cuda":
        torch.cuda.synchronize(tower.device)
    per_mutant = (time.perf_counter() - started) / batch
    return per_mutant * mutants * len(engine.views) * 1.05  # + the incremental tower, a few %


def describe_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
