"""``train``: fit an Epiformer on a prepared store, on a CPU, one GPU, or many processes (torchrun).

Writes into the run folder ``RUN/``:

* ``model.pt``: the best model so far by validation Pearson (:func:`~epiformer_cli.model.modelfile.save_model`);
* ``last.pt``: the true last training state (weights, optimizer, RNG, counters) for ``--resume``;
* ``metrics.tsv``: one row per validation plus a final ``test`` row; ``config.json``: the resolved
  model config and training options; ``learning_curve.png``.

Every random choice derives from the seed and the step (dropout) or from (seed, epoch, window)
(order, augmentation), so the same seed gives the same run on the CPU whatever the number of data
workers, and a resumed run finishes with the weights the uninterrupted run would have had.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.files import check_output_dir

log = logging.getLogger(__name__)

#: files a run folder holds; --force removes exactly these.
RUN_FILES = ("model.pt", "last.pt", "metrics.tsv", "config.json", "learning_curve.png")
DEFAULT_EPOCHS = 10

#: options that change the arithmetic of training: a resumed run must keep them.
_FIXED_ON_RESUME = ("batch_size", "accumulate", "lr", "weight_decay", "warmup_steps", "clip_norm", "seed",
                    "loss", "rc_prob", "max_shift", "min_lr_ratio")

Progress = Callable[..., None]


@dataclass
class TrainOptions:
    """How to train (not the network's shape, which :class:`ModelConfig` holds).

    Attributes:
        epochs: passes over the training windows; the learning-rate schedule spans them.
        max_steps: stop after this many optimizer steps in total (the schedule spans ``epochs``
            when given, else ``max_steps``). Neither given: 10 epochs.
        batch_size: windows per micro-batch on each process.
        accumulate: micro-batches per optimizer step (global batch = batch_size * accumulate * processes).
        lr: peak learning rate of AdamW; weight_decay: its decoupled weight decay.
        warmup_steps: linear warm-up steps before the cosine decay (to ``min_lr_ratio * lr``).
        clip_norm: gradient-norm clipping threshold (0 = off).
        loss: ``poisson`` or ``poisson-multinomial``.
        rc_prob, max_shift: augmentation (reverse-complement probability, shift range in bp).
        seed: seeds initialisation, order, augmentation and dropout.
        checkpoint_every: also write ``last.pt`` every this many steps (default: each epoch end).
        workers: DataLoader worker processes (None: min(4, cpus - 1), 0 with one cpu).
        device, precision: where and in what precision to compute.
    """

    epochs: Optional[int] = None
    max_steps: Optional[int] = None
    batch_size: int = 8
    accumulate: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    clip_norm: float = 5.0
    min_lr_ratio: float = 0.05
    loss: str = "poisson"
    rc_prob: float = 0.5
    max_shift: int = 3
    seed: int = 0
    checkpoint_every: Optional[int] = None
    workers: Optional[int] = None
    device: str = "auto"
    precision: str = "fp32"

    def check(self) -> None:
        from epiformer_cli.device import check_precision
        from epiformer_cli.training.losses import LOSSES

        problems = []
        for name in ("epochs", "max_steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in ("batch_size", "accumulate"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.clip_norm < 0:
            problems.append("--weight-decay, --warmup-steps and the clip norm must not be negative")
        if self.workers is not None and self.workers < 0:
            problems.append(f"--workers must be 0 or more, got {self.workers}")
        if self.loss not in LOSSES:
            problems.append(f"--loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if not 0 <= self.rc_prob <= 1 or self.max_shift < 0:
            problems.append("rc_prob must be in [0, 1] and max_shift >= 0")
        if problems:
            raise UsageError("; ".join(problems))
        self.precision = check_precision(self.precision)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainSummary:
    """What a training run produced (returned by :func:`train_model` on every rank)."""

    out: Path
    steps: int
    epochs_done: float
    best_pearson: float
    best_step: int
    test: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    rows: List[Dict[str, Any]] = field(default_factory=list)


def default_workers() -> int:
    """min(4, cpus - 1), or 0 on a single cpu (loading then runs in the training process)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 1 else min(4, cpus - 1)


def _worker_leaves_signals_to_main(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM; the training process stops them in order.

    Ctrl-C, ``scancel`` or ``kill -- -PGID`` signal every process of the group. A worker killed
    by SIGTERM (torch's own handler in workers re-raises it) made torch raise "DataLoader worker
    ... is killed by signal" in the main process, over or instead of its clean exit 143. A worker
    whose main process dies anyway still exits by itself (torch's watchdog).
    """
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = _quiet_broken_handover


def _quiet_broken_handover(kind, value, tb) -> None:
    """A worker's excepthook: a main process stopped while it fetched a batch leaves the thread
    that hands the batch's shared memory over with a broken connection: expected, not a traceback."""
    import multiprocessing
    import sys

    if issubclass(kind, (EOFError, ConnectionError, multiprocessing.AuthenticationError)):
        return
    sys.__excepthook__(kind, value, tb)


def _derived_seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def resolve_config(store, preset_name: Optional[str], config_path: Optional[Path]):
    """The model config: a preset or a JSON file, with ``n_tracks`` taken from the store and
    ``seq_len`` checked against the store's windows."""
    from epiformer_cli.model.config import load_config, preset

    if preset_name and config_path:
        raise UsageError("give --preset or --config, not both")
    if config_path:
        cfg = load_config(config_path)
        source = f"--config {config_path}"
    else:
        cfg = preset(preset_name or "tiny")
        source = f"--preset {preset_name or 'tiny'}"
    if cfg.seq_len != store.window_bp:
        from epiformer_cli.model.config import PRESETS

        fitting = [name for name, p in PRESETS.items() if p.seq_len == store.window_bp]
        hint = f" (the {fitting[0]} preset's length)" if fitting else ""
        raise UsageError(
            f"{source} takes {cfg.seq_len} bp windows but the store {store.root} holds {store.window_bp} bp "
            f"windows{hint}: re-run `epiformer prepare` with --preset X or --window {cfg.seq_len}, "
            f"or pick a model of {store.window_bp} bp"
        )
    if cfg.n_tracks != len(store.tracks):
        cfg = cfg.replace(n_tracks=len(store.tracks))
    return cfg


def _prepare_run_dir(out: Path, resume: bool, force: bool, write: bool = True) -> None:
    """Refuse a folder holding another run (unless resume/force); with ``write``, create it and
    remove the old run's files (--force). Every rank checks, so all of them stop on a refusal."""
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "last.pt").exists():
            raise UsageError(f"--resume: {out} holds no last.pt to continue from: drop --resume to start a new run")
        return
    if existing and not force:
        raise UsageError(
            f"{out} already holds a run ({', '.join(existing)}): continue it with --resume, "
            "overwrite it with --force, or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: choose a folder")
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in existing:
        (out / name).unlink()


def _read_rows(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _write_rows(path: Path, rows: List[Dict[str, Any]], columns: List[str]) -> None:
    from epiformer_cli.io.files import atomic_write_text

    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(_fmt(row.get(c, "")) for c in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def train_model(
    *,
    data: Path,
    out: Path,
    preset: Optional[str] = None,
    config: Optional[Path] = None,
    options: Optional[TrainOptions] = None,
    resume: bool = False,
    force: bool = False,
    command: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> TrainSummary:
    """Train an Epiformer on the store ``data``, writing the run into ``out``.

    Args:
        data: a store made by ``prepare`` (windows of the model's ``seq_len``).
        out: the run folder (refused if it holds another run, unless ``resume`` or ``force``).
        preset / config: the model: a preset name (default ``tiny``) or a JSON config file.
            ``n_tracks`` comes from the store.
        options: :class:`TrainOptions`; on ``resume`` the options that change the arithmetic
            (batch, lr, seed, ...) must equal the saved ones; ``None`` fields take the saved values.
        resume: continue the run in ``out`` from its ``last.pt``.
        force: overwrite a run in ``out``.
        command: the command line, recorded in the model's provenance.
        progress: called on rank 0 as ``progress(event, **info)``: ``start`` (total_steps,
            steps_per_epoch, start_step), ``step`` (step, loss, lr, windows_per_s), ``valid``
            (row: the metrics row), ``test`` (row), ``done`` (summary).

    Raises:
        UsageError / InputFileError for options or files that cannot work.
    """
    import torch

    from epiformer_cli.data.training_store import TrainingStore
    from epiformer_cli.device import resolve_device
    from epiformer_cli.training import distributed as D

    out = Path(out)
    env = D.env_from_launcher()
    options = copy.deepcopy(options) if options is not None else TrainOptions()

    store = TrainingStore(data)
    saved = None
    if resume:
        if not (out / "last.pt").exists():
            raise UsageError(f"--resume: {out} holds no last.pt to continue from: drop --resume to start a new run")
        from epiformer_cli.training.checkpoint import load_checkpoint

        saved = load_checkpoint(out / "last.pt")
        options = _merge_resumed_options(options, saved["options"])
    options.check()
    check_output_dir(out, inputs=[data, config])

    if resume:
        from epiformer_cli.model.config import ModelConfig

        if preset or config:
            log.info("--resume: the model config is the run's own (config.json); --preset/--config ignored")
        cfg = ModelConfig.from_dict(saved["config"])
        if cfg.seq_len != store.window_bp or cfg.n_tracks != len(store.tracks):
            raise UsageError(f"--resume: the store {data} does not match the run in {out} (window or tracks differ)")
        if saved["world_size"] != env.world_size:
            raise UsageError(
                f"--resume: the run used {saved['world_size']} process(es), this launch has {env.world_size}: "
                "resume with the same number of processes"
            )
    else:
        cfg = resolve_config(store, preset, config)

    device = resolve_device(options.device if not env.enabled or options.device != "auto" else "auto")
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    if options.precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA GPU: use bf16 (or fp32) on the CPU")
    # only now, with every option checked: a refused run leaves no run folder behind
    _prepare_run_dir(out, resume, force, write=env.is_main)
    D.init(env, device)
    try:
        return _train(store=store, data=Path(data), out=out, cfg=cfg, options=options, saved=saved,
                      env=env, device=device, command=command, progress=progress)
    finally:
        D.shutdown(env)


def _merge_resumed_options(given: TrainOptions, saved_dict: Dict[str, Any]) -> TrainOptions:
    saved = TrainOptions(**saved_dict)
    defaults = TrainOptions()
    differing = []
    for name in _FIXED_ON_RESUME:
        value = getattr(given, name)
        # an option left at its default means "as before"; an explicit different value is an error
        if value != getattr(saved, name) and value != getattr(defaults, name):
            differing.append(f"{name} (run: {getattr(saved, name)}, given: {value})")
        setattr(given, name, getattr(saved, name))
    if differing:
        raise UsageError(
            "--resume continues a run with its own settings; these differ: " + ", ".join(differing)
            + ": drop them, or start a new run with --force"
        )
    if given.epochs is None and given.max_steps is None:
        given.epochs, given.max_steps = saved.epochs, saved.max_steps
    return given


def _train(*, store, data: Path, out: Path, cfg, options: TrainOptions, saved, env, device, command, progress):
    import torch
    from torch.utils.data import DataLoader

    from epiformer_cli.data.dataset import Augment, ShardSampler, TrainBatchSampler, WindowDataset
    from epiformer_cli.data.encoding import model_inputs
    from epiformer_cli.device import autocast
    from epiformer_cli.model.network import Epiformer
    from epiformer_cli.training import distributed as D
    from epiformer_cli.training.checkpoint import CHECKPOINT_FORMAT, atomic_save, rng_state, set_rng_state
    from epiformer_cli.training.losses import get_loss
    from epiformer_cli.training.metrics import PearsonAccumulator
    from epiformer_cli.training.plots import plot_learning_curve
    from epiformer_cli.training.schedule import lr_factor

    main = env.is_main
    emit = progress if (progress is not None and main) else (lambda *a, **k: None)
    tracks = list(store.tracks)
    o = options

    # -- data --------------------------------------------------------------------------------
    train_set = WindowDataset(store, "train", cfg.crop_bins, Augment(o.rc_prob, o.max_shift), seed=o.seed)
    valid_set = WindowDataset(store, "valid", cfg.crop_bins)
    test_set = WindowDataset(store, "test", cfg.crop_bins)
    if len(valid_set) == 0:
        raise InputFileError(f"{data}: the store has no validation windows: prepare it with --valid-chroms")
    sampler = TrainBatchSampler(len(train_set), o.batch_size, o.accumulate, env.rank, env.world_size, o.seed)
    steps_per_epoch = sampler.steps_per_epoch
    if steps_per_epoch == 0:
        raise UsageError(
            f"{data} has {len(train_set)} training windows, fewer than one global batch of {sampler.global_batch} "
            "(batch size x accumulate x processes): lower --batch-size or --accumulate, or prepare with a smaller --step"
        )
    if o.epochs is not None:
        total_steps = o.epochs * steps_per_epoch
        stop_step = min(total_steps, o.max_steps) if o.max_steps else total_steps
    elif o.max_steps is not None:
        total_steps = stop_step = o.max_steps
    else:
        total_steps = stop_step = DEFAULT_EPOCHS * steps_per_epoch
    workers = default_workers() if o.workers is None else o.workers
    cuda = device.type == "cuda"
    loader_args = dict(num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    if workers > 0:
        loader_args["prefetch_factor"] = 4
        loader_args["worker_init_fn"] = _worker_leaves_signals_to_main
    train_loader = DataLoader(train_set, batch_sampler=sampler, **loader_args)

    def eval_loader(dataset):
        return DataLoader(dataset, batch_size=o.batch_size, sampler=ShardSampler(len(dataset), env.rank, env.world_size),
                          num_workers=workers, pin_memory=cuda,
                          worker_init_fn=_worker_leaves_signals_to_main if workers > 0 else None)

    # -- model and optimizer ---------------------------------------------------------------------
    torch.manual_seed(o.seed)
    core = Epiformer(cfg).to(device)
    decay, no_decay = [], []
    for name, p in core.named_parameters():
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=o.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=(o.precision == "fp16"))
    if env.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if cuda:
            core = torch.nn.SyncBatchNorm.convert_sync_batchnorm(core)
        model = DDP(core, device_ids=[device.index] if cuda else None)
    else:
        model = core
    loss_fn = get_loss(o.loss)

    # -- state -----------------------------------------------------------------------------------
    step, epoch, step_in_epoch = 0, 0, 0
    best = {"pearson": -math.inf, "step": -1, "epoch": -1, "metrics": None}
    best_state = None
    acc = {"loss_sum": 0.0, "loss_n": 0, "windows": 0, "seconds": 0.0}
    seconds_total = 0.0
    rows = []
    if saved is not None:
        core.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if "scaler" in saved and saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        step, epoch, step_in_epoch = int(saved["step"]), int(saved["epoch"]), int(saved["step_in_epoch"])
        best = dict(saved["best"])
        best_state = saved.get("best_model")
        acc = dict(saved["acc"])
        seconds_total = float(saved["seconds"])
        rows = [r for r in _read_rows(out / "metrics.tsv") if r.get("epoch") != "test" and int(r["step"]) <= step]
        log.info("resuming %s at step %d (epoch %d, step %d of it)", out, step, epoch + 1, step_in_epoch)
    resolved = {"model": cfg.to_dict(), "training": o.to_dict(), "store": str(Path(data).resolve()),
                "store_fingerprint": store.manifest.get("fingerprint"), "tracks": tracks,
                "world_size": env.world_size, "global_batch": sampler.global_batch,
                "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "workers": workers,
                "device": str(device), "command": command, "tool": f"epiformer {__version__}"}
    columns = (["epoch", "step", "train_loss", "valid_loss", "valid_pearson"]
               + [f"pearson_{t}" for t in tracks] + ["lr", "seconds", "windows_per_s"])
    if main:
        from epiformer_cli.io.files import atomic_write_text

        atomic_write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")
        log.info("training %s on %d windows (valid %d, test %d), %d steps of %d windows, %d per epoch, on %s%s",
                 ", ".join(tracks), len(train_set), len(valid_set), len(test_set), total_steps,
                 sampler.global_batch, steps_per_epoch, device,
                 f" x {env.world_size} processes" if env.enabled else "")

    def evaluate(dataset) -> dict:
        D.average_buffers(core, env)
        core.eval()
        acc_eval = PearsonAccumulator(len(tracks))
        with torch.no_grad():
            for batch in eval_loader(dataset):
                x = model_inputs(batch["codes"].to(device, non_blocking=cuda),
                                 batch["cons"].to(device, non_blocking=cuda), cfg.conservation)
                with autocast(device, o.precision):
                    pred = core(x)
                acc_eval.update(pred.float(), batch["targets"])
        acc_eval.stats = D.all_reduce_sum(acc_eval.stats, env, device)
        core.train()
        return acc_eval.summary(tracks)

    def checkpoint() -> None:
        if not main:
            return
        atomic_save({
            "format_version": CHECKPOINT_FORMAT,
            "model": core.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "scheduler": {"kind": "warmup-cosine", "peak_lr": o.lr, "warmup_steps": o.warmup_steps,
                          "total_steps": total_steps, "min_ratio": o.min_lr_ratio, "step": step},
            "rng": rng_state(), "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "best": best, "best_model": best_state, "acc": acc, "seconds": seconds_total,
            "options": o.to_dict(), "config": cfg.to_dict(), "world_size": env.world_size,
        }, out / "last.pt")

    def save_best(metrics: dict) -> None:
        nonlocal best_state
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in core.state_dict().items()}
        if main:
            from epiformer_cli.model.modelfile import save_model

            provenance = {
                "store": str(Path(data).resolve()), "store_fingerprint": store.manifest.get("fingerprint"),
                "command": command, "options": o.to_dict(), "seed": o.seed, "epoch": epoch_label(),
                "step": step, "metrics": metrics, "tool": f"epiformer {__version__}",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "world_size": env.world_size,
            }
            save_model(out / "model.pt", core, cfg, tracks, store.manifest.get("normalization"), provenance)

    def epoch_label() -> float:
        if step_in_epoch in (0, steps_per_epoch):
            return epoch + (step_in_epoch == steps_per_epoch)
        return round(epoch + step_in_epoch / steps_per_epoch, 4)

    def validate() -> None:
        nonlocal best
        metrics = evaluate(valid_set)
        loss_sum = D.all_reduce_sum(torch.tensor([acc["loss_sum"], acc["loss_n"], acc["windows"]],
                                                 dtype=torch.float64), env, device)
        train_loss = float(loss_sum[0] / max(loss_sum[1], 1))
        row = {"epoch": epoch_label(), "step": step, "train_loss": train_loss, "valid_loss": metrics["loss"],
               "valid_pearson": metrics["pearson"], "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(seconds_total, 1),
               "windows_per_s": round(float(loss_sum[2]) / max(acc["seconds"], 1e-9), 2)}
        row.update({f"pearson_{t}": r for t, r in metrics["pearson_by_track"].items()})
        rows.append(row)
        acc.update(loss_sum=0.0, loss_n=0, windows=0, seconds=0.0)
        if metrics["pearson"] > best["pearson"]:
            best = {"pearson": metrics["pearson"], "step": step, "epoch": row["epoch"], "metrics": metrics}
            save_best(metrics)
        if main:
            _write_rows(out / "metrics.tsv", rows, columns)
            log.info("epoch %s step %d: train loss %.4f, valid loss %.4f, valid Pearson %.3f (best %.3f at step %d)",
                     row["epoch"], step, train_loss, metrics["loss"], metrics["pearson"], best["pearson"], best["step"])
        emit("valid", row=row)

    # -- the loop ----------------------------------------------------------------------------------
    emit("start", total_steps=stop_step, steps_per_epoch=steps_per_epoch, start_step=step)
    model.train()
    ckpt_every = o.checkpoint_every
    while step < stop_step:
        sampler.set_epoch(epoch, step_in_epoch)
        batches = iter(train_loader)
        while step < stop_step and step_in_epoch < steps_per_epoch:
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = o.lr * lr_factor(step, o.warmup_steps, total_steps, o.min_lr_ratio)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for a in range(o.accumulate):
                batch = next(batches)
                # dropout masks depend only on (seed, step, chunk): same on resume and at any world size
                torch.manual_seed(_derived_seed(o.seed, step, env.rank * o.accumulate + a))
                codes = batch["codes"].to(device, non_blocking=cuda)
                cons = batch["cons"].to(device, non_blocking=cuda)
                targets = batch["targets"].to(device, non_blocking=cuda)
                sync = env.enabled and a < o.accumulate - 1
                with (model.no_sync() if sync else _nullcontext()):
                    with autocast(device, o.precision):
                        pred = model(model_inputs(codes, cons, cfg.conservation))
                    loss = loss_fn(pred.float(), targets) / o.accumulate
                    scaler.scale(loss).backward()
                step_loss += float(loss.detach())
            if o.clip_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(core.parameters(), o.clip_norm)
            scaler.step(optimizer)
            scaler.update()
            if not math.isfinite(step_loss):
                raise UsageError(
                    f"the training loss became {step_loss} at step {step}: lower --lr (now {o.lr:g}) or use fp32"
                )
            step += 1
            step_in_epoch += 1
            elapsed = time.perf_counter() - started
            seconds_total += elapsed
            acc["loss_sum"] += step_loss
            acc["loss_n"] += 1
            acc["windows"] += sampler.batch_size * o.accumulate
            acc["seconds"] += elapsed
            emit("step", step=step, loss=step_loss, lr=optimizer.param_groups[0]["lr"],
                 windows_per_s=sampler.global_batch / max(elapsed, 1e-9), epoch=epoch)
            at_epoch_end = step_in_epoch == steps_per_epoch
            if at_epoch_end or step == stop_step:
                validate()
            if at_epoch_end:
                epoch, step_in_epoch = epoch + 1, 0
            if at_epoch_end or step == stop_step or (ckpt_every and step % ckpt_every == 0):
                checkpoint()
            if at_epoch_end:
                break
        del batches

    if env.enabled and not D.weights_in_sync(core, env):
        raise RuntimeError("the processes ended with different weights (DDP out of sync)")
    if env.enabled and main:
        log.info("weights identical on all %d processes", env.world_size)

    # -- test with the best model ------------------------------------------------------------------
    test_row: Dict[str, Any] = {}
    if len(test_set) and best_state is not None and stop_step >= total_steps:
        core.load_state_dict(best_state)
        metrics = evaluate(test_set)
        test_row = {"epoch": "test", "step": best["step"], "train_loss": "", "valid_loss": metrics["loss"],
                    "valid_pearson": metrics["pearson"], "lr": "", "seconds": round(seconds_total, 1),
                    "windows_per_s": ""}
        test_row.update({f"pearson_{t}": r for t, r in metrics["pearson_by_track"].items()})
        if main:
            _write_rows(out / "metrics.tsv", rows + [test_row], columns)
            log.info("test (best model, step %d): loss %.4f, Pearson %.3f", best["step"], metrics["loss"],
                     metrics["pearson"])
        emit("test", row=test_row)
    if main:
        plot_learning_curve(rows, out / "learning_curve.png")
    summary = TrainSummary(out=out, steps=step, epochs_done=step / steps_per_epoch,
                           best_pearson=best["pearson"], best_step=best["step"],
                           test=({"loss": test_row["valid_loss"], "pearson": test_row["valid_pearson"]}
                                 if test_row else {}),
                           seconds=seconds_total, rows=rows)
    emit("done", summary=summary)
    return summary


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
