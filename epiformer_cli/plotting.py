"""Figures: matplotlib imported lazily (Agg backend, its config folder kept out of HOME), the style
every figure shares, and the one atomic PNG save they all go through.

Used by the learning curve (``training/``), the explain figures (``explain/``) and the calibration
figures of score-variants (``variants/``); it knows none of them. Importing this module does not
import matplotlib: :func:`import_pyplot` does, on first use. matplotlib (and logomaker) are the
``plots`` extra: :data:`PLOTS_EXTRA` is the fix every "not installed" message names.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

#: how to get matplotlib and logomaker, for the message of a figure that cannot be drawn.
PLOTS_EXTRA = "pip install 'epiformer[plots]'"
#: dots per inch of a saved figure (a figure that needs more, such as a logo's letters, says so).
DPI = 100
#: grid lines stay behind the data.
GRID_ALPHA = 0.3


def import_pyplot():
    """``matplotlib.pyplot`` with the Agg backend (no display needed), importing matplotlib without
    writing to HOME. Raises ImportError when matplotlib is not installed.

    On its first import matplotlib builds a font cache in ``~/.cache/matplotlib`` and creates
    ``~/.config/matplotlib``; a command should write nothing but its outputs (and temp files).
    Unless the user chose a folder (``MPLCONFIGDIR``) or matplotlib is already imported, it gets
    a throw-away folder in the temp dir for this process, removed at exit. matplotlib reads the
    variable once, so it is put back right after the import (child processes see the user's).
    """
    first = "matplotlib" not in sys.modules
    if first and not os.environ.get("MPLCONFIGDIR"):
        folder = tempfile.mkdtemp(prefix="epiformer-matplotlib-")
        atexit.register(shutil.rmtree, folder, True)
        os.environ["MPLCONFIGDIR"] = folder
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        finally:
            del os.environ["MPLCONFIGDIR"]
    else:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    if first:
        # A matplotlibrc in the working folder (or $MATPLOTLIBRC) may turn LaTeX on: names from the
        # user's files would then be LaTeX source ('_' and '%' break it). A session that imported
        # matplotlib itself (a notebook) keeps its own settings.
        matplotlib.rcParams["text.usetex"] = False
    return plt


def plain(text) -> str:
    """``text`` (a name from a user's file: track, region, variant ID) as matplotlib draws it
    literally: every ``$`` escaped, so that two of them never start mathtext. Backslashes and
    ``_`` are literal outside mathtext, and LaTeX is off (:func:`import_pyplot`)."""
    return str(text).replace("$", r"\$")


def save_png(fig, path, *, dpi: float = DPI, bbox_inches=None) -> None:
    """Write ``fig`` to ``path`` as PNG atomically (a temporary file renamed into place, removed on
    any error; a full disk is one line naming the file), and close the figure whatever happens.

    ``bbox_inches="tight"`` crops the saved image to what is drawn; None keeps the figure's size.
    The same figure gives the same bytes.
    """
    from epiformer_cli.io.files import atomic_path

    plt = import_pyplot()
    try:
        # format="png": the temporary name ends in .tmp, from which matplotlib would guess nothing.
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches=bbox_inches)
    finally:
        plt.close(fig)
