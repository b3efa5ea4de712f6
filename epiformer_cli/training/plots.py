"""The learning-curve figure (``learning_curve.png``): losses and validation Pearson by step.

matplotlib is imported lazily and the PNG saved atomically by :mod:`epiformer_cli.plotting`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

from epiformer_cli.plotting import GRID_ALPHA, PLOTS_EXTRA, import_pyplot, save_png

log = logging.getLogger(__name__)


def plot_learning_curve(rows: List[Dict[str, object]], path: Path) -> bool:
    """Draw train/valid loss and valid Pearson against the optimizer step, from the ``valid`` rows
    of ``rows`` (metrics.tsv rows, see :mod:`~epiformer_cli.training.metrics_file`); False if
    matplotlib is missing or there is no such row."""
    try:
        plt = import_pyplot()
    except ImportError:
        log.warning("matplotlib is not installed: skipping %s (%s)", path, PLOTS_EXTRA)
        return False
    rows = [r for r in rows if r.get("split") == "valid"]
    if not rows:
        return False
    steps = [int(r["step"]) for r in rows]
    fig, (ax_loss, ax_r) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(steps, [float(r["train_loss"]) for r in rows], "o-", label="train")
    ax_loss.plot(steps, [float(r["loss"]) for r in rows], "o-", label="valid")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_r.plot(steps, [float(r["pearson"]) for r in rows], "o-", color="C2")
    ax_r.set_xlabel("optimizer step")
    ax_r.set_ylabel("valid Pearson r, log(x+1), mean over tracks")
    ax_r.set_ylim(min(0.0, min(float(r["pearson"]) for r in rows)), 1.0)
    for ax in (ax_loss, ax_r):
        ax.grid(alpha=GRID_ALPHA)
    save_png(fig, path)
    return True
