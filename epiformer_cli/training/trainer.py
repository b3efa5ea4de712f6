"""One training run as an object: the network, optimiser and schedule, the state a checkpoint keeps,
and the steps of the loop (train step, epoch, validation, best model, checkpoint, test).

Every random choice derives from the seed and the step (dropout) or from (seed, epoch, window)
(order, augmentation), so the same seed gives the same run on the CPU whatever the number of data
workers, and a resumed run finishes with the weights the uninterrupted run would have had.

A notebook can drive it step by step (the run folder must exist)::

    store = TrainingStore("data/")
    with Trainer(store, resolve_config(store, "tiny", None), TrainOptions(epochs=2), out=Path("run")) as trainer:
        trainer.run_epoch()
        trainer.evaluate(trainer.valid_set)["pearson"]

(``resolve_config`` from :mod:`epiformer_cli.jobs.train`, ``TrainOptions`` from
:mod:`epiformer_cli.options`); :func:`epiformer_cli.jobs.train.train_model` is the whole job.
Fine-tuning passes ``init=InitModel.read("model.pt")`` and the config ``resolve_config`` makes of it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from epiformer_cli import __version__
from epiformer_cli.data.dataset import Augment, TrainBatchSampler, WindowDataset
from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.device import autocast
from epiformer_cli.errors import EpiformerError, InputFileError, UsageError
from epiformer_cli.model.families import build_network
from epiformer_cli.progress import Progress, silent
from epiformer_cli.training import distributed as D
from epiformer_cli.training import metrics_file
from epiformer_cli.training.checkpoint import CHECKPOINT_FORMAT, atomic_save, rng_state, set_rng_state
from epiformer_cli.training.loaders import default_workers, eval_loader, train_loader
from epiformer_cli.training.losses import get_loss
from epiformer_cli.training.metrics import PearsonAccumulator
from epiformer_cli.training.plots import plot_learning_curve
from epiformer_cli.training.schedule import lr_factor

if TYPE_CHECKING:  # pragma: no cover - typing only
    from epiformer_cli.data.training_store import TrainingStore
    from epiformer_cli.options import TrainOptions
    from epiformer_cli.model.config import ModelConfig

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10

#: the final per-track layer of the head in both families (``Head.out``, ``PublishedHead.out``):
#: row ``i`` of each is track ``i``. Every other weight and buffer is the body.
OUTPUT_LAYER = ("head.out.weight", "head.out.bias")



@dataclass
class InitModel:
    """A model file to fine-tune (``train --init``): its identity, architecture, tracks and weights.

    Attributes:
        path: the file; sha256: its whole-file SHA-256 (which file the run started from).
        config: its :class:`ModelConfig`: the run's architecture, with the store's track count.
        tracks: its track names, in output order.
        state: its weights and buffers (CPU tensors).
    """

    path: Path
    sha256: str
    config: "ModelConfig"
    tracks: List[str]
    state: Dict[str, torch.Tensor]

    @classmethod
    def read(cls, path: str | Path) -> "InitModel":
        """Read a model file the way every command does (:func:`~epiformer_cli.model.modelfile.load_model`:
        plain data only, no code runs, every weight checked against its config)."""
        from epiformer_cli.io.identity import sha256_file
        from epiformer_cli.model.modelfile import load_model

        path = Path(path)
        loaded = load_model(path)
        return cls(path=path, sha256=sha256_file(path), config=loaded.config, tracks=list(loaded.tracks),
                   state=loaded.model.state_dict())


def warm_start(model: torch.nn.Module, init: InitModel, tracks: Sequence[str]) -> Dict[str, List[str]]:
    """Load ``init``'s weights into ``model``, a network of ``init``'s architecture built for ``tracks``.

    The body is ``init``'s. Of the final per-track layer (:data:`OUTPUT_LAYER`), a track that
    ``init`` has by the same name gets ``init``'s row (weights and bias); any other track keeps
    ``model``'s own row, the layer's default initialisation (seeded by the training seed).

    Returns:
        ``{"tracks_kept": [...], "tracks_new": [...]}``, each in ``tracks`` order.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update({k: v for k, v in init.state.items() if k not in OUTPUT_LAYER})
    kept = [t for t in tracks if t in init.tracks]
    for i, track in enumerate(tracks):
        if track in init.tracks:
            j = init.tracks.index(track)
            for key in OUTPUT_LAYER:
                state[key][i] = init.state[key][j]
    model.load_state_dict(state, strict=True)
    return {"tracks_kept": kept, "tracks_new": [t for t in tracks if t not in kept]}


@dataclass
class TrainSummary:
    """What a training run produced (returned on every rank).

    Attributes:
        out: the run folder.
        steps: optimizer steps done in all; epochs_done: the same in epochs (may be fractional).
        best_pearson, best_step: the best validation Pearson (mean over tracks) and its step.
        test: ``{"loss", "pearson"}`` of the best model on the test windows ({} when not tested).
        seconds: training time over every session of the run (validation excluded).
        rows: the rows of ``metrics.tsv`` (``split`` ``valid``, then ``test`` when tested).
        rank: the process that returned it (under torchrun; 0 alone): only rank 0 reports the run.
    """

    out: Path
    steps: int
    epochs_done: float
    best_pearson: float
    best_step: int
    test: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    rows: List[Dict[str, Any]] = field(default_factory=list)
    rank: int = 0


def run_length(epochs: Optional[int], max_steps: Optional[int], steps_per_epoch: int) -> Tuple[int, int]:
    """``(total_steps, stop_step)``: the optimizer steps the learning-rate schedule spans, and the
    step to stop at (``max_steps`` may stop a run of ``epochs`` early; a resumed run continues)."""
    if epochs is not None:
        total = epochs * steps_per_epoch
        return total, (min(total, max_steps) if max_steps else total)
    if max_steps is not None:
        return max_steps, max_steps
    return DEFAULT_EPOCHS * steps_per_epoch, DEFAULT_EPOCHS * steps_per_epoch


def derived_seed(*keys: int) -> int:
    """A 32-bit seed that is a pure function of ``keys``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class Trainer:
    """A training run of ``cfg``'s network on ``store`` with ``options``, writing into ``out``.

    Building it makes the datasets, loaders, network (seeded by ``options.seed``), AdamW, the
    gradient scaler (fp16 only) and, under torchrun, the DDP wrapper; the process group must be up.

    State (what ``last.pt`` keeps and :meth:`resume_from` restores): ``step`` (optimizer steps
    done), ``epoch`` (0-based, the one in progress) and ``step_in_epoch``; ``best`` (``pearson``,
    ``step``, ``epoch``, ``metrics`` of the best validation) and ``best_state`` (its weights, on the
    CPU); ``acc`` (training loss sum and count, windows and seconds since the last validation);
    ``seconds`` (training time of the run); ``rows`` (the validation rows of ``metrics.tsv``).

    Args:
        store: the prepared store; cfg: the model config (``seq_len`` = the store's windows).
        options: checked :class:`~epiformer_cli.options.TrainOptions`.
        out: the run folder (must exist; only rank 0 writes).
        env: this process's place under torchrun (one process by default).
        device: where to compute (the CPU by default), already checked against the precision.
        command: the command line, recorded in the model's provenance.
        progress: an :class:`~epiformer_cli.progress.Progress`, called on rank 0 in optimizer
            steps: once with the steps already done and ``total`` (the run's last step), then
            ``progress(1, loss=..., r=..., windows_per_s=...)`` after each step (``r``: the last
            validation Pearson).
        init: the model to fine-tune (:func:`warm_start`); ``cfg`` must be its config with the
            store's track count. Its name, SHA-256 and the tracks kept and new are recorded as
            ``init`` in ``model.pt``'s provenance, ``last.pt`` and ``config.json``.

    Raises:
        InputFileError: no validation windows; UsageError: fewer windows than one global batch,
        or ``cfg`` is not ``init``'s architecture.
    """

    def __init__(self, store: "TrainingStore", cfg: "ModelConfig", options: "TrainOptions", *, out: Path,
                 env: D.DistEnv = D.DistEnv(), device: Optional[torch.device] = None,
                 command: Optional[str] = None, progress: Optional[Progress] = None,
                 init: Optional[InitModel] = None) -> None:
        self.store, self.cfg, self.options, self.out, self.env = store, cfg, options, Path(out), env
        self.device = device if device is not None else torch.device("cpu")
        self.command = command
        self.emit: Progress = progress if (progress is not None and env.is_main) else silent
        self.last_r = float("nan")  # the last validation Pearson, shown beside the bar
        self.tracks: List[str] = list(store.tracks)
        self._build_data()
        self.init_record: Optional[Dict[str, Any]] = None
        self._build_model(init)
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.best: Dict[str, Any] = {"pearson": -math.inf, "step": -1, "epoch": -1, "metrics": None}
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.acc: Dict[str, Any] = _fresh_acc()
        self.seconds = 0.0
        self.rows: List[Dict[str, Any]] = []

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def close(self) -> None:
        """Stop the training loader's worker processes (they live from epoch to epoch); the
        trainer cannot train after this.

        Dropping the loader stops them at once. Left to the garbage collector, they could outlive
        the run: frames held in a reference cycle (torch builds one when it first imports its
        compiler, in the optimizer) kept the loader to the interpreter's exit, where multiprocessing
        stops workers with SIGTERM, which they ignore, and waits for them: the process hung.
        """
        self.train_loader = None

    # -- building ----------------------------------------------------------------------------------
    def _build_data(self) -> None:
        o, env, store, crop = self.options, self.env, self.store, self.cfg.crop_bins
        self.train_set = WindowDataset(store, "train", crop, Augment(o.rc_prob, o.max_shift), seed=o.seed)
        self.valid_set = WindowDataset(store, "valid", crop)
        self.test_set = WindowDataset(store, "test", crop)
        if len(self.valid_set) == 0:
            raise InputFileError(f"{store.root}: the store has no validation windows: prepare it with --valid-chroms")
        self.sampler = TrainBatchSampler(len(self.train_set), o.batch_size, o.accumulate, env.rank, env.world_size,
                                         o.seed)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"{store.root} has {len(self.train_set)} training windows, fewer than one global batch of "
                f"{self.sampler.global_batch} (batch size x accumulate x processes): lower --batch-size or "
                "--accumulate, or prepare with a smaller --step"
            )
        self.total_steps, self.stop_step = run_length(o.epochs, o.max_steps, self.steps_per_epoch)
        self.workers = default_workers() if o.workers is None else o.workers
        self.train_loader = train_loader(self.train_set, self.sampler, self.workers, pin_memory=self.cuda)

    def _build_model(self, init: Optional[InitModel] = None) -> None:
        o = self.options
        torch.manual_seed(o.seed)  # the initial weights (with --init: those of the new tracks)
        self.core = build_network(self.cfg).to(self.device)
        if init is not None:
            self._warm_start(init)
        decay, no_decay = [], []
        for name, p in self.core.named_parameters():
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=o.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(o.precision == "fp16"))
        self.model: torch.nn.Module = self.core
        if self.env.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            if self.cuda:
                self.core = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.core)
            self.model = DDP(self.core, device_ids=[self.device.index] if self.cuda else None)
        self.loss_fn = get_loss(o.loss)

    def _warm_start(self, init: InitModel) -> None:
        if self.cfg.replace(n_tracks=init.config.n_tracks) != init.config:
            raise UsageError(f"the model config is not the architecture of --init {init.path}: "
                             "take it from resolve_config(store, init=...)")
        report = warm_start(self.core, init, self.tracks)
        self.init_record = {"name": init.path.name, "sha256": init.sha256, **report}
        if self.env.is_main:
            kept, new = report["tracks_kept"], report["tracks_new"]
            log.info("--init %s: %d track(s) carried over%s, %d new%s", init.path.name, len(kept),
                     f" ({_some(kept)})" if kept else "", len(new), f" ({_some(new)})" if new else "")

    # -- resuming and checkpoints ------------------------------------------------------------------
    def resume_from(self, checkpoint: Dict[str, Any]) -> None:
        """Continue the run saved in ``checkpoint`` (a loaded ``last.pt``): weights, optimiser, scaler,
        RNG states, counters, best model, and the validation rows of ``metrics.tsv`` up to its step."""
        self.core.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        self.step, self.epoch, self.step_in_epoch = (int(checkpoint[k]) for k in ("step", "epoch", "step_in_epoch"))
        self.best = dict(checkpoint["best"])
        self.best_state = checkpoint.get("best_model")
        self.acc = dict(checkpoint["acc"])
        self.seconds = float(checkpoint["seconds"])
        # a test row, and rows past the checkpoint (validated, then killed before the checkpoint), go
        self.rows = [r for r in metrics_file.read_rows(self.out / "metrics.tsv")
                     if r["split"] == "valid" and int(r["step"]) <= self.step]
        if self.env.is_main:
            log.info("resuming %s at step %d (epoch %d, step %d of it)", self.out, self.step, self.epoch + 1,
                     self.step_in_epoch)

    def checkpoint(self) -> None:
        """Write ``last.pt`` (rank 0): everything :meth:`resume_from` needs to continue exactly."""
        if not self.env.is_main:
            return
        o = self.options
        atomic_save({
            "format_version": CHECKPOINT_FORMAT,
            "model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "scheduler": {"kind": "warmup-cosine", "peak_lr": o.lr, "warmup_steps": o.warmup_steps,
                          "total_steps": self.total_steps, "min_ratio": o.min_lr_ratio, "step": self.step},
            "rng": rng_state(), "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "best": self.best, "best_model": self.best_state, "acc": self.acc, "seconds": self.seconds,
            "options": o.to_dict(), "config": self.cfg.to_dict(), "world_size": self.env.world_size,
            "init": self.init_record,
        }, self.out / "last.pt")

    def save_best(self, metrics: Dict[str, Any]) -> None:
        """Keep the current weights as the best: on the CPU on every rank (for the test and
        ``last.pt``), and as ``model.pt`` with its provenance (rank 0)."""
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.core.state_dict().items()}
        if not self.env.is_main:
            return
        from epiformer_cli.model.modelfile import save_model

        o = self.options
        provenance = {
            "store": str(self.store.root.resolve()), "store_fingerprint": self.store.manifest.get("fingerprint"),
            "command": self.command, "options": o.to_dict(), "seed": o.seed, "epoch": self.epoch_label(),
            "step": self.step, "metrics": metrics, "tool": f"epiformer {__version__}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "world_size": self.env.world_size,
        }
        if self.init_record is not None:
            provenance["init"] = self.init_record
        save_model(self.out / "model.pt", self.core, self.cfg, self.tracks, self.store.manifest.get("normalization"),
                   provenance)

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainSummary:
        """Train from the current step to the stop step, then test the best model; the run's summary."""
        self._announce()
        self.emit(self.step, total=self.stop_step)
        self.model.train()
        while self.step < self.stop_step:
            self.run_epoch()
        self._check_in_sync()
        test_row = self.test()
        if self.env.is_main:
            plot_learning_curve(self.rows + ([test_row] if test_row else []), self.out / "learning_curve.png",
                                loss=self.options.loss)
        summary = TrainSummary(
            out=self.out, steps=self.step, epochs_done=self.step / self.steps_per_epoch,
            best_pearson=self.best["pearson"], best_step=self.best["step"],
            test={"loss": test_row["loss"], "pearson": test_row["pearson"]} if test_row else {},
            seconds=self.seconds, rows=self.rows + ([test_row] if test_row else []), rank=self.env.rank,
        )
        return summary

    def run_epoch(self) -> None:
        """Train from the current step to the end of this epoch (or the stop step): validate at the
        epoch's end and at the stop step; write ``last.pt`` then, and every ``checkpoint_every`` steps."""
        every = self.options.checkpoint_every
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        batches = iter(self.train_loader)
        while self.step < self.stop_step and self.step_in_epoch < self.steps_per_epoch:
            self.train_step(batches)
            at_epoch_end = self.step_in_epoch == self.steps_per_epoch
            if at_epoch_end or self.step == self.stop_step:
                self.validate()
            if at_epoch_end:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
            if at_epoch_end or self.step == self.stop_step or (every and self.step % every == 0):
                self.checkpoint()
            if at_epoch_end:
                break
        del batches

    def train_step(self, batches: Iterator[Dict[str, torch.Tensor]]) -> float:
        """One optimizer step on ``accumulate`` micro-batches taken from ``batches``; returns its
        loss (the sum of the micro-batches' losses, each divided by ``accumulate``).

        Raises:
            EpiformerError: the loss is not finite (too high a learning rate for the precision, or
                data that make it so): exit code 1, a problem of the run, not of the command line.
        """
        o = self.options
        started = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = o.lr * lr_factor(self.step, o.warmup_steps, self.total_steps, o.min_lr_ratio)
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for a in range(o.accumulate):
            step_loss += self._micro_step(next(batches), a)
        if o.clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.core.parameters(), o.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not math.isfinite(step_loss):
            fp32 = "" if o.precision == "fp32" else " or use --precision fp32"
            raise EpiformerError(f"the training loss became {step_loss} at step {self.step}: lower --lr (now {o.lr:g})"
                                 f"{fp32}")
        self.step += 1
        self.step_in_epoch += 1
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.acc["loss_sum"] += step_loss
        self.acc["loss_n"] += 1
        self.acc["windows"] += self.sampler.batch_size * o.accumulate
        self.acc["seconds"] += elapsed
        self.emit(1, loss=step_loss, r=self.last_r, windows_per_s=self.sampler.global_batch / max(elapsed, 1e-9))
        return step_loss

    def _micro_step(self, batch: Dict[str, torch.Tensor], a: int) -> float:
        """Forward and backward on micro-batch ``a`` of this step; its loss / ``accumulate``."""
        o = self.options
        # dropout masks depend only on (seed, step, chunk): same on resume and at any world size
        torch.manual_seed(derived_seed(o.seed, self.step, self.env.rank * o.accumulate + a))
        codes, cons, targets = (batch[k].to(self.device, non_blocking=self.cuda) for k in ("codes", "cons", "targets"))
        # gradients are all-reduced once per step, on its last micro-batch
        sync = self.env.enabled and a < o.accumulate - 1
        with (self.model.no_sync() if sync else contextlib.nullcontext()):
            with autocast(self.device, o.precision):
                pred = self.model(model_inputs(codes, cons, self.cfg.conservation))
            loss = self.loss_fn(pred.float(), targets) / o.accumulate
            self.scaler.scale(loss).backward()
        return float(loss.detach())

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, dataset: WindowDataset) -> Dict[str, Any]:
        """The current weights' scores on ``dataset`` (eval mode, no augmentation; over all processes):
        ``{"loss": Poisson loss per bin, "pearson": mean r of log(x+1) over tracks,
        "pearson_by_track": {track: r}}``. Leaves the network in training mode."""
        D.average_buffers(self.core, self.env)
        self.core.eval()
        acc = PearsonAccumulator(len(self.tracks))
        loader = eval_loader(dataset, self.options.batch_size, self.env, self.workers, pin_memory=self.cuda)
        with torch.no_grad():
            for batch in loader:
                x = model_inputs(batch["codes"].to(self.device, non_blocking=self.cuda),
                                 batch["cons"].to(self.device, non_blocking=self.cuda), self.cfg.conservation)
                with autocast(self.device, self.options.precision):
                    pred = self.core(x)
                acc.update(pred.float(), batch["targets"])
        acc.stats = D.all_reduce_sum(acc.stats, self.env, self.device)
        self.core.train()
        return acc.summary(self.tracks)

    def validate(self) -> Dict[str, Any]:
        """Score the validation windows, add their row to ``metrics.tsv`` (with the training loss
        and throughput since the last validation) and keep the model if it is the best; the row."""
        metrics = self.evaluate(self.valid_set)
        totals = D.all_reduce_sum(torch.tensor([self.acc["loss_sum"], self.acc["loss_n"], self.acc["windows"]],
                                               dtype=torch.float64), self.env, self.device)
        train_loss = float(totals[0] / max(totals[1], 1))
        row = {"split": "valid", "epoch": self.epoch_label(), "step": self.step, "train_loss": train_loss,
               **_scores(metrics), "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(self.seconds, 1),
               "windows_per_s": round(float(totals[2]) / max(self.acc["seconds"], 1e-9), 2)}
        self.rows.append(row)
        self.acc = _fresh_acc()
        if metrics["pearson"] > self.best["pearson"]:
            self.best = {"pearson": metrics["pearson"], "step": self.step, "epoch": row["epoch"], "metrics": metrics}
            self.save_best(metrics)
        if self.env.is_main:
            metrics_file.write_rows(self.out / "metrics.tsv", self.rows, self.tracks)
            log.info("epoch %s step %d: train loss %.4f, valid loss %.4f, valid Pearson %.3f (best %.3f at step %d)",
                     row["epoch"], self.step, train_loss, metrics["loss"], metrics["pearson"], self.best["pearson"],
                     self.best["step"])
        self.last_r = float(row["pearson"])
        return row

    def test(self) -> Dict[str, Any]:
        """At the end of a complete run, load the best weights, score the test windows and add the
        ``test`` row to ``metrics.tsv`` (with the best model's epoch and step); returns the row, or
        {} when there is nothing to test (no test windows, no validation yet, a run stopped early)."""
        if not (len(self.test_set) and self.best_state is not None and self.stop_step >= self.total_steps):
            return {}
        self.core.load_state_dict(self.best_state)
        metrics = self.evaluate(self.test_set)
        row = {"split": "test", "epoch": self.best["epoch"], "step": self.best["step"], "train_loss": "",
               **_scores(metrics), "lr": "", "seconds": round(self.seconds, 1), "windows_per_s": ""}
        if self.env.is_main:
            metrics_file.write_rows(self.out / "metrics.tsv", self.rows + [row], self.tracks)
            log.info("test (best model, step %d): loss %.4f, Pearson %.3f", self.best["step"], metrics["loss"],
                     metrics["pearson"])
        return row

    def epoch_label(self) -> float:
        """Epochs done, as a row's ``epoch``: a whole number at an epoch's end, else a fraction."""
        if self.step_in_epoch in (0, self.steps_per_epoch):
            return self.epoch + (self.step_in_epoch == self.steps_per_epoch)
        return round(self.epoch + self.step_in_epoch / self.steps_per_epoch, 4)

    # -- run-level records -------------------------------------------------------------------------
    def _announce(self) -> None:
        """Write ``config.json`` (the resolved model and training settings) and log the plan (rank 0)."""
        if not self.env.is_main:
            return
        from epiformer_cli.io.files import atomic_write_text

        resolved = {"model": self.cfg.to_dict(), "training": self.options.to_dict(),
                    "store": str(self.store.root.resolve()),
                    "store_fingerprint": self.store.manifest.get("fingerprint"),
                    "tracks": self.tracks, "world_size": self.env.world_size,
                    "global_batch": self.sampler.global_batch, "steps_per_epoch": self.steps_per_epoch,
                    "total_steps": self.total_steps, "workers": self.workers, "device": str(self.device),
                    "command": self.command, "tool": f"epiformer {__version__}"}
        if self.init_record is not None:
            resolved["init"] = self.init_record
        atomic_write_text(self.out / "config.json", json.dumps(resolved, indent=2) + "\n")
        log.info("training %s on %d windows (valid %d, test %d), %d steps of %d windows, %d per epoch, on %s%s",
                 ", ".join(self.tracks), len(self.train_set), len(self.valid_set), len(self.test_set),
                 self.total_steps, self.sampler.global_batch, self.steps_per_epoch, self.device,
                 f" x {self.env.world_size} processes" if self.env.enabled else "")

    def _check_in_sync(self) -> None:
        """Under DDP, check that every process ended with the same weights."""
        if not self.env.enabled:
            return
        if not D.weights_in_sync(self.core, self.env):
            raise RuntimeError("the processes ended with different weights (DDP out of sync)")
        if self.env.is_main:
            log.info("weights identical on all %d processes", self.env.world_size)


def _scores(metrics: Dict[str, Any]) -> Dict[str, float]:
    """An evaluation's columns of a metrics row: loss, pearson, pearson_<track>."""
    return {"loss": metrics["loss"], "pearson": metrics["pearson"],
            **{f"pearson_{t}": r for t, r in metrics["pearson_by_track"].items()}}


def _some(names: Sequence[str], limit: int = 6) -> str:
    """``a, b, c`` or, past ``limit`` names, ``a, b, c, d, e, f and 12 more``."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _fresh_acc() -> Dict[str, Any]:
    return {"loss_sum": 0.0, "loss_n": 0, "windows": 0, "seconds": 0.0}


