"""The learning-curve figure (``learning_curve.png``): losses and validation Pearson by step.

matplotlib is imported here, lazily, with the Agg backend (no display needed), and with its
config/cache folder in the temp dir unless ``MPLCONFIGDIR`` says otherwise (see
:func:`_import_pyplot`).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

log = logging.getLogger(__name__)


def _import_pyplot():
    """``matplotlib.pyplot`` with the Agg backend, importing matplotlib without writing to HOME.

    On its first import matplotlib builds a font cache in ``~/.cache/matplotlib`` and creates
    ``~/.config/matplotlib``; a command should write nothing but its outputs (and temp files).
    Unless the user chose a folder (``MPLCONFIGDIR``) or matplotlib is already imported, it gets
    a throw-away folder in the temp dir for this process, removed at exit. matplotlib reads the
    variable once, so it is put back right after the import (child processes see the user's).
    """
    if "matplotlib" not in sys.modules and not os.environ.get("MPLCONFIGDIR"):
        folder = tempfile.mkdtemp(prefix="epiformer-matplotlib-")
        atexit.register(shutil.rmtree, folder, True)
        os.environ["MPLCONFIGDIR"] = folder
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        finally:
            del os.environ["MPLCONFIGDIR"]
        return plt
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(rows: List[Dict[str, object]], path: Path) -> bool:
    """Draw train/valid loss and valid Pearson against the optimizer step, from the ``valid`` rows
    of ``rows`` (metrics.tsv rows, see :mod:`~epiformer_cli.training.metrics_file`); False if
    matplotlib is missing or there is no such row."""
    try:
        plt = _import_pyplot()
    except ImportError:
        log.warning("matplotlib is not installed: skipping %s (pip install matplotlib)", path)
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
        ax.grid(alpha=0.3)
    from epiformer_cli.io.files import atomic_output

    try:
        with atomic_output(path) as handle:
            fig.savefig(handle, dpi=100, format="png")
    finally:
        plt.close(fig)
    return True
