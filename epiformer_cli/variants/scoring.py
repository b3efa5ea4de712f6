"""Variant scoring: a status for every allele, then ref and alt predictions and their effects.

Windows are grouped so every window's reference pass runs once (:mod:`.windows` says which window
a variant uses). Substitutions (SNVs, and equal-length changes up to 32 bp after trimming shared
bases) take the incremental fast path (:class:`~epiformer_cli.model.incremental.IncrementalTower`);
indels and longer substitutions take the plain path: their whole alternative window runs through
the inference engine, and its prediction is re-aligned to reference coordinates
(:func:`.windows.realign`). ``fast=False`` scores everything the plain way (a full reference and
alternative forward pass per variant), which the tests and the benchmark compare against.

Batching: the windows of one :meth:`VariantScorer.score` call (one chunk of the job) are taken in
(chrom, start) order in blocks of bounded memory (:func:`block_rows`). In a block, the alternative
``z`` of every window's substitutions
(:meth:`~epiformer_cli.model.incremental.IncrementalTower.alternative_z_many`) go through the
Transformer and head together, in batches of :func:`~epiformer_cli.model.incremental.trunk_batch_rows`
rows (:meth:`~epiformer_cli.model.incremental.IncrementalTower.finish_many`), and the plain path's
windows of the whole block are one :meth:`~epiformer_cli.inference.engine.InferenceEngine.predict`
call. Batch sizes come from the model alone (never from the device or ``--batch-size``), so the
same chunk is batched alike on any device and with any options but ``--chunk-size``.

Tolerance: an alternative allele's batch depends on its neighbours, so its prediction equals the
one-allele-at-a-time computation (``batched=False``) within float rounding, not bitwise by
contract (a matrix-multiply kernel may block differently for another row count): every predicted
value within float32 rounding of the network's sums (``2 * depth * u * sqrt(terms) * max|value|``,
5.6e-5 of the largest prediction for the tiny preset), and an effect over n bins within sqrt(n)
times that; tested in ``tests/test_score_batching.py`` with the bound of ``tests/helpers.py``
(``float_tolerance``), so on any x86-64 kernel (AVX2, AVX-512, AMX).
Reference predictions (``ref_sum``) are exact: each window's reference runs alone, as before
batching. The plain path is exact at any grouping (the engine's outputs do not depend on the
batch). A REF equal to its ALT gets the reference prediction itself (effects exactly 0).

Coordinates are 0-based, half-open, on the FASTA's chromosome names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.data.encoding import encode_sequence
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.chroms import resolve_name
from epiformer_cli.io.vcf import Allele
from epiformer_cli.variants.effects import effects
from epiformer_cli.options import REF_MISMATCH_POLICIES, WINDOW_MODES
from epiformer_cli.variants.windows import GRID, build_alt, realign, score_bin_range, window_start

log = logging.getLogger(__name__)

#: statuses an allele can end with (``ok`` is the only one with effects; the README's score-variants
#: table says what each means).
STATUSES = ("ok", "ref_mismatch", "unknown_chrom", "symbolic_allele", "too_long", "invalid_allele", "n_allele",
            "no_alt")
#: flags that may accompany a status (``n_base``: the REF allele holds N; an ALT with N is ``n_allele``).
FLAGS = ("alias", "edge_padded", "duplicate", "lowercase", "vcf_ref", "n_base")


@dataclass
class Task:
    """One allele on its way through scoring.

    Attributes:
        allele: the VCF allele.
        status: one of :data:`STATUSES`; flags: extra notes (:data:`FLAGS`).
        chrom: the FASTA's name for the allele's chromosome (None when unknown).
        window: input start of the scoring window (0-based; may be negative near a chromosome start).
        result: (tracks, len(EFFECTS)) effects once scored (``ok`` only).
    """

    allele: Allele
    status: str = "ok"
    flags: List[str] = field(default_factory=list)
    chrom: Optional[str] = None
    window: int = 0
    use_vcf_ref: bool = False
    result: Optional[np.ndarray] = None


@dataclass
class _Window:
    """One scoring window's inputs and tasks.

    ``codes``/``cons`` cover ``[start, start + seq_len + extra)`` (0-based; ``extra`` is the longest
    deletion's right flank); ``subs`` are the fast path's (task, window offset, changed ALT codes),
    ``plain`` the plain path's tasks; ``rows`` the model rows (windows' predictions) it needs.
    """

    start: int
    codes: np.ndarray
    cons: np.ndarray
    subs: List[Tuple[Task, int, np.ndarray]]
    plain: List[Task]
    rows: int = 0

    @property
    def fast_rows(self) -> int:
        """The reference and every substitution that changes a base (REF == ALT reuses the reference)."""
        return 1 + sum(1 for _, _, alt in self.subs if len(alt)) if self.subs else 0


#: memory the rows of one block may hold (bytes): plain-path inputs and every row's predictions.
_BLOCK_BUDGET = 256 << 20
_MAX_BLOCK_ROWS = 4096


def block_rows(config, trunk_rows: Optional[int] = None) -> int:
    """Model rows (reference, substitution and plain alternative windows) scored together in one
    block: at least one Transformer batch, within a fixed memory budget. A function of the model
    only, so a block's batches (and the rounding of its results) are the same wherever it runs:
    per row the plain path's inputs (5 bytes a base) and a few copies of its float32 prediction."""
    if trunk_rows is None:  # the fast path's Transformer batch (a scorer without it passes 1)
        from epiformer_cli.model.incremental import trunk_batch_rows

        trunk_rows = trunk_batch_rows(config)
    per_row = 5 * config.seq_len + 3 * 4 * config.n_tracks * config.out_bins
    return int(max(trunk_rows, min(_MAX_BLOCK_ROWS, _BLOCK_BUDGET // per_row)))


class VariantScorer:
    """Scores alleles against one model, genome and conservation track.

    Args:
        engine: an :class:`~epiformer_cli.inference.engine.InferenceEngine` built with
            ``shifts=(0,)`` (its RC averaging, track subset, batch size and precision are used).
        reader: a :class:`~epiformer_cli.inference.reader.WindowReader` of the genome and its
            conservation (the one window reader ``predict`` uses too; no context).
        window_mode: ``grid`` or ``centered`` (see :mod:`.windows`).
        score_bins: bins summed for ``ref_sum``/``alt_sum``, centred on the variant.
        on_ref_mismatch: ``skip`` (status ``ref_mismatch``), ``error`` (stop) or ``use-vcf-ref``
            (score with the VCF's REF written into the reference window; flag ``vcf_ref``).
        fast: use the incremental substitution path (False: plain full passes per variant).
        source: the variant file's name, for messages.
        batched: run alleles through the Transformer and head in batches across windows (see the
            module docstring); False scores one allele and one window at a time, the reference
            the tests and benchmarks compare the batched results with (the command never sets it).
    """

    def __init__(self, engine, reader, *, window_mode: str = GRID, score_bins: int = 5,
                 on_ref_mismatch: str = "skip", fast: bool = True, source: str = "VCF",
                 batched: bool = True) -> None:
        cfg = engine.config
        if window_mode not in WINDOW_MODES:
            raise UsageError(f"--window-mode must be one of {', '.join(WINDOW_MODES)}, not {window_mode!r}")
        if not 1 <= score_bins <= cfg.out_bins:
            raise UsageError(f"--score-bins must be between 1 and the model's {cfg.out_bins} output bins, got {score_bins}")
        if on_ref_mismatch not in REF_MISMATCH_POLICIES:
            raise UsageError(f"--on-ref-mismatch must be one of {', '.join(REF_MISMATCH_POLICIES)}")
        if engine.context or reader.context:
            raise UsageError("variant scoring does not take input shifts")
        self.engine = engine
        self.config = cfg
        self.reader = reader
        self.genome = reader.genome
        self.window_mode = window_mode
        self.score_bins = int(score_bins)
        self.on_ref_mismatch = on_ref_mismatch
        self.fast = bool(fast)
        self.batched = bool(batched)
        self.source = source
        self.seq_len = cfg.seq_len
        self.crop_bp = cfg.crop_bp
        #: longest REF or ALT allele scored: the flanking context a window keeps on each side.
        self.max_allele = self.crop_bp
        self._names: Dict[str, Optional[str]] = {}
        self._tower = None
        self._trunk_rows = 1
        if self.fast:
            from epiformer_cli.model.incremental import IncrementalTower, trunk_batch_rows

            self._tower = IncrementalTower(engine.fast)
            self._trunk_rows = trunk_batch_rows(cfg)
        self._block_rows = block_rows(cfg, self._trunk_rows)

    # ---- statuses ---------------------------------------------------------------------------
    def fasta_name(self, chrom: str) -> Optional[str]:
        if chrom not in self._names:
            self._names[chrom] = resolve_name(chrom, self.genome.chrom_sizes)
        return self._names[chrom]

    def check(self, allele: Allele) -> Task:
        """Give an allele its status and flags (no model work)."""
        task = Task(allele, flags=list(allele.flags))
        kind = allele.kind
        if kind == "none":
            task.status = "no_alt"
            return task
        if kind == "symbolic":
            task.status = "symbolic_allele"
            return task
        if kind == "invalid":
            task.status = "invalid_allele"
            return task
        if "N" in allele.alt:
            # an ALT base nobody knows: its "effect" would be the model's answer to an unknown input
            # base (all-zero one-hot), not a prediction for any real allele
            task.status = "n_allele"
            return task
        name = self.fasta_name(allele.chrom)
        if name is None:
            task.status = "unknown_chrom"
            return task
        task.chrom = name
        if name != allele.chrom:
            task.flags.append("alias")
        if "N" in allele.ref:
            # scored only where the FASTA has N (or an IUPAC code, read as N) there too, or with vcf_ref
            task.flags.append("n_base")
        if len(allele.ref) > self.max_allele or len(allele.alt) > self.max_allele:
            task.status = "too_long"
            return task
        size = self.genome.chrom_sizes[name]
        if allele.start < 0 or allele.end > size:
            task.status = "ref_mismatch"
            return task
        genome_ref = self.genome.fetch(name, allele.start, allele.end)
        if not np.array_equal(genome_ref, encode_sequence(allele.ref)):
            if self.on_ref_mismatch == "error":
                from epiformer_cli.data.encoding import decode_sequence

                raise InputFileError(
                    f"{self.source}: REF {allele.ref} of {allele.chrom}:{allele.pos} does not match the FASTA "
                    f"{self.genome.path} ({decode_sequence(genome_ref)}): check that the VCF and FASTA are of the same assembly, "
                    "or use --on-ref-mismatch skip|use-vcf-ref"
                )
            if self.on_ref_mismatch == "skip":
                task.status = "ref_mismatch"
                return task
            task.use_vcf_ref = True
            task.flags.append("vcf_ref")
        task.window = window_start(self.window_mode, allele.start, self.seq_len, self.crop_bp, self.config.bin_size)
        # a deletion's alt window reads that many bases of right flank past the reference window
        reach = max(0, len(allele.ref) - len(allele.alt))
        if task.window < 0 or task.window + self.seq_len + reach > size:
            task.flags.append("edge_padded")
        return task

    # ---- scoring ----------------------------------------------------------------------------
    def score(self, tasks: Sequence[Task]) -> None:
        """Fill ``result`` of every ``ok`` task. Windows are visited in (chrom, start) order so
        each reference pass runs once for all of its variants; consecutive windows are scored
        together in blocks of at most :func:`block_rows` model rows (one window at a time
        without ``batched``)."""
        groups: Dict[Tuple[str, int], List[Task]] = {}
        for task in tasks:
            if task.status == "ok":
                groups.setdefault((task.chrom, task.window), []).append(task)
        block: List[_Window] = []
        rows = 0
        for (chrom, start), group in sorted(groups.items()):
            window = self._window(chrom, start, group)
            if not self.batched:
                self._score_window(window)
                continue
            if block and rows + window.rows > self._block_rows:
                self._score_block(block)
                block, rows = [], 0
            block.append(window)
            rows += window.rows
        if block:
            self._score_block(block)

    def _window(self, chrom: str, start: int, group: List[Task]) -> "_Window":
        """Read a window's inputs and split its tasks between the fast and the plain path."""
        L = self.seq_len
        extra = max(max(0, len(t.allele.ref) - len(t.allele.alt)) for t in group)
        codes, cons = self.reader.read(chrom, start, start + L + extra)
        window = _Window(start, codes, cons, [], [])
        for task in group:
            a = task.allele
            if task.use_vcf_ref or not self.fast:
                window.plain.append(task)
                continue
            if len(a.ref) == len(a.alt):
                off, alt = _trim(a.start - start, encode_sequence(a.ref), encode_sequence(a.alt))
                if len(alt) <= self._tower.max_width:
                    window.subs.append((task, off, alt))
                    continue
            window.plain.append(task)
        own_ref = sum(1 for t in window.plain if t.use_vcf_ref or not self.fast)
        shared_ref = int(not window.subs and len(window.plain) > own_ref)
        window.rows = window.fast_rows + len(window.plain) + own_ref + shared_ref
        return window

    def _score_window(self, window: "_Window") -> None:
        """One window, one allele at a time through the Transformer (``batched=False``)."""
        L = self.seq_len
        ref_pred = None
        if window.subs:
            ref_pred, alt_preds = self._fast_substitutions(window.codes[:L], window.cons[:L],
                                                           [(o, c) for _, o, c in window.subs])
            for (task, _, _), alt_pred in zip(window.subs, alt_preds):
                self._finish(task, window.start, ref_pred, alt_pred)
        if window.plain:
            self._plain([window], [ref_pred])

    def _score_block(self, block: List["_Window"]) -> None:
        """Consecutive windows together: their substitutions in shared Transformer batches, their
        plain-path windows in one engine call."""
        refs: Dict[int, np.ndarray] = {}
        fast = [w for w in block if w.subs]
        if fast:
            for w, (ref_pred, alt_preds) in zip(fast, self._fast_block(fast)):
                refs[id(w)] = ref_pred
                for (task, _, _), alt_pred in zip(w.subs, alt_preds):
                    self._finish(task, w.start, ref_pred, alt_pred)
        plain = [w for w in block if w.plain]
        if plain:
            self._plain(plain, [refs.get(id(w)) for w in plain])

    def _finish(self, task: Task, start: int, ref_pred: np.ndarray, alt_pred: np.ndarray) -> None:
        offset = task.allele.start - start
        first, last = score_bin_range(offset, self.score_bins, self.config.out_bins, self.crop_bp, self.config.bin_size)
        task.result = effects(ref_pred, alt_pred, first, last)

    def _plain(self, windows: List["_Window"], shared_refs: List[Optional[np.ndarray]]) -> None:
        """Full alternative windows through the engine (and the reference too, unless shared),
        all windows' rows in one call (the engine's outputs do not depend on the batch)."""
        L = self.seq_len
        rows_codes, rows_cons, plan = [], [], []
        for window, shared_ref in zip(windows, shared_refs):
            start, codes, cons = window.start, window.codes, window.cons
            ref_row = None
            for task in window.plain:
                a = task.allele
                offset = a.start - start
                ref_codes, ref_cons = codes, cons
                if task.use_vcf_ref:
                    ref_codes = codes.copy()
                    ref_codes[offset:offset + len(a.ref)] = encode_sequence(a.ref)
                alt_codes, alt_cons = build_alt(ref_codes, ref_cons, offset, len(a.ref), encode_sequence(a.alt), L)
                if task.use_vcf_ref or not self.fast:
                    # the plain path: its own reference pass, always
                    plan.append((task, start, None, len(rows_codes), len(rows_codes) + 1))
                    rows_codes += [ref_codes[:L], alt_codes]
                    rows_cons += [ref_cons[:L], alt_cons]
                else:
                    if shared_ref is None and ref_row is None:
                        ref_row = len(rows_codes)
                        rows_codes.append(codes[:L])
                        rows_cons.append(cons[:L])
                    plan.append((task, start, shared_ref, ref_row, len(rows_codes)))
                    rows_codes.append(alt_codes)
                    rows_cons.append(alt_cons)
        preds = self.engine.predict(np.stack(rows_codes), np.stack(rows_cons))
        for task, start, shared_ref, ref_i, alt_i in plan:
            a = task.allele
            ref_pred = shared_ref if ref_i is None else preds[ref_i]
            alt_pred = realign(preds[alt_i], a.start - start, len(a.ref), len(a.alt), L, self.crop_bp, self.config.bin_size)
            self._finish(task, start, ref_pred, alt_pred)

    def _fast_block(self, windows: List["_Window"]) -> List[Tuple[np.ndarray, List[np.ndarray]]]:
        """Per window (reference prediction, each substitution's prediction): the substitutions'
        ``z`` of all windows through the Transformer and head in batches of ``trunk_batch_rows``
        rows; views like the engine's. Equal to :meth:`_fast_substitutions` of each window within
        float rounding (see the module docstring). A window's reference runs alone
        (:meth:`IncrementalTower.finish`, a few % of the rows at 10 SNVs a window), so its
        prediction and ``ref_sum`` have the same bits whatever it was scored with (the null
        SNVs of a calibration share them exactly with the variants of their window)."""
        import torch

        from epiformer_cli.data.encoding import model_inputs
        from epiformer_cli.inference.lanes import checkpoint

        tower, L, cap = self._tower, self.seq_len, self._trunk_rows
        mode, dtype = self.config.conservation, tower.dtype
        # The block's rows in order: every window's reference, then per window its substitutions
        # grouped by width; a REF == ALT substitution (width 0) reads the reference row itself.
        layout = []
        n_rows = len(windows)
        for ref_row, w in enumerate(windows):
            by_width: Dict[int, List[int]] = {}
            for i, (_, _, alt) in enumerate(w.subs):
                by_width.setdefault(len(alt), []).append(i)
            sub_rows = [ref_row] * len(w.subs)
            for width, members in by_width.items():
                if width:
                    for i in members:
                        sub_rows[i], n_rows = n_rows, n_rows + 1
            layout.append((ref_row, sub_rows, by_width))

        def one_view(view) -> "torch.Tensor":
            """(rows, model tracks, out_bins) of the view; z waits in ``pending`` for a full batch."""
            refs: List[torch.Tensor] = []
            done: List[torch.Tensor] = []
            pending: List[torch.Tensor] = []

            def run(final: bool) -> None:
                if not pending:
                    return
                z = torch.cat(pending) if len(pending) > 1 else pending[0]
                pending.clear()
                while len(z) >= cap or (final and len(z)):
                    done.append(tower.finish_many(z[:cap]))
                    z = z[cap:]
                if len(z):
                    pending.append(z)

            for w, (_, _, by_width) in zip(windows, layout):
                checkpoint()  # in a lane: stop here when the run is interrupted
                t_cons = torch.from_numpy(np.ascontiguousarray(w.cons[:L], dtype=np.float32))[None]
                v_codes, v_cons = view.inputs(w.codes[:L], t_cons)
                state = tower.reference(model_inputs(torch.from_numpy(np.ascontiguousarray(v_codes))[None], v_cons,
                                                     mode, dtype=dtype), slot=self.engine.view_slot(view))
                refs.append(tower.finish(state.z))
                for width, members in by_width.items():
                    if not width:
                        continue
                    for k in range(0, len(members), cap):
                        part = members[k:k + cap]
                        offs = np.array([w.subs[i][1] for i in part], dtype=np.int64)
                        alts = np.stack([w.subs[i][2] for i in part])  # (V, width) codes
                        offs, alts = view.mirror(offs, width, alts, L)
                        col_cons = v_cons[0][torch.from_numpy(offs[:, None] + np.arange(width))]  # (V, width)
                        columns = model_inputs(torch.from_numpy(np.ascontiguousarray(alts)), col_cons, mode, dtype=dtype)
                        pending.append(tower.alternative_z_many(state, offs.tolist(), columns))
                        if sum(len(z) for z in pending) >= cap:
                            run(final=False)
                del state  # every stage's input of a window (full size: ~150 MB): never two at once
            run(final=True)
            return torch.cat(refs + done)

        # the views side by side in lanes for a small model (inference/lanes.py): one_view keeps
        # its state in its own slot and the model's buffers are per thread
        out = self.engine.average_views(one_view, parallel=True).cpu().numpy()
        return [(out[ref_row], [out[i] for i in sub_rows]) for ref_row, sub_rows, _ in layout]

    def _fast_substitutions(self, codes: np.ndarray, cons: np.ndarray,
                            subs: List[Tuple[int, np.ndarray]]) -> Tuple[np.ndarray, List[np.ndarray]]:
        """Reference once, then every substitution incrementally, one at a time through the
        Transformer (``batched=False``); RC view like the engine's."""
        import torch

        from epiformer_cli.data.encoding import model_inputs

        tower, L = self._tower, self.seq_len
        mode, dtype = self.config.conservation, tower.dtype
        t_cons = torch.from_numpy(np.ascontiguousarray(cons, dtype=np.float32))[None]
        by_width: Dict[int, List[int]] = {}
        for i, (_, alt) in enumerate(subs):
            by_width.setdefault(len(alt), []).append(i)

        def one_view(view) -> "torch.Tensor":
            """(1 + len(subs), model tracks, out_bins): the reference, then every substitution."""
            v_codes, v_cons = view.inputs(codes, t_cons)
            x = model_inputs(torch.from_numpy(np.ascontiguousarray(v_codes))[None], v_cons, mode, dtype=dtype)
            state = tower.reference(x)
            ref_y = tower.finish(state.z)
            alt_y = [None] * len(subs)
            for width, members in by_width.items():
                if width == 0:  # REF == ALT: nothing changes, the reference prediction is exact
                    for i in members:
                        alt_y[i] = ref_y
                    continue
                positions, columns = [], []
                for i in members:
                    off, alt = subs[i]
                    off, alt = view.mirror(off, width, alt, L)
                    positions.append(off)
                    col_cons = v_cons[:, off:off + width]
                    columns.append(model_inputs(torch.from_numpy(np.ascontiguousarray(alt))[None], col_cons, mode,
                                                dtype=dtype)[0])
                ys = tower.finish(tower.alternative_z(state, positions, torch.stack(columns)))
                for j, i in enumerate(members):
                    alt_y[i] = ys[j:j + 1]
            return torch.cat([ref_y] + alt_y)

        out = self.engine.average_views(one_view).cpu().numpy()
        return out[0], [out[i + 1] for i in range(len(subs))]


def _trim(offset: int, ref: np.ndarray, alt: np.ndarray) -> Tuple[int, np.ndarray]:
    """Drop the bases an equal-length REF and ALT share at either end: (new offset, changed ALT)."""
    diff = np.flatnonzero(ref != alt)
    if diff.size == 0:
        return offset, alt[:0]
    return offset + int(diff[0]), alt[diff[0]:diff[-1] + 1]


def status_summary(counts: Dict[str, int], flags: Dict[str, int]) -> str:
    """One line: ``1,234 alleles: ok 1,200, ref_mismatch 3, ...; flags: alias 40``."""
    total = sum(counts.values())
    parts = [f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", -kv[1]))]
    line = f"{total:,} alleles: " + (", ".join(parts) if parts else "none")
    if flags:
        line += "; flags: " + ", ".join(f"{k} {v:,}" for k, v in sorted(flags.items()))
    return line
