"""``train``: fit an Epiformer on a prepared store, on a CPU, one GPU, or many processes (torchrun).

This module is the job: it checks the inputs, options and run folder, chooses the device, starts
and stops the process group, and hands the run to :class:`~epiformer_cli.training.trainer.Trainer`.
Writes into the run folder ``RUN/``:

* ``model.pt``: the best model so far by validation Pearson (:func:`~epiformer_cli.model.modelfile.save_model`);
* ``last.pt``: the true last training state (weights, optimizer, RNG, counters) for ``--resume``;
* ``metrics.tsv``: one row per validation plus a final test row (:mod:`~epiformer_cli.training.metrics_file`);
  ``config.json``: the resolved model config and training options; ``learning_curve.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

from epiformer_cli.errors import UsageError
from epiformer_cli.io.files import check_output_dir
from epiformer_cli.options import TrainOptions
from epiformer_cli.training.trainer import Progress, Trainer, TrainSummary

log = logging.getLogger(__name__)

#: files a run folder holds; --force removes exactly these.
RUN_FILES = ("model.pt", "last.pt", "metrics.tsv", "config.json", "learning_curve.png")


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
            (batch, lr, seed, ...) must equal the saved ones (:meth:`TrainOptions.resumed`).
        resume: continue the run in ``out`` from its ``last.pt``.
        force: overwrite a run in ``out``.
        command: the command line, recorded in the model's provenance.
        progress: called on rank 0 as ``progress(event, **info)`` (see :class:`Trainer`).

    Returns:
        The :class:`TrainSummary` (on every rank).

    Raises:
        UsageError / InputFileError for options or files that cannot work; DeviceError for a
        device that is not here, or fp16 off a CUDA GPU.
    """
    from epiformer_cli.data.training_store import TrainingStore
    from epiformer_cli.device import compute_device
    from epiformer_cli.training import distributed as D

    out = Path(out)
    env = D.env_from_launcher()
    options = options if options is not None else TrainOptions()
    store = TrainingStore(data)
    saved = _load_last_state(out) if resume else None
    if saved is not None:
        options = options.resumed(saved["options"])
    check_output_dir(out, inputs=[data, config])
    if saved is not None:
        cfg = _run_config(saved, store, out, env.world_size, preset, config)
    else:
        cfg = resolve_config(store, preset, config)
    device = compute_device(options.device, options.precision, env.local_rank, env.world_size)
    # only now, with every option checked: a refused run leaves no run folder behind
    _prepare_run_dir(out, resume, force, write=env.is_main)
    D.init(env, device)
    try:
        with Trainer(store, cfg, options, out=out, env=env, device=device, command=command,
                     progress=progress) as trainer:
            if saved is not None:
                trainer.resume_from(saved)
            return trainer.fit()
    finally:
        D.shutdown(env)


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


def _load_last_state(out: Path) -> Dict[str, Any]:
    """The ``last.pt`` of the run in ``out``, for ``--resume``."""
    from epiformer_cli.training.checkpoint import load_checkpoint

    if not (out / "last.pt").exists():
        raise UsageError(f"--resume: {out} holds no last.pt to continue from: drop --resume to start a new run")
    return load_checkpoint(out / "last.pt")


def _run_config(saved: Dict[str, Any], store, out: Path, world_size: int, preset: Optional[str],
                config: Optional[Path]):
    """The resumed run's own model config, checked against the store and the launch."""
    from epiformer_cli.model.config import ModelConfig

    if preset or config:
        log.info("--resume: the model config is the run's own (config.json); --preset/--config ignored")
    cfg = ModelConfig.from_dict(saved["config"])
    if cfg.seq_len != store.window_bp or cfg.n_tracks != len(store.tracks):
        raise UsageError(f"--resume: the store {store.root} does not match the run in {out} (window or tracks differ)")
    if saved["world_size"] != world_size:
        raise UsageError(
            f"--resume: the run used {saved['world_size']} process(es), this launch has {world_size}: "
            "resume with the same number of processes"
        )
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
