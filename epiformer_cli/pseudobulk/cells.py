"""The cell-type table: which barcodes are cells, of which cell type, in which sample.

A TSV, plain or gzipped, the way a clustering exports it (ArchR ``getCellColData``, Scanpy
``adata.obs``, Seurat ``meta.data``)::

    barcode              cell_type       sample
    AAACGAAAGACACTTC-1   Microglia       donor1
    AAACGAAAGCGAGCTA-1   Oligodendrocyte donor1

``barcode`` and ``cell_type`` (also read as ``cell``/``celltype``/``cluster``/``label``) are
required, ``sample`` is optional; a table without a header is read as ``barcode, cell type[,
sample]``. Barcodes not in the table are not cells, and their fragments are skipped.

Without a sample column, a row names its barcode in every fragments file: the same barcode in two
files is two cells of that type (10x barcodes repeat across samples). With one, a row names the
barcode of that sample only, and each fragments file is one sample (``--fragments NAME=PATH``, or
the file's name without ``.tsv.gz``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.files import check_input_file
from epiformer_cli.io.hts import text_lines
from epiformer_cli.names import check_name, check_names

BARCODE_COLUMNS = ("barcode", "barcodes", "cell_barcode", "cb", "cell_id", "obs_names")
TYPE_COLUMNS = ("cell_type", "celltype", "cell type", "cluster", "label", "annotation", "cell")
SAMPLE_COLUMNS = ("sample", "sample_id", "donor", "library")


@dataclass
class CellTable:
    """The cells of a cell-type table.

    Attributes:
        path: the table.
        types: the cell types, in order of first appearance (a bigWig each).
        has_samples: whether the table has a sample column.
        rows: ``(sample or "", barcode) -> cell-type index``.
    """

    path: Path
    types: List[str]
    has_samples: bool
    rows: Dict[Tuple[str, str], int] = field(repr=False, default_factory=dict)

    @property
    def samples(self) -> List[str]:
        return sorted({s for s, _ in self.rows}) if self.has_samples else []

    def lookup(self, sample: str) -> Dict[str, int]:
        """``barcode -> cell-type index`` for the barcodes of ``sample`` (every row without samples)."""
        key = sample if self.has_samples else ""
        return {barcode: t for (s, barcode), t in self.rows.items() if s == key}

    def cells_per_type(self) -> np.ndarray:
        """(types,) rows of the table per cell type."""
        return np.bincount(np.fromiter(self.rows.values(), dtype=np.int64, count=len(self.rows)),
                           minlength=len(self.types))


def _column(header: Sequence[str], names: Sequence[str]) -> Optional[int]:
    for i, h in enumerate(header):
        if h in names:
            return i
    return None


def read_cell_table(path: str | os.PathLike) -> CellTable:
    """Read a cell-type table (see the module docstring).

    Raises:
        InputFileError: no barcode or cell-type column, a row without both, a barcode given two cell
            types, a cell-type name that cannot name a track.
    """
    path = check_input_file(path, "cell-type table")
    numbered = [(n, ln) for n, ln in text_lines(path, "cell-type table") if ln.strip() and not ln.startswith("#")]
    if not numbered:
        raise InputFileError(f"{path}: the cell-type table is empty: give one row per cell (barcode, cell type)")
    sep = "\t" if "\t" in numbered[0][1] else ","
    first = [c.strip().strip('"').lower() for c in numbered[0][1].split(sep)]
    bc, ct, sm = _column(first, BARCODE_COLUMNS), _column(first, TYPE_COLUMNS), _column(first, SAMPLE_COLUMNS)
    if bc is not None or ct is not None:
        if bc is None or ct is None:
            raise InputFileError(
                f"{path}: the header names no {'barcode' if bc is None else 'cell_type'} column: name the columns "
                "barcode, cell_type (and sample), or give a table without a header (barcode, cell type[, sample])")
        body = numbered[1:]
    else:  # no header: barcode, cell type[, sample]
        if len(first) < 2:
            raise InputFileError(f"{path}:{numbered[0][0]}: a row needs a barcode and a cell type (tab-separated)")
        bc, ct, sm = 0, 1, (2 if len(first) >= 3 else None)
        body = numbered
    need = max(bc, ct, sm if sm is not None else 0)
    types: Dict[str, int] = {}
    rows: Dict[Tuple[str, str], int] = {}
    for lineno, line in body:
        cells = [c.strip().strip('"') for c in line.split(sep)]
        if len(cells) <= need or not cells[bc] or not cells[ct] or (sm is not None and not cells[sm]):
            raise InputFileError(f"{path}:{lineno}: every row needs a barcode, a cell type"
                                 f"{' and a sample' if sm is not None else ''}: fix the row")
        name = cells[ct]
        if name not in types:
            check_name(name, f"{path}:{lineno}", what="cell type", error=InputFileError,
                       fix=": rename the cell type (it names a bigWig and a track)")
            types[name] = len(types)
        key = (cells[sm] if sm is not None else "", cells[bc])
        old = rows.setdefault(key, types[name])
        if old != types[name]:
            where = f" of sample {key[0]}" if sm is not None else ""
            raise InputFileError(f"{path}:{lineno}: barcode {key[1]}{where} is given two cell types "
                                 f"({list(types)[old]} and {name}): keep one row per cell")
    if not rows:
        raise InputFileError(f"{path}: the cell-type table lists no cells (only a header)")
    check_names(list(types), str(path), what="cell type", error=InputFileError)
    return CellTable(path=path, types=list(types), has_samples=sm is not None, rows=rows)


def file_sample(spec: str) -> Tuple[str, Path]:
    """``NAME=PATH`` -> (NAME, PATH); a bare path -> (its name without ``.tsv.gz``/``.bed.gz``..., PATH).

    A path that itself holds '=' is read as a path when it exists."""
    if "=" in spec and not Path(spec).exists():
        name, _, rest = spec.partition("=")
        if name and rest:
            return name, Path(rest)
    path = Path(spec)
    stem = path.name
    for suffix in (".gz", ".bgz", ".tsv", ".bed", ".txt", ".csv"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem, path


def check_samples(table: CellTable, samples: Sequence[str], files: Sequence[Path]) -> None:
    """Refuse fragments files whose sample the table does not name (when it has a sample column),
    and two files of one sample (their barcodes would be two cells or one, by chance)."""
    seen: Dict[str, Path] = {}
    for sample, path in zip(samples, files):
        if sample in seen:
            raise UsageError(f"--fragments {seen[sample]} and {path} are both sample {sample!r}: name each "
                             "file's sample (--fragments NAME=PATH)")
        seen[sample] = path
    if not table.has_samples:
        return
    known = set(table.samples)
    for sample, path in zip(samples, files):
        if sample not in known:
            shown = ", ".join(sorted(known)[:5]) + (", ..." if len(known) > 5 else "")
            raise UsageError(f"--fragments {path}: sample {sample!r} is not in the sample column of {table.path} "
                             f"({shown}): give the file as SAMPLE=PATH (e.g. --fragments {sorted(known)[0]}={path})")
