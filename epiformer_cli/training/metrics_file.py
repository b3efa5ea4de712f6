"""``metrics.tsv``, a training run's table: one row per validation (``split`` = ``valid``) and, at
the end of a complete run, one row for the test windows scored with the best model (``test``).

Columns: ``split, epoch, step, train_loss, loss, pearson, pearson_<track>..., lr, seconds,
windows_per_s``. ``loss`` and ``pearson`` are the split's Poisson loss per bin and Pearson r of
log(x + 1) averaged over tracks. The test row carries the epoch and step of the model it scored
(the best validation's), so ``epoch`` and ``step`` are numbers in every row; it has no
``train_loss``, ``lr`` or ``windows_per_s``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Sequence

SPLITS = ("valid", "test")


def columns(tracks: Sequence[str]) -> List[str]:
    """The table's columns for a model predicting ``tracks``, in order."""
    return (["split", "epoch", "step", "train_loss", "loss", "pearson"] + [f"pearson_{t}" for t in tracks]
            + ["lr", "seconds", "windows_per_s"])


def read_rows(path: Path) -> List[Dict[str, str]]:
    """The rows of ``path`` as strings ([] when there is no file yet)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [_with_split(row) for row in csv.DictReader(handle, delimiter="\t")]


def write_rows(path: Path, rows: Sequence[Dict[str, Any]], tracks: Sequence[str]) -> None:
    """Replace ``path`` with ``rows`` (floats with 6 significant digits), atomically: a run killed
    mid-write keeps the previous table."""
    from epiformer_cli.io.files import atomic_write_text

    names = columns(tracks)
    lines = ["\t".join(names)]
    for row in rows:
        lines.append("\t".join(_fmt(row.get(c, "")) for c in names))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _with_split(row: Dict[str, str]) -> Dict[str, str]:
    """A row of a table written before the ``split`` column (``valid_loss``, ``valid_pearson`` and
    an epoch ``test`` for the test row) in today's columns, so resuming such a run keeps its rows."""
    if "split" in row or "valid_loss" not in row:
        return row
    split = "test" if row.get("epoch") == "test" else "valid"
    renamed = {"loss": row.pop("valid_loss"), "pearson": row.pop("valid_pearson")}
    return {"split": split, **row, **renamed}
