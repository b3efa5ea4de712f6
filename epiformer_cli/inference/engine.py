"""The inference engine shared by ``predict`` and ``score-variants``: one model on one device,
batched, in the chosen precision, with reverse-complement and shift averaging.

Inputs are uint8 base codes and per-base conservation on the host (1 + 4 bytes a base); the
one-hot (plus conservation) input is built on the device right before the model. The model runs in
its fast eval-mode form (:func:`epiformer_cli.model.fast.prepare_for_inference`), which in
float32 gives bit-identical outputs at any batch size and thread count.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence, Tuple, TypeVar

import numpy as np

from epiformer_cli.data.tiling import WindowGrid
from epiformer_cli.device import check_device_precision, precision_dtype, resolve_device
from epiformer_cli.errors import UsageError
from epiformer_cli.inference.lanes import in_lane, view_lanes
from epiformer_cli.inference.strand import View
from epiformer_cli.options import parse_shifts

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from epiformer_cli.model.config import ModelConfig
    from epiformer_cli.model.network import Epiformer
    from epiformer_cli.options import InferenceOptions

log = logging.getLogger(__name__)

K = TypeVar("K")

#: GPUs: activation memory one batch may use (bytes), per device type; the default batch fills it.
_BATCH_BUDGET = {"cuda": 8 << 30, "mps": 4 << 30}
#: CPUs: the default batch is sized by speed. Windows/s rises with the batch only until a call holds
#: a few GFLOP (the fixed cost of a call is then amortised); past that only memory grows, linearly
#: with the batch. Measured on a 2-core AVX2 EPYC (benchmarks/README.md, "Default CPU batch size"):
#: the smallest batch within a few % of the best is 8 for the tiny preset (0.43 GFLOP a window),
#: 1 for small (12 GFLOP) and for the full-size model (341 GFLOP).
_CPU_BATCH_FLOP = 4e9
_MAX_DEFAULT_BATCH = 64


def _flop_per_window(config: "ModelConfig") -> float:
    """Forward FLOPs of one window, roughly: the conv tower's ~12 x seq_len x stem_channels x d_model
    (within 10% of FlopCounterMode's count for every preset)."""
    return 12.0 * config.seq_len * config.stem_channels * config.d_model


def default_batch_size(config: "ModelConfig", device: "torch.device") -> int:
    """The default windows per model call on ``device``.

    On a CPU: the smallest batch (a power of 2) that runs within a few % of the best windows/s, as
    memory grows with the batch and speed does not. On a GPU: a batch whose activations fill a
    budget comfortably (a rough, conservative guess).
    """
    if device.type == "cpu":
        fit = _CPU_BATCH_FLOP / _flop_per_window(config)
        return 1 if fit < 2 else min(_MAX_DEFAULT_BATCH, 1 << int(math.log2(fit)))
    # the stem's activations dominate: a few (seq_len, stem_channels) float32 buffers per window
    per_window = 4 * 4 * config.seq_len * max(config.stem_channels, 64)
    budget = _BATCH_BUDGET.get(device.type, 1 << 30)
    return int(max(1, min(_MAX_DEFAULT_BATCH, budget // per_window)))


#: bytes of one number in each ``--precision``'s compute dtype.
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: input batches alive at once on the host: the reader's prefetch queue (3), the batch being read
#: and the one in the model (``predict_stream``).
_HOST_BATCHES = 5
#: output batches alive at once: the background writer's queue (4) and the one being assembled.
_OUTPUT_BATCHES = 5


def workspace_bytes(config: "ModelConfig", batch_size: int, precision: str = "fp32", conv_impl: str = "gemm") -> int:
    """Bytes of the fast model's work buffers for one batch size (exactly the tensors
    :class:`~epiformer_cli.model.fast.FastEpiformer` allocates for it): the stem's padded input
    (B, L + k - 1, c_in), its im2col matrix (B L, k c_in) and two (B L, c_stem) outputs; per tower
    stage (input length L / 2^i) its padded input, output and residual buffers; the transformer
    input (B, n_bins, d_model). ``conv_impl``: ``gemm`` pads each stage's rows by k // 2 on each
    side, ``onednn`` does not. Full size: about 0.8 GB a window in fp32; tiny: 6 MB.
    """
    b, size = int(batch_size), _DTYPE_BYTES[precision]
    length, k, c_in, c_stem = config.seq_len, config.stem_kernel, config.in_channels, config.stem_channels
    total = b * (length + 2 * (k // 2)) * c_in + b * length * c_in * k + 2 * b * length * c_stem
    chans = (c_stem,) + tuple(config.tower_channels)
    pad = 0 if conv_impl == "onednn" else config.tower_kernel // 2
    for c_prev, c_out in zip(chans[:-1], chans[1:]):
        length //= 2
        rows = b * (length + 2 * pad)
        total += rows * c_prev + rows * c_out + (rows - 2 * pad) * c_out
    total += b * (length // 2) * config.d_model
    return int(total * size)


def inference_memory_bytes(config: "ModelConfig", batch_size: int, n_tracks: int, *, context: int = 0,
                           precision: str = "fp32", device_type: str = "cpu", held_bins: int = 0) -> int:
    """Bytes that running the engine at ``batch_size`` allocates beyond the loaded model, for the
    memory pre-check (:func:`~epiformer_cli.runs.space.require_memory`).

    The model of bytes (B windows a batch, L = seq_len, T tracks):

    * on the device (counted unless it is a CUDA GPU, whose out-of-memory halves the batch
      instead): the work buffers of :func:`workspace_bytes` for B windows plus a second, smaller
      set for a short last batch (at most B / 2: longer tails run padded to B), the one-hot input
      of one view (B, in_channels, L), the Transformer's activations of one window (the trunk runs
      a window at a time: ~8 n_bins d_model + 3 heads n_bins^2 numbers), and the views' outputs;
    * on the host: :data:`_HOST_BATCHES` batches of inputs (1 byte of base code and 4 of
      conservation a base, over L + 2 ``context``) and :data:`_OUTPUT_BATCHES` of float32 outputs
      (B, T, out_bins);
    * ``held_bins``: float32 output bins per track the caller keeps beyond the batches (predict's
      store chunks being filled and written).

    Args:
        config: the model's :class:`~epiformer_cli.model.config.ModelConfig`.
        batch_size: windows per model call (``--batch-size``, or :func:`default_batch_size`).
        n_tracks: tracks returned.
        context: bases read on each side of a window for input shifts (max |shift|).
        precision: ``fp32``, ``bf16`` or ``fp16`` (the fast model's compute dtype).
        device_type: ``cpu``, ``cuda`` or ``mps`` (MPS memory is the host's).
    """
    b, size = max(1, int(batch_size)), _DTYPE_BYTES[precision]
    outputs = b * n_tracks * config.out_bins * 4
    total = _HOST_BATCHES * b * (config.seq_len + 2 * context) * 5 + _OUTPUT_BATCHES * outputs
    if device_type != "cuda":
        n, d = config.n_bins, config.d_model
        total += workspace_bytes(config, b, precision) + workspace_bytes(config, b // 2, precision)
        total += b * config.in_channels * config.seq_len * size
        total += 4 * (8 * n * d + 3 * config.n_heads * n * n)
        total += 2 * b * config.n_tracks * config.out_bins * 4
    return int(total + 4 * n_tracks * max(0, int(held_bins)))


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class EngineStats:
    """Where :meth:`InferenceEngine.predict_stream` spent its time (seconds on the calling thread).

    ``model_s / (model_s + input_wait_s + output_wait_s)`` is the fraction of time the device was
    busy: a measure of the pipeline that does not depend on how fast the model is.
    """

    windows: int = 0
    model_s: float = 0.0
    input_wait_s: float = 0.0
    output_wait_s: float = 0.0  # filled by callers that hand results to a background writer

    @property
    def busy_fraction(self) -> float:
        total = self.model_s + self.input_wait_s + self.output_wait_s
        return self.model_s / total if total > 0 else 0.0


class InferenceEngine:
    """Batched, device-placed, test-time-averaged predictions from one Epiformer.

    Args:
        model: an :class:`~epiformer_cli.model.network.Epiformer` (eval-mode behaviour is used;
            the model is moved to ``device``).
        device: ``auto|cpu|cuda|cuda:N|mps`` or a ``torch.device`` (see :mod:`epiformer_cli.device`).
        precision: ``fp32`` (default; bit-identical at any batch size), ``bf16`` or ``fp16`` (GPU).
        batch_size: windows per model call; default chosen per device. On a GPU out-of-memory the
            batch is halved and the call retried, with a notice.
        rc_average: also predict the reverse-complement strand, flip its output back and average.
        shifts: input shifts in bp (|s| < 64) to average over; ``(0,)`` means none.
        tracks: indices of the model's tracks to return (default all, in model order).

    Attributes:
        config: the model config; grid: its :class:`WindowGrid`; device; precision; batch_size.
        context: extra bases needed on EACH side of a window for the shifts (max |shift|).
        input_length: bases per input row: ``config.seq_len + 2 * context``.

    Inputs to :meth:`predict` for a window ``[start, end)`` (0-based, half-open, ``end - start ==
    seq_len``) cover ``[start - context, end + context)``. Outputs are (windows, tracks, out_bins)
    float32, bin ``i`` covering ``[start + crop_bp + 128 i, start + crop_bp + 128 (i + 1))``.
    """

    def __init__(
        self,
        model: "Epiformer",
        *,
        device: "str | torch.device" = "auto",
        precision: str = "fp32",
        batch_size: Optional[int] = None,
        rc_average: bool = True,
        shifts: Sequence[int] = (0,),
        tracks: Optional[Sequence[int]] = None,
    ) -> None:
        import torch

        from epiformer_cli.model.fast import prepare_for_inference

        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = check_device_precision(self.device, precision)
        self.config = model.config
        self.grid = WindowGrid.from_config(self.config)
        self.shifts = parse_shifts(list(shifts), self.grid.bin_bp)
        self.rc_average = bool(rc_average)
        self.context = max(abs(s) for s in self.shifts)
        self.input_length = self.config.seq_len + 2 * self.context
        n_tracks = self.config.n_tracks
        self.tracks = list(range(n_tracks)) if tracks is None else [int(t) for t in tracks]
        if not self.tracks or any(not 0 <= t < n_tracks for t in self.tracks):
            raise UsageError(f"track indices must lie in 0..{n_tracks - 1}, got {self.tracks}")
        # every track in model order needs no selection; any other list (a subset, or all of them
        # reordered, as ``--tracks b,a`` gives) is picked in the order given
        self._select_tracks = self.tracks != list(range(n_tracks))
        if batch_size is not None and batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size) if batch_size else default_batch_size(self.config, self.device)
        self._dtype = precision_dtype(self.precision)
        model = model.to(self.device)
        self.fast = prepare_for_inference(model, self._dtype)
        self.stats = EngineStats()
        self.views: Tuple[View, ...] = tuple(
            View(s, r) for s in self.shifts for r in ((False, True) if self.rc_average else (False,))
        )

    @classmethod
    def from_options(cls, model: "Epiformer", options: "InferenceOptions", *, device: "torch.device",
                     tracks: Optional[Sequence[int]] = None) -> "InferenceEngine":
        """The engine a command's :class:`~epiformer_cli.options.InferenceOptions` describe, on
        ``device`` (resolved by :func:`~epiformer_cli.device.compute_device`), computing the
        model outputs ``tracks`` (indices; the options hold names)."""
        return cls(model, device=device, precision=options.precision, batch_size=options.batch_size,
                   rc_average=options.rc_average, shifts=options.shifts, tracks=tracks)

    @property
    def forward_passes_per_window(self) -> int:
        """Model evaluations per window (2 with reverse-complement averaging, times the shifts)."""
        return len(self.views)

    # ---- the one call everything goes through -----------------------------------------------
    def predict(self, codes: np.ndarray, conservation: Optional[np.ndarray] = None) -> np.ndarray:
        """Predict windows from host arrays.

        Args:
            codes: (windows, input_length) uint8 base codes (A=0 C=1 G=2 T=3 N=4).
            conservation: (windows, input_length) float32 in [0, 1] (missing = 0), or None (all
                zero; also what a model with ``conservation == "none"`` ignores).

        Returns:
            (windows, len(tracks), out_bins) float32: the mean over the views, each reverse-strand
            prediction flipped back onto the forward strand before averaging.
        """
        import torch

        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.input_length:
            raise ValueError(f"codes must be (windows, {self.input_length}), got {codes.shape}")
        if conservation is not None and np.shape(conservation) != codes.shape:
            raise ValueError(f"conservation must match codes {codes.shape}, got {np.shape(conservation)}")
        n = codes.shape[0]
        out = np.empty((n, len(self.tracks), self.config.out_bins), dtype=np.float32)
        if n == 0:
            return out
        non_blocking = self.device.type == "cuda"
        t_codes = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.uint8)).to(self.device, non_blocking=non_blocking)
        t_cons = None
        if conservation is not None and self.config.conservation != "none":
            t_cons = torch.from_numpy(np.ascontiguousarray(conservation, dtype=np.float32)).to(
                self.device, non_blocking=non_blocking)
        start = 0
        while start < n:
            stop = min(n, start + self.batch_size)
            rows_codes, rows_cons = t_codes[start:stop], None if t_cons is None else t_cons[start:stop]
            pad = self.batch_size - (stop - start)
            if 0 < pad < self.batch_size // 2:
                # A tail batch of over half the batch size runs padded to the full size: the model
                # keeps work buffers per batch size (hundreds of MB), and values do not depend on
                # the batch, so this keeps one buffer set and memory flat for the cost of a few rows.
                rows_codes = torch.cat([rows_codes, rows_codes[:1].expand(pad, -1)])
                if rows_cons is not None:
                    rows_cons = torch.cat([rows_cons, rows_cons[:1].expand(pad, -1)])
            try:
                result = self._predict_rows(rows_codes, rows_cons)[: stop - start]
            except Exception as exc:
                if not (_is_oom(exc) and self.batch_size > 1):
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory on %s: retrying with --batch-size %d", self.device, self.batch_size)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            out[start:stop] = result
            start = stop
        return out

    def average_views(self, predict_view: Callable[[View], "torch.Tensor"], parallel: bool = False) -> "torch.Tensor":
        """The one test-time averaging of every command: the mean over :attr:`views` of
        ``predict_view(view)``.

        ``predict_view`` returns (rows, n_model_tracks, out_bins) predictions of the view's own
        input (:meth:`View.inputs`); here each is mapped back onto the forward strand's bin order
        (:meth:`View.outputs_back`) and the engine's tracks are selected, then the views are
        averaged, always in the same order (so the same inputs give the same bits). Autograd
        passes through it (the gradient explainer's averaging is this one too).

        ``parallel``: the caller's ``predict_view`` may run for several views at once, each on its
        own thread (it keeps no shared work buffers: see :mod:`~epiformer_cli.inference.lanes`);
        the views then run in lanes when :func:`~epiformer_cli.inference.lanes.lane_plan` says the
        model is small enough to gain from it. The result has the same bits either way as with one
        thread.

        Returns:
            (rows, len(tracks), out_bins) tensor on the device.
        """
        lanes = view_lanes(_flop_per_window(self.config), len(self.views), self.device) if parallel else None
        ys = lanes.map(predict_view, self.views) if lanes is not None else None
        total = None
        for i, view in enumerate(self.views):
            y = view.outputs_back(ys[i] if ys is not None else predict_view(view))
            y = y[:, self.tracks] if self._select_tracks else y
            total = y.clone() if total is None else total.add_(y)
        if len(self.views) > 1:
            total.div_(len(self.views))
        return total

    def view_slot(self, view: View) -> int:
        """The :class:`~epiformer_cli.model.incremental.IncrementalTower` slot a view's reference
        state uses: one per view when the views run at once (in lanes), else 0 (one state at a time,
        the least memory)."""
        return self.views.index(view) if in_lane() else 0

    def _predict_rows(self, codes: "torch.Tensor", cons: "Optional[torch.Tensor]") -> np.ndarray:
        from epiformer_cli.data.encoding import model_inputs

        length, c = self.config.seq_len, self.context

        def one_view(view: View) -> "torch.Tensor":
            v_codes, v_cons = view.inputs(codes, cons, context=c, length=length)
            return self.fast(model_inputs(v_codes, v_cons, self.config.conservation, dtype=self._dtype))

        return self.average_views(one_view).cpu().numpy()

    def predict_stream(
        self, batches: Iterable[Tuple[K, np.ndarray, Optional[np.ndarray]]], depth: int = 3
    ) -> Iterator[Tuple[K, np.ndarray]]:
        """Predict ``(key, codes, conservation)`` batches read on a background thread.

        The iterable (which typically reads the FASTA and bigWig) is consumed on a reader thread up
        to ``depth`` batches ahead, so the device never waits for input. Yields ``(key, outputs)``
        in order; ``outputs`` as from :meth:`predict`.
        """
        from epiformer_cli.inference.pipeline import Prefetcher

        with Prefetcher(batches, depth=depth) as prefetched:
            items = iter(prefetched)
            while True:
                t0 = time.perf_counter()
                try:
                    key, codes, cons = next(items)
                except StopIteration:
                    return
                t1 = time.perf_counter()
                preds = self.predict(codes, cons)
                t2 = time.perf_counter()
                self.stats.input_wait_s += t1 - t0
                self.stats.model_s += t2 - t1
                self.stats.windows += len(codes)
                yield key, preds
