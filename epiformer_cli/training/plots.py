"""The learning-curve figure (``learning_curve.png``): losses and validation Pearson by step, and the
test row of ``metrics.tsv`` as a marked point at the step of the model it scored.

matplotlib is imported lazily and the PNG saved atomically by :mod:`epiformer_cli.plotting`. What
is drawn is chosen by :func:`curve_data`, a pure function of the rows (tested without pixels).
"""

from __future__ import annotations

import logging
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from epiformer_cli.plotting import GRID_ALPHA, PLOTS_EXTRA, import_pyplot, plain, save_png

log = logging.getLogger(__name__)

#: what the ``loss`` column of a valid or test row is (training/metrics.py ``PearsonAccumulator.loss``).
EVAL_LOSS = ("Poisson NLL per 128 bp bin and track: pred - target·ln(pred)\n"
             "(ln(target!) left out, so it can be negative)")
#: the training losses of ``--loss``, as the legend names them.
TRAIN_LOSS = {"poisson": "train: the same Poisson NLL on the training batches (mean of the steps since the "
                         "previous validation)",
              "poisson-multinomial": "train: Poisson-multinomial loss per bin on the training batches (its own "
                                     "scale: right axis)"}
PEARSON = "Pearson r of log(x + 1) per 128 bp bin"


@dataclass
class CurveData:
    """The numbers :func:`plot_learning_curve` draws, from metrics.tsv rows.

    Attributes:
        steps: (n,) optimizer step of each validation; train_loss, loss, pearson: (n,) per validation
            (NaN where a row has none); by_track: track -> (n,) its Pearson r.
        test: the test row's ``{"step", "loss", "pearson", "epoch"}`` (floats), or None.
    """

    steps: List[int]
    train_loss: List[float]
    loss: List[float]
    pearson: List[float]
    by_track: Dict[str, List[float]] = field(default_factory=dict)
    test: Optional[Dict[str, float]] = None


def curve_data(rows: Sequence[Mapping[str, object]]) -> Optional[CurveData]:
    """The ``valid`` rows in order and the last ``test`` row of ``rows`` (metrics.tsv rows, as
    strings or numbers; see :mod:`~epiformer_cli.training.metrics_file`); None without a valid row."""
    valid = [r for r in rows if r.get("split") == "valid"]
    if not valid:
        return None
    tracks = [c[len("pearson_"):] for c in valid[0] if str(c).startswith("pearson_")]
    tests = [r for r in rows if r.get("split") == "test"]
    test = None
    if tests:
        t = tests[-1]
        test = {"step": int(float(t["step"])), "epoch": _number(t.get("epoch")), "loss": _number(t.get("loss")),
                "pearson": _number(t.get("pearson"))}
    return CurveData(
        steps=[int(float(r["step"])) for r in valid],
        train_loss=[_number(r.get("train_loss")) for r in valid],
        loss=[_number(r.get("loss")) for r in valid],
        pearson=[_number(r.get("pearson")) for r in valid],
        by_track={t: [_number(r.get(f"pearson_{t}")) for r in valid] for t in tracks},
        test=test,
    )


def _number(value) -> float:
    """A cell as a float: NaN for an empty cell (a test row's train_loss) or one that is no number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plot_learning_curve(rows: List[Dict[str, object]], path: Path, *, loss: Optional[str] = None) -> bool:
    """Draw the losses (left) and the Pearson r (right) against the optimizer step: the ``valid``
    rows as lines, the ``test`` row (the best validation's model on the test windows) as a star at
    its step, labelled with its value.

    Args:
        rows: metrics.tsv rows (:mod:`~epiformer_cli.training.metrics_file`), test row included.
        path: the PNG (written atomically).
        loss: the run's ``--loss`` (what ``train_loss`` is); None: not known, and the legend says
            so. The valid and test ``loss`` is always the Poisson NLL per bin (:data:`EVAL_LOSS`).
    Returns False (nothing written) when matplotlib is missing or there is no ``valid`` row.
    """
    try:
        plt = import_pyplot()
    except ImportError:
        log.warning("matplotlib is not installed: skipping %s (%s)", path, PLOTS_EXTRA)
        return False
    data = curve_data(rows)
    if data is None:
        return False
    fig, (ax_loss, ax_r) = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    fig.suptitle("Training run: a validation at each epoch's end; test = the best validation's model on the "
                 "test windows", fontsize=10)
    steps = data.steps

    # losses
    train_label = textwrap.fill(TRAIN_LOSS.get(loss, "train: the run's --loss on the training batches (mean of "
                                                   "the steps since the previous validation)"), 64)
    own_scale = loss is not None and loss != "poisson"
    ax_train = ax_loss.twinx() if own_scale else ax_loss
    ax_train.plot(steps, data.train_loss, "o-", color="C0", markersize=4, label=train_label)
    if own_scale:
        ax_train.set_ylabel(f"train loss ({loss})")
    ax_loss.plot(steps, data.loss, "o-", color="C1", markersize=4, label="valid")
    if data.test is not None and math.isfinite(data.test["loss"]):
        ax_loss.plot([data.test["step"]], [data.test["loss"]], "*", color="C3", markersize=14, zorder=5,
                     label=f"test (model of step {data.test['step']:,}): {data.test['loss']:.4g}")
    ax_loss.set_ylabel(EVAL_LOSS, fontsize=9)
    handles, labels = ax_loss.get_legend_handles_labels()
    if own_scale:
        more = ax_train.get_legend_handles_labels()
        handles, labels = more[0] + handles, more[1] + labels
    ax_loss.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)

    # Pearson
    for i, (track, values) in enumerate(data.by_track.items()):
        ax_r.plot(steps, values, "-", color=f"C{(i + 4) % 10}", linewidth=0.9, alpha=0.8,
                  label=f"valid, {plain(track)}")
    ax_r.plot(steps, data.pearson, "o-", color="C2", linewidth=2, markersize=4, label="valid, mean over tracks")
    if data.test is not None and math.isfinite(data.test["pearson"]):
        ax_r.plot([data.test["step"]], [data.test["pearson"]], "*", color="C3", markersize=14, zorder=5,
                  label=f"test, mean over tracks (model of step {data.test['step']:,}): {data.test['pearson']:.3f}")
        ax_r.annotate(f"test {data.test['pearson']:.3f}", (data.test["step"], data.test["pearson"]),
                      textcoords="offset points", xytext=(-8, -14), ha="right", fontsize=8, color="C3")
    ax_r.set_ylabel(PEARSON)
    finite = [v for v in data.pearson + [x for vs in data.by_track.values() for x in vs] if math.isfinite(v)]
    ax_r.set_ylim(min([0.0] + finite), 1.0)
    ax_r.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False,
                ncol=2 if len(data.by_track) > 2 else 1)
    for ax in (ax_loss, ax_r):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=GRID_ALPHA)
    save_png(fig, path)
    return True
