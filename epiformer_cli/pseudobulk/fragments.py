"""Fragments files: the 10x Genomics / ArchR / SnapATAC2 format, read in large parsed batches.

One fragment per line, tab-separated::

    chr1    10066   10279   AAACGAAAGACACTTC-1   2

chrom, start, end (0-based, half-open), cell barcode, and the number of read pairs that gave this
fragment (its PCR duplicates; optional, 1 when absent); extra columns are ignored. Leading lines
starting with ``#`` (Cell Ranger's header) and one header line of column names are skipped. Plain,
BGZF or gzip.

The coordinates are already Tn5-shifted (Cell Ranger ATAC, ArchR and SnapATAC2 write the +4/-5
adjusted ends): the two Tn5 insertions of a fragment are the bases ``start`` and ``end - 1``.

Parsing is pyarrow's multithreaded CSV reader, streamed in blocks (memory does not grow with the
file); barcodes and chromosome names come dictionary-encoded, so each distinct one is looked up
once per block, not once per line.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError
from epiformer_cli.io.hts import compression

#: bytes of text parsed per block (pyarrow's block size): about 200,000 fragments
BLOCK_BYTES = 8 << 20
COLUMNS = ("chrom", "start", "end", "barcode", "count")


@dataclass
class FragmentBatch:
    """Parsed fragments: ``chrom_names[chrom_codes[i]]``, ``start[i]``, ``end[i]`` (0-based, half-open),
    ``barcode_names[barcode_codes[i]]``, ``count[i]`` read pairs; ``first_line`` is the file line of row 0."""

    chrom_names: List[str]
    chrom_codes: np.ndarray
    start: np.ndarray
    end: np.ndarray
    barcode_names: List[str]
    barcode_codes: np.ndarray
    count: np.ndarray
    first_line: int

    def __len__(self) -> int:
        return len(self.start)


def _layout(path: Path, gz: bool) -> Tuple[int, int]:
    """(lines to skip before the first fragment, columns of a fragment line)."""
    opener = gzip.open if gz else open
    skip = 0
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
            for line in handle:
                text = line.rstrip("\r\n")
                if not text or text.startswith("#"):
                    skip += 1
                    continue
                fields = text.split("\t")
                if len(fields) >= 3 and not fields[1].strip().isdigit() and skip < 1000:
                    skip += 1  # a line of column names (chrom start end barcode count)
                    continue
                return skip, len(fields)
    except (EOFError, OSError) as exc:
        raise InputFileError(f"{path}: the fragments file's compressed data is damaged or cut short ({exc}): "
                             "copy or download it again") from None
    raise InputFileError(f"{path}: the fragments file holds no fragments (only {skip} header or empty line(s))")


def read_fragments(path: str | os.PathLike, block_bytes: int = BLOCK_BYTES) -> Iterator[FragmentBatch]:
    """The fragments of ``path`` in file order, a block at a time.

    Raises:
        InputFileError: fewer than 4 columns, a line pyarrow cannot parse (quoted), a coordinate that
            is not a whole number, a truncated or damaged gzip (naming the file).
    """
    import pyarrow as pa
    import pyarrow.csv as pc

    path = Path(path)
    kind = compression(path)
    gz = kind in ("bgzf", "gzip")
    skip, n_columns = _layout(path, gz)
    if n_columns < 4:
        raise InputFileError(f"{path}:{skip + 1}: a fragment line needs chrom, start, end and barcode "
                             f"(tab-separated), this one has {n_columns} column(s): is it a fragments file?")
    names = list(COLUMNS[:min(n_columns, 5)]) + [f"extra{i}" for i in range(max(0, n_columns - 5))]
    dictionary = pa.dictionary(pa.int32(), pa.string())
    convert = pc.ConvertOptions(
        column_types={"chrom": dictionary, "start": pa.int64(), "end": pa.int64(), "barcode": dictionary,
                      "count": pa.int64()},
        include_columns=list(COLUMNS[:min(n_columns, 5)]))
    read = pc.ReadOptions(skip_rows=skip, column_names=names, block_size=block_bytes, use_threads=True)
    parse = pc.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, newlines_in_values=False)
    line = skip + 1
    try:
        source = pa.input_stream(str(path), compression="gzip" if gz else None)
        with pc.open_csv(source, read_options=read, parse_options=parse, convert_options=convert) as reader:
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                chroms, barcodes = batch.column(0), batch.column(3)
                count = (batch.column(4).to_numpy(zero_copy_only=False) if n_columns >= 5
                         else np.ones(batch.num_rows, dtype=np.int64))
                if chroms.null_count or barcodes.null_count or batch.column(1).null_count or batch.column(2).null_count:
                    raise InputFileError(f"{path}: an empty field near line {line:,}: every fragment needs chrom, "
                                         "start, end and barcode")
                yield FragmentBatch(
                    chrom_names=chroms.dictionary.to_pylist(), chrom_codes=chroms.indices.to_numpy(),
                    start=batch.column(1).to_numpy(), end=batch.column(2).to_numpy(),
                    barcode_names=barcodes.dictionary.to_pylist(), barcode_codes=barcodes.indices.to_numpy(),
                    count=count, first_line=line)
                line += batch.num_rows
    except pa.ArrowInvalid as exc:
        detail = str(exc).splitlines()[0]
        raise InputFileError(f"{path}: not a fragments file after line {line:,} ({detail}): expected chrom, "
                             "start, end, barcode[, count], tab-separated") from None
    except (EOFError, OSError) as exc:
        raise InputFileError(f"{path}: the fragments file's compressed data is damaged or cut short after line "
                             f"{line:,} ({exc}): copy or download it again") from None


def first_unsorted(batch: FragmentBatch, last: Optional[Tuple[str, int]]) -> Optional[int]:
    """Row of ``batch`` where the file stops being sorted by start within a chromosome (after
    ``last``, the previous batch's final (chrom, start)), or None."""
    codes, start = batch.chrom_codes, batch.start
    same = codes[1:] == codes[:-1]
    down = np.flatnonzero(same & (start[1:] < start[:-1]))
    row = int(down[0]) + 1 if len(down) else None
    if last is not None and batch.chrom_names[codes[0]] == last[0] and start[0] < last[1]:
        row = 0
    return row
