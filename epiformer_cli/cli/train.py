"""`epiformer train`: Train an Epiformer model on a prepared store (CPU, one GPU, or many GPUs with torchrun)."""

from __future__ import annotations

import logging
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional, Set

import typer

from epiformer_cli.cli.common import (
    FORCE_HELP, DeviceOption, PrecisionOption, ThreadsOption, apply_threads, handle_errors, progress_bar,
)

log = logging.getLogger(__name__)

#: the presets in a few words (the help cannot import model.config, which loads torch); the
#: numbers are model.config's PRESETS and PRESET_NOTES, and tests check that they agree.
PRESET_HELP = (
    "Model preset (input, output span, parameters, suggested --lr): tiny (16,384 bp, 12,288 bp, 0.2 M, 0.002; "
    "tests, the demo), small (32,768 bp, 24,576 bp, 2.9 M, 0.0005; a CPU), epiformer (98,304 bp, 81,920 bp, "
    "42.6 M, 0.0001; the published size) or published (98,304 bp, 81,920 bp, 54.8 M, 0.0001; the published "
    "network) [default: the preset of the store's window length]."
)


def register(app: typer.Typer) -> None:
    app.command("train")(run)


@handle_errors
def run(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Training store made by `epiformer prepare`.", readable=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: model.pt, last.pt, metrics.tsv, config.json, learning_curve.png.")],
    preset: Annotated[Optional[str], typer.Option("--preset", help=PRESET_HELP)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="Model config JSON (instead of --preset).", readable=False)] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Fine-tune this model file (e.g. from `epiformer import-model`): its architecture and weights; tracks it shares by name with the store keep their output weights, others start fresh. Instead of --preset/--config; the store's window must be its input length.", readable=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Passes over the training windows; the LR schedule spans them [default: 10 unless --max-steps].")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many optimizer steps in all (schedule spans --epochs when given, else these steps).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per micro-batch and process.")] = 8,
    accumulate: Annotated[int, typer.Option("--accumulate", help="Micro-batches per optimizer step (gradient accumulation).")] = 1,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (AdamW) [default: the preset's suggested rate (tiny 0.002, small 0.0005, epiformer and published 0.0001), 0.002 with --config, 0.0001 with --init (the published models' rate)].")] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW decoupled weight decay.")] = 0.01,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Linear warm-up steps before the cosine decay.")] = 50,
    loss: Annotated[str, typer.Option("--loss", help="poisson | poisson-multinomial.")] = "poisson",
    seed: Annotated[int, typer.Option("--seed", help="Seeds initialisation, window order, augmentation and dropout.")] = 0,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes [default: min(4, cpus-1), 0 on one cpu].")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Also write last.pt every N steps [default: each epoch end].")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": start over in an --out that holds a run (its checkpoints and metrics).")] = False,
) -> None:
    """Train an Epiformer model on a prepared store (CPU, one GPU, or many GPUs with torchrun).

    Writes the best model by validation Pearson to OUT/model.pt, the last state to OUT/last.pt
    (for --resume), one metrics row per epoch to OUT/metrics.tsv and a test row at the end.
    Multi-GPU: torchrun --nproc_per_node=N -m epiformer_cli train ... (no extra flag).

    The model: --preset, --config, or by default the preset whose input length is the store's
    window (tiny 16,384 bp, small 32,768 bp, epiformer 98,304 bp), so `prepare --preset P` then
    `train` trains P (but for published, which needs --preset published: it shares epiformer's length).

    Fine-tuning: --init model.pt starts from a model file (e.g. the published model made by
    `epiformer import-model`) instead of a fresh --preset/--config model, at --lr 0.0001 unless
    --lr is given.
    """
    from epiformer_cli.errors import UsageError
    from epiformer_cli.jobs.train import TrainOptions, train_model
    from epiformer_cli.progress import silent

    apply_threads(threads)  # under torchrun: this node's CPUs shared among its processes
    if resume and force:
        raise UsageError("--resume and --force contradict each other: choose one")
    follower = _quiet_if_follower()
    if lr is None:  # on --resume the run's own lr wins anyway (lr is not among the given options)
        from epiformer_cli.jobs.train import default_lr

        lr = default_lr(init)
    values = dict(
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, accumulate=accumulate, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, loss=loss, seed=seed, workers=workers,
        checkpoint_every=checkpoint_every, device=device, precision=precision, init=init,
    )
    options = TrainOptions(**values)
    command = "epiformer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with (nullcontext(silent) if follower else progress_bar("train", unit="steps")) as reporter:
        summary = train_model(data=data, out=out, preset=preset, config=config, options=options, resume=resume,
                              force=force, command=command, progress=reporter, given=given_options(ctx, values))
    if summary.rank == 0:  # under torchrun every process returns the summary: one closing line
        test = f", test Pearson {summary.test['pearson']:.3f}" if summary.test else ""
        log.info("%s/model.pt: best valid Pearson %.3f at step %d%s (%.0f s of training)", out, summary.best_pearson,
                 summary.best_step, test, summary.seconds)


def _quiet_if_follower() -> bool:
    """Under torchrun, whether this process is not rank 0; if so, from here on it says only warnings
    and errors (everything with -v): rank 0 reports the run, once, and draws the progress bar."""
    from epiformer_cli.cli.common import STATE
    from epiformer_cli.runs.shards import Torchrun

    launcher = Torchrun.from_environ()
    follower = launcher.active and not launcher.is_main
    if follower and not STATE.verbose:
        logging.getLogger("epiformer_cli").setLevel(logging.WARNING)
    return follower


def given_options(ctx: typer.Context, names) -> Set[str]:
    """The options of ``names`` the user set, on the command line or by an environment variable,
    even at their default value (``--lr 0.002`` on --resume is checked against the run's lr)."""
    # by name: Typer's own copy of Click has its own ParameterSource enum
    return {name for name in names
            if getattr(ctx.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")}
