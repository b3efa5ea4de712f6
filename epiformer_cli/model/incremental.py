"""The substitution (SNV) fast path: recompute the conv tower only where a changed base can reach.

A base change at input position ``p`` alters a width-k "same" convolution's output only over
``[p - k//2, p + k//2]``; a max-pool 2 maps that to the pooled positions covering it; the next
stage widens it again by its own kernel, and so on through the stem and the six tower stages.
After 7 halvings a single-base change touches only a handful of the transformer's 128 bp bins
(about 4 at every preset size). :class:`IncrementalTower` therefore

1. runs the tower ONCE for the reference window, keeping every stage's (activated, zero-padded)
   input, and
2. for a batch of substitutions in that window, rebuilds each stage only over a small fixed-width
   patch around the change: reference activations outside the changed range, the substitution's
   recomputed values inside it, then conv -> residual -> max-pool on the patch alone. The last
   stage's patch replaces the changed bins of the reference transformer input ``z``.

The Transformer and the head then run in full on every alternative ``z`` (attention mixes all
bins): one window at a time in :meth:`IncrementalTower.finish`, or many alternatives (of one
window or of several) in one call in :meth:`IncrementalTower.finish_many`, which ISM and variant
scoring use in batches of :func:`trunk_batch_rows`. The arithmetic is the same as :class:`~epiformer_cli.model.fast.FastEpiformer` (its
prepared, folded weights are used), so the result equals a full reference + alternative forward
pass within float rounding.

Coordinates: positions are 0-based offsets into the model window (``0 <= p < seq_len``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from epiformer_cli.model.fast import FastEpiformer

#: longest substitution (bp) the fast path takes; longer ones go through the plain path.
MAX_SUBSTITUTION = 32


@dataclass
class ReferenceState:
    """The reference window's tower, kept for incremental updates.

    Attributes:
        inputs: per stage, its input as (seq positions + 2 * pad, channels) with ``pad`` zero rows
            on each side: the raw model input for the stem, the activated (BN affine + GELU)
            pooled output of the previous stage for the tower blocks.
        lengths: per stage, its input length in positions (seq_len, seq_len/2, ...).
        z: (n_bins, d_model) the transformer input (last stage's pooled output).
    """

    inputs: List[torch.Tensor]
    lengths: List[int]
    z: torch.Tensor


class IncrementalTower:
    """Reference tower once, then cheap per-substitution updates, then transformer + head.

    Args:
        fast: the prepared inference model (:func:`prepare_for_inference`); its weights, dtype
            and device are used as they are.
        max_width: longest substitution (bp) :meth:`alternative_z` accepts.
    """

    def __init__(self, fast: FastEpiformer, max_width: int = MAX_SUBSTITUTION) -> None:
        self.fast = fast
        self.config = fast.config
        self.dtype = fast.dtype
        self.device = fast.device
        self.stages = fast.stages
        self.max_width = int(max_width)
        # Per stage: the fixed patch widths for a change of max_width; the zero padding of each
        # stored input must hold a whole patch even when the change sits at the window's edge.
        self.pad = max(self._plan(self.max_width)[i][2] for i in range(len(self.stages))) + 8
        self._slots: Dict[int, dict] = {}  # a reference state's buffers per slot (see reference)
        self._temps: Dict[int, dict] = {}  # the tower pass's temporaries per thread
        self._aranges: Dict[int, torch.Tensor] = {}  # index steps, read-only once made
        self._weights = []
        for i, st in enumerate(self.stages):
            w = st.weight if i == 0 else st.weight.reshape(st.kernel * st.c_in, st.c_out)
            self._weights.append(w.contiguous())

    def _plan(self, width: int) -> List[Tuple[int, int, int]]:
        """Per stage: (changed input width w, pooled output width W, patch input width) for a change of ``width``."""
        plan = []
        w = width
        for st in self.stages:
            h = st.kernel // 2
            out_w = (w + 2 * h + 1) // 2 + 1
            plan.append((w, out_w, 2 * out_w + 2 * h))
            w = out_w
        return plan

    # ---- reference --------------------------------------------------------------------------
    @torch.inference_mode()
    def reference(self, x: torch.Tensor, slot: int = 0) -> ReferenceState:
        """Run the tower on one window and keep every stage's input.

        The fast tower itself runs (:meth:`FastEpiformer.tower`: oneDNN's convolutions where
        available, work buffers allocated once), in buffers of this tower whose zero margins are
        wide enough for any patch; the returned state views those buffers. So a state is valid
        until the next ``reference`` call of the same ``slot``: a caller holding several windows'
        (or views') states at once gives each its own slot (ISM: one per view). The slots of a
        thread share the pass's temporaries; each keeps its stage inputs (tiny preset: 2.6 MB; full size:
        ~0.3 GB). Slots may be filled from several threads at once, each slot from one.

        x: (in_channels, seq_len) or (1, in_channels, seq_len) model input (see ``model_inputs``).
        """
        if x.dim() == 3:
            x = x[0]
        cfg = self.config
        if x.shape != (cfg.in_channels, cfg.seq_len):
            raise ValueError(f"expected input ({cfg.in_channels}, {cfg.seq_len}), got {tuple(x.shape)}")
        ws = self._reference_workspace(slot)
        z = self.fast.tower(x[None], ws)
        n = len(self.stages)
        inputs = [ws["x"][0]] + [ws[f"p{i}"][0] for i in range(1, n)]
        lengths = [cfg.seq_len >> i for i in range(n)]
        return ReferenceState(inputs=inputs, lengths=lengths, z=z[0])

    def _reference_workspace(self, slot: int) -> dict:
        """The fast tower's buffers for one window with :attr:`pad` margin rows: the stage inputs
        and output a state keeps, one set per slot, and the pass's temporaries, one set per thread
        (the slots of one thread share them; views computed in lanes, :mod:`~epiformer_cli.inference.lanes`,
        each have their own)."""
        thread = threading.get_ident()
        temps = self._temps.get(thread)
        kept = self._slots.get(slot)
        if kept is None and temps is not None and self._slots:
            # a new slot of a thread that has its temporaries: only the kept buffers are new (zero
            # margins; a full workspace would hold a second set of temporaries for a moment)
            pattern = next(iter(self._slots.values()))
            kept = self._slots[slot] = {k: torch.empty_like(v) if k == "z" else torch.zeros_like(v)
                                        for k, v in pattern.items()}
        if temps is None or kept is None:
            ws = self.fast.new_workspace(1, margin=self.pad)
            kept_keys = [k for k in ws if k in ("x", "z") or k.startswith("p")]
            if temps is None:
                temps = self._temps[thread] = {k: v for k, v in ws.items() if k not in kept_keys}
            if kept is None:
                kept = self._slots[slot] = {k: ws[k] for k in kept_keys}
        return {**temps, **kept}

    # ---- alternatives -----------------------------------------------------------------------
    @torch.inference_mode()
    def alternative_z(self, state: ReferenceState, positions: Sequence[int], alt_inputs: torch.Tensor) -> torch.Tensor:
        """Transformer inputs of the window with each substitution applied (one at a time).

        Args:
            state: from :meth:`reference`.
            positions: (V,) 0-based window offset of each substitution's first base.
            alt_inputs: (V, in_channels, w) the model input columns of the substituted bases
                (``model_inputs`` of the alt codes and the reference conservation), all of one
                width ``w <= max_width``; ``positions + w`` must stay inside the window.

        Returns:
            (V, n_bins, d_model) alternative ``z``.
        """
        n_var = alt_inputs.shape[0]
        pos = self._positions(positions, alt_inputs)
        if n_var == 0:
            return state.z.new_empty((0,) + tuple(state.z.shape))
        out = state.z.unsqueeze(0).repeat(n_var, 1, 1)
        cols_in = alt_inputs.to(device=self.device, dtype=self.dtype).transpose(1, 2)  # (V, w, C)
        # One substitution at a time: every GEMM then has the same shape whatever else is being
        # scored, so a variant's result never depends on its neighbours or the batch size.
        for v in range(n_var):
            self._one(state, int(pos[v]), cols_in[v], out[v])
        return out

    def _positions(self, positions: Sequence[int], alt_inputs: torch.Tensor) -> torch.Tensor:
        """The substitutions' window offsets as a tensor, checked against their inputs."""
        n_var, _, width = alt_inputs.shape
        if width > self.max_width:
            raise ValueError(f"substitution of {width} bp is longer than the fast path's {self.max_width}")
        pos = torch.as_tensor(positions, dtype=torch.long, device=self.device).reshape(-1)
        if pos.numel() != n_var:
            raise ValueError("one position per alternative input is needed")
        if n_var and (int(pos.min()) < 0 or int(pos.max()) + width > self.config.seq_len):
            raise ValueError("substitutions must lie inside the window")
        return pos

    @torch.inference_mode()
    def alternative_z_many(self, state: ReferenceState, positions: Sequence[int], alt_inputs: torch.Tensor) -> torch.Tensor:
        """:meth:`alternative_z` with all substitutions propagated together: each stage is one
        gather, one matrix multiply and one scatter for the whole batch instead of a few small
        calls per substitution. Equal to it within float rounding, not bitwise (the multiply has
        more rows), so callers use it where the batch is fixed by the input and the model alone (ISM
        of a span; variant scoring's substitutions of a window, at most :func:`trunk_batch_rows`).

        The patches' starts are worked out on the host (numpy, one number a substitution) and
        only the (substitutions x patch) index grids are made by torch: a batch of 10 SNVs is ~200
        small operations, and torch's per-call overhead on index arithmetic was about half of this
        method's time at the tiny preset.
        """
        n_var = alt_inputs.shape[0]
        self._positions(positions, alt_inputs)  # checks
        if n_var == 0:
            return state.z.new_empty((0,) + tuple(state.z.shape))
        pad, dev = self.pad, self.device
        steps = self._steps
        start = np.asarray(positions, dtype=np.int64).reshape(-1)
        rows_v = steps(n_var)[:, None]
        vals = alt_inputs.to(device=dev, dtype=self.dtype).transpose(1, 2)  # (V, w, C)
        out = state.z.unsqueeze(0).repeat(n_var, 1, 1)
        for i, st in enumerate(self.stages):
            length = state.lengths[i]
            h, k = st.kernel // 2, st.kernel
            w = vals.shape[1]
            out_w = (w + 2 * h + 1) // 2 + 1
            n_in = 2 * out_w + 2 * h
            out_start = (start - h) // 2  # floor division, as torch's rounding_mode="floor"
            in_start = 2 * out_start - h
            # reference activations around each change (zero rows outside the sequence) ...
            patch = state.inputs[i][torch.from_numpy(pad + in_start).to(dev)[:, None] + steps(n_in)]  # (V, n_in, C)
            # ... with the recomputed values of the changed range written over them
            patch[rows_v, torch.from_numpy(start - in_start).to(dev)[:, None] + steps(w)] = vals
            cols = patch.as_strided((n_var, 2 * out_w, k * st.c_in), (n_in * st.c_in, st.c_in, 1))
            u = torch.addmm(st.bias, cols.reshape(n_var * 2 * out_w, k * st.c_in), self._weights[i])
            st.residual_(u)
            u = u.view(n_var, 2 * out_w, st.c_out)
            y = torch.maximum(u[:, 0::2], u[:, 1::2])  # (V, out_w, c_out)
            start = out_start
            pooled = torch.from_numpy(start).to(dev)[:, None] + steps(out_w)  # (V, out_w) pooled rows
            # every patch inside the sequence (the usual case) needs no mask
            all_inside = int(start.min()) >= 0 and int(start.max()) + out_w <= length // 2
            if i + 1 < len(self.stages):
                vals = self.stages[i + 1].activate_input(y)
                if not all_inside:  # outside the sequence the next conv sees its zero padding
                    inside = (pooled >= 0) & (pooled < length // 2)
                    vals.mul_(inside.unsqueeze(-1))
            elif all_inside:
                out[rows_v, pooled] = y
            else:
                inside = (pooled >= 0) & (pooled < length // 2)
                v_idx, j_idx = inside.nonzero(as_tuple=True)
                out[v_idx, pooled[v_idx, j_idx]] = y[v_idx, j_idx]
        return out

    def _steps(self, n: int) -> torch.Tensor:
        """``torch.arange(n)`` on the tower's device, made once per length."""
        got = self._aranges.get(n)
        if got is None:
            got = self._aranges[n] = torch.arange(n, device=self.device)
        return got

    def _one(self, state: ReferenceState, start: int, vals: torch.Tensor, z_out: torch.Tensor) -> None:
        """Propagate one substitution (vals: (w, C) stem input columns at ``start``) into ``z_out``."""
        pad = self.pad
        for i, st in enumerate(self.stages):
            length = state.lengths[i]
            h, k = st.kernel // 2, st.kernel
            w = vals.shape[0]
            out_w = (w + 2 * h + 1) // 2 + 1
            n_in = 2 * out_w + 2 * h
            out_start = (start - h) // 2
            in_start = 2 * out_start - h
            # reference activations around the change (zero rows outside the sequence) ...
            patch = state.inputs[i][pad + in_start:pad + in_start + n_in].clone()
            # ... with the recomputed values of the changed range written over them
            patch[start - in_start:start - in_start + w] = vals
            cols = patch.as_strided((2 * out_w, k * st.c_in), (st.c_in, 1))
            u = torch.addmm(st.bias, cols, self._weights[i])
            st.residual_(u)
            y = torch.maximum(u[0::2], u[1::2])  # (out_w, c_out)
            start = out_start
            lo, hi = max(0, -start), min(out_w, length // 2 - start)  # rows inside the sequence
            if i + 1 < len(self.stages):
                vals = self.stages[i + 1].activate_input(y)
                vals[:lo] = 0  # outside the sequence the next conv sees its zero padding
                vals[hi:] = 0
            else:
                z_out[start + lo:start + hi] = y[lo:hi]

    # ---- transformer + head -----------------------------------------------------------------
    @torch.inference_mode()
    def finish(self, z: torch.Tensor) -> torch.Tensor:
        """Transformer and head on each ``z`` (V, n_bins, d_model) -> (V, n_tracks, out_bins) float32.

        One window at a time, like :class:`FastEpiformer`, so results never depend on batching
        (ISM and variant scoring use :meth:`finish_many` instead, for speed).
        """
        if z.dim() == 2:
            z = z.unsqueeze(0)
        return self.fast.finish(z)

    @torch.inference_mode()
    def finish_many(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`finish` in one batched call (equal within float rounding, not bitwise: see
        :meth:`FastEpiformer.finish_many`); z (V, n_bins, d_model) -> (V, n_tracks, out_bins) float32.
        Its activations grow with V: callers cap V at :func:`trunk_batch_rows`."""
        return self.fast.finish_many(z)


#: memory the Transformer's activations of one :meth:`IncrementalTower.finish_many` batch may take (bytes).
_TRUNK_BUDGET = 256 << 20
#: work one batch may hold (FLOP). As for the engine's CPU batch (``inference.engine._CPU_BATCH_FLOP``),
#: rows per second rise with the batch only while its matrix multiplies are small; past a few GFLOP a
#: call, a batch only adds memory, and at full size its fresh 100+ MB temporaries cost page faults
#: (measured on a 2-core AVX2 EPYC, 2026-11-28: 5 full-size rows a call ran slower than 1).
_TRUNK_CALL_FLOP = 4e9
#: past a few dozen rows a batch is no faster (tiny preset, same CPU: ~1,300 rows/s at 16-128).
_MAX_TRUNK_ROWS = 64


def trunk_flops_per_row(config) -> float:
    """Transformer FLOPs of one window's ``z``, roughly: per layer 8 L d^2 (projections), 4 L^2 d
    (attention) and 6 L d f (feed-forward), L bins, d width, f feed-forward width."""
    L, d, f = config.n_bins, config.d_model, config.ffn_dim
    return float(config.n_layers * (8 * L * d * d + 4 * L * L * d + 6 * L * d * f))


def trunk_batch_rows(config) -> int:
    """Rows (alleles) per :meth:`IncrementalTower.finish_many` call: as many as fit both a memory
    budget and a few GFLOP of work, at most 64.

    A function of the model's size only (never of the device or of options), so the batches, and
    with them the rounding of every result, are the same wherever the same input is scored.
    Memory per row: the residual stream and its temporaries (~8 x n_bins x d_model floats) and the
    attention scores (~3 x heads x n_bins^2), 1 MB for the tiny preset; work per row:
    :func:`trunk_flops_per_row`. Tiny preset: 64 rows; small: 4; full size (51 GFLOP a row): 1.
    """
    per_row = 4 * (config.n_bins * config.d_model * 8 + config.n_heads * config.n_bins ** 2 * 3)
    fit = min(_TRUNK_BUDGET // per_row, int(_TRUNK_CALL_FLOP // trunk_flops_per_row(config)))
    return int(max(1, min(_MAX_TRUNK_ROWS, fit)))


def changed_bins(config, width: int = 1) -> int:
    """How many transformer bins a substitution of ``width`` bp can change (at most)."""
    w = width
    w = (w + 2 * (config.stem_kernel // 2) + 1) // 2 + 1
    for _ in config.tower_channels:
        w = (w + 2 * (config.tower_kernel // 2) + 1) // 2 + 1
    return w
