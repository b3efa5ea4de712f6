"""The demo's single-cell ATAC: a fragments file and a cell-type table drawn from its accessibility.

Each cell type's fragments are drawn where its expected coverage (``rules.expected_coverage``) says
the chromatin is open: fragment centres are Poisson events at ``FRAGMENT_DEPTH * expected /
READ_LENGTH`` per base (the same rate the demo's bulk tracks are drawn at, so a pseudo-bulk of all
its cells is as deep as those tracks), lengths come from a nucleosome-banded distribution, and each
fragment belongs to one of the type's cells (cells differ in depth). Ambient fragments of barcodes
that are not cells are spread over the genome, and PCR duplicates fill the count column. The file
is written as Cell Ranger ATAC writes it: sorted, Tn5-shifted, bgzipped, with a tabix index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from epiformer_cli.demo import rules
from epiformer_cli.demo.layout import Chrom, rng_for

#: cells per cell type (a pseudo-bulk of each)
CELLS: Dict[str, int] = {"microglia": 300, "neuron": 400, "oligodendrocyte": 250}
#: fragment centres per read centre of the bulk tracks' rate
FRAGMENT_DEPTH = 5.0
#: barcodes that are not cells (empty droplets), and the share of fragments they take
AMBIENT_BARCODES = 2000
AMBIENT_FRACTION = 0.05
#: fragment lengths: nucleosome-free (30 bp + log-normal, median 70 bp), mono- and di-nucleosome bands
LENGTH_MIX = (0.55, 0.33, 0.12)
#: mean extra read pairs of a fragment (its PCR duplicates, Poisson)
DUPLICATES = 0.3


def _barcodes(rng: np.random.Generator, n: int, taken: set) -> List[str]:
    out: List[str] = []
    letters = np.array(list("ACGT"))
    while len(out) < n:
        code = "".join(letters[rng.integers(0, 4, 16)]) + "-1"
        if code not in taken:
            taken.add(code)
            out.append(code)
    return out


def _lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.choice(3, size=n, p=LENGTH_MIX)
    free = 30 + np.exp(rng.normal(np.log(40), 0.5, n))  # above 30 bp, without a pile at the edge
    mono = rng.normal(200, 25, n)
    di = rng.normal(390, 35, n)
    return np.clip(np.where(kind == 0, free, np.where(kind == 1, mono, di)), 30, 1000).astype(np.int64)


def draw_cells(seed: int) -> Tuple[Dict[str, List[str]], List[str]]:
    """(cell type -> its cell barcodes, ambient barcodes), all distinct."""
    rng = rng_for(seed, "cells")
    taken: set = set()
    cells = {t: _barcodes(rng, CELLS[t], taken) for t in rules.TRACKS}
    return cells, _barcodes(rng, AMBIENT_BARCODES, taken)


def draw_fragments(chroms: Sequence[Chrom], seed: int) -> List[Tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per chromosome: (name, start, end, barcode index, count), sorted by start, 0-based half-open.

    Barcode indices run over the cells of every type in ``rules.TRACKS`` order, then the ambient
    barcodes (see :func:`draw_cells`)."""
    offsets = np.cumsum([0] + [CELLS[t] for t in rules.TRACKS])
    out = []
    for c in chroms:
        starts, ends, owners = [], [], []
        for k, t in enumerate(rules.TRACKS):
            rng = rng_for(seed, "fragments", c.name, t)
            centres = np.repeat(np.arange(c.size), rng.poisson(FRAGMENT_DEPTH * c.expected[t] / rules.READ_LENGTH))
            weights = rng.lognormal(0, 0.5, CELLS[t])
            owners.append(offsets[k] + rng.choice(CELLS[t], size=len(centres), p=weights / weights.sum()))
            length = _lengths(rng, len(centres))
            starts.append(centres - length // 2)
            ends.append(centres - length // 2 + length)
        rng = rng_for(seed, "ambient", c.name)
        n_cell = sum(len(s) for s in starts)
        n_ambient = int(n_cell * AMBIENT_FRACTION)
        centres = rng.integers(0, c.size, n_ambient)
        length = _lengths(rng, n_ambient)
        starts.append(centres - length // 2)
        ends.append(centres - length // 2 + length)
        owners.append(offsets[-1] + rng.integers(0, AMBIENT_BARCODES, n_ambient))
        start, end, owner = np.concatenate(starts), np.concatenate(ends), np.concatenate(owners)
        inside = (start >= 0) & (end <= c.size)
        start, end, owner = start[inside], end[inside], owner[inside]
        order = np.lexsort((owner, end, start))
        count = 1 + rng.poisson(DUPLICATES, len(order))
        out.append((c.name, start[order], end[order], owner[order], count))
    return out


def write_fragments(path: Path, table: Path, chroms: Sequence[Chrom], seed: int) -> int:
    """Write ``path`` (bgzipped, tabix-indexed fragments) and ``table`` (barcode, cell_type);
    returns the number of fragments."""
    import pysam

    cells, ambient = draw_cells(seed)
    barcodes = np.array([b for t in rules.TRACKS for b in cells[t]] + ambient)
    with open(table, "w") as handle:
        handle.write("barcode\tcell_type\n")
        for t in rules.TRACKS:
            handle.writelines(f"{b}\t{t}\n" for b in cells[t])
    plain = path.with_suffix("")  # fragments.tsv
    n = 0
    with open(plain, "w") as handle:
        handle.write("# id=epiformer-demo\n# description=synthetic single-cell ATAC of the demo genome\n")
        for name, start, end, owner, count in draw_fragments(chroms, seed):
            lines = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(
                f"{name}\t", start.astype(str)), "\t"), np.char.add(end.astype(str), "\t")),
                np.char.add(barcodes[owner], "\t")), np.char.add(count.astype(str), "\n"))
            handle.write("".join(lines.tolist()))
            n += len(start)
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    pysam.tabix_index(str(path), preset="bed", force=True)
    return n
