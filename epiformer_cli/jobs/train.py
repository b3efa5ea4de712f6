"""``train``: fit an Epiformer on a prepared store, on a CPU, one GPU, or many processes (torchrun).

This module is the job: it checks the inputs, options and run folder, chooses the device, starts
and stops the process group, and hands the run to :class:`~epiformer_cli.training.trainer.Trainer`.
With ``TrainOptions.init`` (``--init model.pt``) it fine-tunes that model: its architecture, its
body's weights, and the output rows of the store's tracks it already predicts.
Writes into the run folder ``RUN/``:

* ``model.pt``: the best model so far by validation Pearson (:func:`~epiformer_cli.model.modelfile.save_model`);
* ``last.pt``: the true last training state (weights, optimizer, RNG, counters) for ``--resume``;
* ``metrics.tsv``: one row per validation plus a final test row (:mod:`~epiformer_cli.training.metrics_file`);
  ``config.json``: the resolved model config and training options; ``learning_curve.png``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Collection, Dict, List, Optional

from epiformer_cli.errors import UsageError
from epiformer_cli.runs import check_output_dir, replace_or_refuse
from epiformer_cli.options import TrainOptions
from epiformer_cli.progress import Progress
from epiformer_cli.training.trainer import InitModel, Trainer, TrainSummary

log = logging.getLogger(__name__)

#: files a run folder holds; --force removes exactly these.
RUN_FILES = ("model.pt", "last.pt", "metrics.tsv", "config.json", "learning_curve.png")

#: the peak learning rate of fine-tuning (--init) when --lr is not given: the rate the published
#: models were trained at. From scratch the default is the preset's suggested rate
#: (``PRESET_NOTES``), or ``TrainOptions.lr`` (2e-3) for a ``--config`` model.
FINETUNE_LR = 1e-4


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
    given: Optional[Collection[str]] = None,
) -> TrainSummary:
    """Train an Epiformer on the store ``data``, writing the run into ``out``.

    Args:
        data: a store made by ``prepare`` (windows of the model's ``seq_len``).
        out: the run folder (refused if it holds another run, unless ``resume`` or ``force``).
        preset / config: the model: a preset name or a JSON config file; neither: the preset of
            the store's windows (:func:`store_preset`); with ``options.init``, neither (the model
            file is the architecture). ``n_tracks`` comes from the store.
        options: :class:`TrainOptions`; on ``resume`` the options that change the arithmetic
            (batch, lr, seed, init, ...) must equal the saved ones when given (:meth:`TrainOptions.resumed`),
            and the ``init`` file must be the one the run started from (same SHA-256).
        resume: continue the run in ``out`` from its ``last.pt``.
        force: overwrite a run in ``out``.
        command: the command line, recorded in the model's provenance.
        progress: called on rank 0 in optimizer steps, with the loss and the last validation
            Pearson as status (see :class:`Trainer`).
        given: the names of the ``options`` fields the user set (the command line passes those typed,
            even at their default value); on ``resume`` each must equal the run's. None: the fields
            whose value differs from its default.

    Returns:
        The :class:`TrainSummary` (on every rank; its ``rank`` says which).

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
        options = options.resumed(saved["options"], given=given)
    # the folder is train's when it holds a run's files (one to resume or replace); else it must be empty
    check_output_dir(out, inputs=[("--data", data), ("--config", config), ("--init", options.init)],
                     marks=RUN_FILES)
    if saved is None:
        _check_model_source(preset, config, options.init)  # before reading a large model file
    init = _read_init(options.init, saved, out) if options.init else None
    notes: List[str] = []  # the defaults chosen for the user, said once training is sure to start
    if saved is None and options.init and given is not None and "lr" not in given and options.lr == FINETUNE_LR:
        notes.append(f"fine-tuning at --lr {options.lr:g} (the default with --init; pass --lr to change it)")
    if saved is not None:
        cfg = _run_config(saved, store, out, env, preset, config)
    else:
        if not (preset or config or options.init):
            preset = store_preset(store)
            notes.append(f"model: preset {preset} (from the store's {store.window_bp:,} bp windows)")
        cfg = resolve_config(store, preset, config, init=init)
        if preset and not options.init and given is not None and "lr" not in given:
            # the preset's suggested rate: 0.002 suits the tiny network, not a 40 M-parameter one
            if options.lr != default_lr(None, preset):
                options = dataclasses.replace(options, lr=default_lr(None, preset))
                notes.append(f"training at --lr {options.lr:g} (the {preset} preset's rate; pass --lr to change it)")
    device = compute_device(options.device, options.precision, env.local_rank, env.world_size)
    old_files = _check_run_dir(out, resume, force, say=env.is_main)  # every rank: all of them stop on a refusal
    D.init(env, device)
    finished = False
    try:
        _verify_store(store, env)  # a damaged array would train on garbage silently: refuse it naming the fix
        # the trainer checks the store's windows against the options: a refused run leaves no run folder
        with Trainer(store, cfg, options, out=out, env=env, device=device, command=command,
                     progress=progress, init=init) as trainer:
            init = None  # its weights are the trainer's now: no second copy of a large model during the run
            if env.is_main:
                _make_run_dir(out, old_files)
                for note in notes:
                    log.info("%s", note)
            if saved is not None:
                trainer.resume_from(saved)
            summary = trainer.fit()
            finished = True
            return summary
    finally:
        D.shutdown(env, wait=finished)


def _verify_store(store, env) -> None:
    """Check the store's checksums once per node: its first process (``LOCAL_RANK`` 0) reads every
    array while the others wait and trust it. The wait is a collective that also hands every process
    the error of a damaged store, so all of them stop with it (none is left waiting for the others)."""
    from epiformer_cli.training import distributed as D

    error: Optional[BaseException] = None
    if env.local_rank == 0:
        try:
            read = store.verify()
            log.debug("%s: %d bytes checked against the store's checksums", store.root, read)
        except Exception as exc:  # handed to the other processes, then raised here too
            error = exc
    first = D.first_of(error, env)
    if error is not None:
        raise error
    if first is not None:
        raise first


def resolve_config(store, preset_name: Optional[str], config_path: Optional[Path],
                   init: Optional[InitModel] = None):
    """The model config: a preset, a JSON file, or the model to fine-tune (``init``), with
    ``n_tracks`` taken from the store and ``seq_len`` checked against the store's windows.
    Neither a preset nor a file: the preset of the store's windows (:func:`store_preset`)."""
    from epiformer_cli.model.config import load_config, preset, preset_for_window

    _check_model_source(preset_name, config_path, init.path if init is not None else None)
    if init is not None:
        return _init_config(store, init)
    if config_path:
        cfg = load_config(config_path)
        source = f"--config {config_path}"
    else:
        preset_name = preset_name or store_preset(store)
        cfg = preset(preset_name)
        source = f"--preset {preset_name}"
    if cfg.seq_len != store.window_bp:
        # the fixes name real values: the preset (or window) to prepare for this model, and the
        # preset that the store's windows fit, if any
        model_preset = preset_name if not config_path else preset_for_window(cfg.seq_len)
        again = f"--preset {model_preset} (or --window {cfg.seq_len})" if model_preset else f"--window {cfg.seq_len}"
        store_fit = preset_for_window(store.window_bp)
        other = (f"or drop {source.split()[0]} to train --preset {store_fit}, the preset of the store's windows"
                 if store_fit else
                 f"or train a model of {store.window_bp} bp windows (--config with \"seq_len\": {store.window_bp})")
        raise UsageError(
            f"{source} takes {cfg.seq_len} bp windows but the store {store.root} holds {store.window_bp} bp "
            f"windows: run `epiformer prepare` again with {again}, {other}"
        )
    if cfg.n_tracks != len(store.tracks):
        cfg = cfg.replace(n_tracks=len(store.tracks))
    return cfg


def store_preset(store) -> str:
    """The preset ``train`` builds when given no --preset, --config or --init: the one whose input
    length is the store's window (:func:`~epiformer_cli.model.config.preset_for_window`).

    Raises:
        UsageError: no preset has that length, naming the store's window, the presets' lengths
            and the two fixes (a --config of that length, or a store prepared for a preset).
    """
    from epiformer_cli.model.config import PRESETS, preset_for_window

    name = preset_for_window(store.window_bp)
    if name is None:
        windows = sorted({cfg.seq_len for cfg in PRESETS.values()})
        choices = ", ".join(f"--preset {preset_for_window(w)} ({w} bp)" for w in windows)
        raise UsageError(
            f"the store {store.root} holds {store.window_bp} bp windows, the input length of no preset: "
            f"pass --config with a model config JSON whose \"seq_len\" is {store.window_bp}, or run "
            f"`epiformer prepare` again with one of {choices}"
        )
    return name


def default_lr(init, preset: Optional[str] = None) -> float:
    """The peak learning rate when --lr is not given: :data:`FINETUNE_LR` when fine-tuning
    (``init``, the model file, is not None), else the preset's suggested rate
    (``PRESET_NOTES``), else (a ``--config`` model) the default of :class:`TrainOptions`."""
    if init is not None:
        return FINETUNE_LR
    if preset is not None:
        from epiformer_cli.model.config import PRESET_NOTES

        return PRESET_NOTES[preset].lr
    return TrainOptions.lr


def _check_model_source(preset_name: Optional[str], config_path: Optional[Path], init_path) -> None:
    """One source of the architecture: --preset, --config or --init."""
    if preset_name and config_path:
        raise UsageError("give --preset or --config, not both")
    if init_path is not None and (preset_name or config_path):
        given = "--preset" if preset_name else "--config"
        raise UsageError(f"--init {init_path} brings its own architecture: drop {given}")


def _init_config(store, init: InitModel):
    """The fine-tuned model's config: ``init``'s, with the store's track count, after checking that
    the store can feed it (its window length, and conservation when the model uses it)."""
    cfg = init.config
    if cfg.seq_len != store.window_bp:
        raise UsageError(
            f"--init {init.path} takes {cfg.seq_len} bp windows but the store {store.root} holds "
            f"{store.window_bp} bp windows: prepare a store of its window with `epiformer prepare ... "
            f"--window {cfg.seq_len}`"
        )
    # the rules of inference/inputs.py: a model trained with conservation needs it (a store prepared with
    # --no-cons holds zeros), a model without it ignores the store's
    source = (store.manifest.get("conservation") or {}).get("source", "unknown")
    if cfg.conservation != "none" and source is None:
        raise UsageError(
            f"--init {init.path} uses conservation ({cfg.conservation!r} mode) but the store {store.root} was "
            "prepared without it (--no-cons): prepare the store with --cons"
        )
    if cfg.conservation == "none" and source is not None:
        log.info("--init %s does not use conservation: the store's conservation is not used", init.path.name)
    return cfg.replace(n_tracks=len(store.tracks)) if cfg.n_tracks != len(store.tracks) else cfg


def _read_init(path: str, saved: Optional[Dict[str, Any]], out: Path) -> InitModel:
    """The model to fine-tune; on ``--resume``, the very file the run started from."""
    if saved is not None and not Path(path).exists():
        raise UsageError(f"--resume: the run in {out} started from --init {path}, which is gone: "
                         "put it back, or start a new run with --force")
    init = InitModel.read(path)
    recorded = (saved.get("init") or {}).get("sha256") if saved is not None else None
    if recorded and recorded != init.sha256:
        raise UsageError(
            f"--resume: --init {path} has changed since the run in {out} started from it (sha256 "
            f"{recorded[:12]}..., now {init.sha256[:12]}...): put the original back, or start a new run with --force"
        )
    return init


def _load_last_state(out: Path) -> Dict[str, Any]:
    """The ``last.pt`` of the run in ``out``, for ``--resume``."""
    from epiformer_cli.training.checkpoint import load_checkpoint

    if not (out / "last.pt").exists():
        raise UsageError(f"--resume: {out} holds no last.pt to continue from: drop --resume to start a new run")
    return load_checkpoint(out / "last.pt")


def _run_config(saved: Dict[str, Any], store, out: Path, env, preset: Optional[str],
                config: Optional[Path]):
    """The resumed run's own model config, checked against the store and the launch (``env``)."""
    from epiformer_cli.model.config import ModelConfig

    if (preset or config) and env.is_main:
        log.info("--resume: the model config is the run's own (config.json); --preset/--config ignored")
    cfg = ModelConfig.from_dict(saved["config"])
    if cfg.seq_len != store.window_bp or cfg.n_tracks != len(store.tracks):
        raise UsageError(f"--resume: the store {store.root} does not match the run in {out} (window or tracks differ)")
    if saved["world_size"] != env.world_size:
        raise UsageError(
            f"--resume: the run used {saved['world_size']} process(es), this launch has {env.world_size}: "
            "resume with the same number of processes"
        )
    return cfg


def _check_run_dir(out: Path, resume: bool, force: bool, say: bool = True) -> List[str]:
    """Refuse a folder holding another run (unless resume/force); the old run's files that
    :func:`_make_run_dir` removes (with --force, or of a run stopped before its first checkpoint).
    Writes nothing. ``say``: log the restart of a stopped run (one process of several)."""
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "last.pt").exists():
            raise UsageError(f"--resume: {out} holds no last.pt to continue from: drop --resume to start a new run")
        return []
    if existing and set(existing) <= {"config.json"} and not force:
        # a run stopped before its first checkpoint (a full disk, a kill): nothing to continue or
        # to lose, so the same command starts it again
        if say:
            log.info("%s holds a run that stopped before its first checkpoint: starting it again", out)
        force = True
    replace_or_refuse(out, holds=f"a run ({', '.join(existing)})" if existing else None, force=force,
                      fix="continue it with --resume, overwrite it with --force, or choose another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: choose a folder")
    return existing


def _make_run_dir(out: Path, old_files: List[str]) -> None:
    """Create the run folder and remove the old run's files ``old_files`` (rank 0 only), once every
    input and option has been checked: a refused run leaves no run folder behind."""
    out.mkdir(parents=True, exist_ok=True)
    for name in old_files:
        (out / name).unlink(missing_ok=True)
