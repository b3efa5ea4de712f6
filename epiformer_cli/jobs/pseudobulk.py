"""The pseudobulk job: single-cell ATAC fragments -> one bigWig per cell type, ready for ``prepare``.

``pseudobulk --fragments F [F ...] --cell-types TABLE --fasta FA --out OUT`` reads the fragments
files of one or more samples (:mod:`~epiformer_cli.pseudobulk.fragments`), keeps the fragments of
the cells of the table (:mod:`~epiformer_cli.pseudobulk.cells`), sums them per cell type
(:mod:`~epiformer_cli.pseudobulk.signal`) and writes into ``OUT``:

* ``<cell type>.bw``: Tn5 insertions (or fragment coverage) per base, per million fragments of the
  cell type (``--normalize cpm``) or raw; chromosome names and lengths of the FASTA;
* ``targets.tsv``: the sheet ``epiformer prepare --targets`` reads as it is;
* ``qc.tsv``: cells, fragments, duplicates, fragments per cell, enrichment per cell type
  (:mod:`~epiformer_cli.pseudobulk.qc`);
* ``fragment_lengths.png``, ``fragments_per_cell.png``;
* ``pseudobulk.json``: what the run read and wrote (written last: the mark of a finished run).

The work is kept in ``OUT/pseudobulk.parts`` (a :class:`~epiformer_cli.runs.ResumableRun`): one
piece per fragments file (its cells' fragments sorted by chromosome), then one per chromosome (its
signal per cell type), so a killed run resumes at the first unfinished file or chromosome.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.errors import ChromosomeMismatchError, InputFileError, UsageError
from epiformer_cli.options import PseudobulkOptions
from epiformer_cli.progress import Progress, or_silent

log = logging.getLogger(__name__)

KIND = "epiformer-pseudobulk"
FORMAT_VERSION = 1
PARTS = "pseudobulk.parts"
PROVENANCE = "pseudobulk.json"
RECORDS = "records"


@dataclass
class PseudobulkSummary:
    """What a run wrote: the cell types (a bigWig each), their QC rows, the files, the counts read."""

    out: Path
    types: List[str] = field(default_factory=list)
    qc: list = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    lines: int = 0
    in_cells: int = 0
    resumed: int = 0
    seconds: float = 0.0

    def bigwig(self, cell_type: str) -> Path:
        from epiformer_cli.names import file_part

        return self.out / f"{file_part(cell_type)}.bw"


class _ChromIndex:
    """Fragments-file chromosome name -> index among the chosen FASTA chromosomes (aliases
    resolved once per name), -1 when the run does not write it."""

    def __init__(self, chosen: Sequence[str]) -> None:
        from epiformer_cli.io.chroms import NameResolver

        self._resolve = NameResolver(chosen)
        self._index = {name: i for i, name in enumerate(chosen)}
        self._cache: Dict[str, int] = {}

    def get(self, name: str, default: int = -1) -> int:
        found = self._cache.get(name)
        if found is None:
            resolved = self._resolve(name)
            found = self._cache[name] = self._index[resolved] if resolved is not None else default
        return found


def pseudobulk(fragments: Sequence[str | Path], cell_types: str | Path, fasta: str | Path, out: str | Path, *,
               options: PseudobulkOptions = PseudobulkOptions(), progress: Optional[Progress] = None,
               signal_progress: Optional[Progress] = None) -> PseudobulkSummary:
    """Single-cell fragments -> per-cell-type bigWigs, targets.tsv, qc.tsv and plots (module docstring).

    Args:
        fragments: fragments files (``PATH`` or ``SAMPLE=PATH``; see :mod:`~epiformer_cli.pseudobulk.cells`).
        cell_types: the cell-type table (barcode, cell type[, sample]).
        fasta: the genome the fragments were aligned to (chromosome names and lengths).
        out: the output folder (created; a killed run resumes there).
        options: signal, normalisation, duplicates, minimum cells and fragments, chromosomes, force.
        progress: ``progress(n)`` as fragment lines are read; signal_progress: ``progress(bp)`` as
            chromosomes are summed.

    Raises:
        UsageError / InputFileError: bad files, no barcode or chromosome in common, a cell type
            below ``--min-cells``/``--min-fragments`` (naming it), an empty ``--chroms`` chromosome.
    """
    from epiformer_cli.io.chroms import resolve_names
    from epiformer_cli.io.files import check_input_file
    from epiformer_cli.io.genome import Genome
    from epiformer_cli.io.identity import file_identity
    from epiformer_cli.pseudobulk.cells import check_samples, file_sample, read_cell_table
    from epiformer_cli.runs import ResumableRun, check_output_dir, remove_finished, replace_or_refuse

    started = time.perf_counter()
    out = Path(out)
    if not fragments:
        raise UsageError("give at least one --fragments file (fragments.tsv.gz of Cell Ranger ATAC, ArchR or SnapATAC2)")
    specs = [file_sample(str(f)) for f in fragments]
    samples = [s for s, _ in specs]
    paths = [check_input_file(p, "fragments file") for _, p in specs]
    seen: Dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            raise UsageError(f"--fragments {p} is given twice: give each fragments file once")
        seen[p.resolve()] = p
    table = read_cell_table(cell_types)
    check_samples(table, samples, paths)
    genome = Genome(fasta)
    sizes = genome.chrom_sizes
    chosen = (resolve_names(list(options.chroms), list(sizes), "--chroms", str(fasta)) if options.chroms
              else [c for c in sizes if sizes[c] > 0])
    inputs = [("--fragments", p) for p in paths] + [("--cell-types", table.path), ("--fasta", Path(fasta))]
    check_output_dir(out, inputs=inputs, marks=(PROVENANCE, PARTS))
    replace_or_refuse(out, holds=f"pseudobulk results ({out / PROVENANCE})" if (out / PROVENANCE).exists() else None,
                      force=options.force, fix="choose another --out, or --force to replace them")
    _refuse_small_table(table, options)
    remove_finished(out, PROVENANCE)

    run = ResumableRun(out / PARTS, kind=KIND, format_version=FORMAT_VERSION,
                       settings={"tool": __version__,
                                 "inputs": {"fragments": [file_identity(p) for p in paths], "samples": samples,
                                            "cell_types": file_identity(table.path),
                                            "fasta": {c: sizes[c] for c in chosen}},
                                 "options": options.fingerprint()},
                       what="pseudobulk parts folder", owned=(RECORDS,), force=options.force,
                       fix="run the same command to resume, or --force to discard the parts")
    if run.resumed:
        log.info("resuming: reusing the files and chromosomes finished in %s", run.root)
    summary = PseudobulkSummary(out, types=list(table.types))
    index = _ChromIndex(chosen)
    counts = _first_pass(run, paths, samples, table, index, [sizes[c] for c in chosen], options, progress, summary)
    _check_counts(counts, paths, table, chosen, genome, options)
    _second_pass(run, counts, chosen, sizes, len(table.types), options, signal_progress, summary)
    _write_outputs(out, run, counts, chosen, sizes, table, paths, samples, Path(fasta), options, summary)
    run.discard()
    summary.seconds = time.perf_counter() - started
    log.info("pseudobulk: %s fragments read, %s of cells; %d cell type(s) in %.1f s; wrote %s",
             f"{summary.lines:,}", f"{summary.in_cells:,}", len(summary.types), summary.seconds,
             ", ".join(str(out / f) for f in summary.files[:4]) + (", ..." if len(summary.files) > 4 else ""))
    return summary


def _refuse_small_table(table, options: PseudobulkOptions) -> None:
    """Cell types with fewer rows in the table than --min-cells cannot reach it: refused before reading."""
    rows = table.cells_per_type()
    small = [f"{t} ({int(n)} cells)" for t, n in zip(table.types, rows) if n < options.min_cells]
    if small:
        raise UsageError(_small_message(small, "--min-cells", options.min_cells, table.path, "cells"))


def _small_message(small: List[str], option: str, value: int, table, what: str) -> str:
    shown = ", ".join(small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
    return (f"too small a pseudo-bulk to train on: {shown} below {option} {value:,}: merge "
            f"{'it' if len(small) == 1 else 'them'} with a related cell type or drop {'its' if len(small) == 1 else 'their'} "
            f"rows from {table}, or lower {option}")


# ---- first pass: each file's cell fragments, by chromosome ------------------------------------------
def _file_piece(i: int) -> str:
    return f"file.{i}.npz"


def _first_pass(run, paths, samples, table, index, chrom_lengths, options, progress, summary):
    from epiformer_cli.pseudobulk.signal import FileCounts, sort_file

    advance = or_silent(progress)
    counts: List[FileCounts] = []
    for i, (path, sample) in enumerate(zip(paths, samples)):
        folder = run.path(RECORDS) / f"f{i}"
        if run.is_done(_file_piece(i)):
            found = FileCounts.from_arrays(_load(run, _file_piece(i)))
            counts.append(found)
            summary.resumed += 1
            advance(found.lines)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        log.info("reading %s%s", path, f" (sample {sample})" if table.has_samples else "")
        found = sort_file(path, table.lookup(sample), len(table.types), index, chrom_lengths, folder,
                          count_duplicates=options.count_duplicates, progress=advance)
        if found.unsorted_line is not None:
            log.warning("%s is not sorted by position (line %s); pseudobulk does not need it to be", path,
                        f"{found.unsorted_line:,}")
        _save(run, _file_piece(i), found.to_arrays())
        counts.append(found)
    summary.lines = sum(c.lines for c in counts)
    summary.in_cells = sum(c.in_cells for c in counts)
    return counts


def _save(run, name: str, arrays: Dict[str, np.ndarray]) -> None:
    run.write(name, lambda handle: np.savez(handle, **arrays))


def _load(run, name: str):
    return dict(np.load(io.BytesIO(run.read_bytes(name)), allow_pickle=False))


def _check_counts(counts, paths, table, chosen, genome, options: PseudobulkOptions) -> None:
    """Refuse what the first pass shows cannot make a pseudo-bulk (one line each)."""
    for path, c in zip(paths, counts):
        if c.in_cells == 0 and c.other_chroms:
            others = sorted(c.other_chroms, key=lambda n: -c.other_chroms[n])
            raise ChromosomeMismatchError(
                f"{path}: no chromosome in common with {genome.path} (the fragments are on "
                f"{', '.join(others[:5])}; the FASTA has {', '.join(chosen[:5])}"
                f"{'; --chroms chose these' if options.chroms else ''}): use the FASTA the fragments were aligned to")
        if c.in_cells == 0:
            raise InputFileError(
                f"{path}: none of its {c.lines:,} fragments is of a barcode of {table.path}: check that the table's "
                "barcodes are written as in the fragments file (a '-1' suffix, a 'sample#' prefix) and, with a "
                "sample column, that the file is given as SAMPLE=PATH")
    for path, c in zip(paths, counts):
        if c.other_chroms:
            skipped = sum(c.other_chroms.values())
            names = sorted(c.other_chroms, key=lambda n: -c.other_chroms[n])
            log.info("%s: skipped %s fragments of cells on %d chromosome(s) not written (%s%s)", path,
                     f"{skipped:,}", len(names), ", ".join(names[:3]), ", ..." if len(names) > 3 else "")
    n_types = len(table.types)
    cells = np.zeros(n_types, np.int64)
    fragments = np.zeros(n_types, np.int64)
    for c in counts:
        cells += np.bincount(c.cell_types, minlength=n_types)
        fragments += c.fragments
    few = [f"{t} ({int(n)} cells with fragments)" for t, n in zip(table.types, cells) if n < options.min_cells]
    if few:
        raise UsageError(_small_message(few, "--min-cells", options.min_cells, table.path, "cells"))
    few = [f"{t} ({int(n):,} fragments)" for t, n in zip(table.types, fragments) if n < options.min_fragments]
    if few:
        raise UsageError(_small_message(few, "--min-fragments", options.min_fragments, table.path, "fragments"))
    if options.chroms:
        per_chrom = sum(c.per_chrom for c in counts)
        empty = [name for name, n in zip(chosen, per_chrom) if n == 0]
        if empty:
            raise UsageError(f"--chroms {', '.join(empty[:5])}: no fragment of a cell lies on "
                             f"{'it' if len(empty) == 1 else 'them'} (in {', '.join(str(p) for p in paths[:3])}): "
                             "leave it out of --chroms, or check the fragments files")


# ---- second pass: each chromosome's signal per cell type --------------------------------------------
def _chrom_piece(chrom: str) -> str:
    from epiformer_cli.names import file_part

    return f"chrom.{file_part(chrom)}.npz"


def _second_pass(run, counts, chosen, sizes, n_types, options, signal_progress, summary) -> None:
    from epiformer_cli.pseudobulk.signal import chromosome_signal, record_path

    advance = or_silent(signal_progress)
    total = sum(sizes[c] for c in chosen)
    advance(0, total=total)
    folders = [run.path(RECORDS) / f"f{i}" for i in range(len(counts))]
    for k, chrom in enumerate(chosen):
        n = int(sum(c.per_chrom[k] for c in counts))
        if n == 0 or run.is_done(_chrom_piece(chrom)):
            advance(sizes[chrom])
            continue
        files = []
        for folder, c in zip(folders, counts):
            path = record_path(folder, k)
            have = path.stat().st_size if path.exists() else 0
            if have != int(c.bytes[k]):
                raise InputFileError(f"{run.root}: the sorted fragments of {chrom} are missing or damaged "
                                     f"({have:,} of {int(c.bytes[k]):,} bytes): run again with --force")
            if have:
                files.append(path)
        signal = chromosome_signal(files, sizes[chrom], n_types, signal=options.signal)
        _save(run, _chrom_piece(chrom), signal.to_arrays())
        for path in files:  # the chromosome's signal is kept: its fragments are no longer needed
            path.unlink(missing_ok=True)
        advance(sizes[chrom])


# ---- outputs ----------------------------------------------------------------------------------------
def _type_runs(run, pieces: Sequence[str], t: int, scale: float):
    """One cell type's entries, chromosome by chromosome (one piece in memory): (chrom, starts, ends,
    values in the bigWig's units)."""
    for chrom in pieces:
        z = np.load(io.BytesIO(run.read_bytes(_chrom_piece(chrom))), allow_pickle=False)
        yield chrom, z[f"s{t}"], z[f"e{t}"], z[f"v{t}"] * scale


def training_scale(signal: np.ndarray, written: np.ndarray, genome_bp: int, normalize: str) -> np.ndarray:
    """targets.tsv's ``scale`` per cell type: the factor that puts the genome-wide mean of the track
    that ``prepare`` stores (the mean of each 128 bp bin) at 1 per base.

    The Poisson loss fits targets of about that size well, and targets in the bigWigs' own units
    badly: per million fragments, a base of hg38 holds about 0.0006 insertions, one of the 4.6 Mb
    demo genome 0.4, and the sum over a bin 128 times that. Measured on the demo (tiny preset, 10
    epochs, seed 0): test Pearson 0.950 and cell-type specificity 0.95 with this scale, 0.684 and
    0.33 with the bigWigs' sums per bin (about 0.4 x 128 per bin there). With ``cpm`` each cell type gets its own factor
    (the same one for insertions: genome / 2,000,000); with ``none`` one factor for all (from the
    mean of their totals), so their depths stay as counted.

    Args:
        signal: (types,) every base's count summed over the genome (insertions or depth).
        written: (types,) the factor from counts to the bigWigs' values (1e6 / fragments, or 1).
        genome_bp: the bases of the chromosomes written.
        normalize: ``cpm`` or ``none``.
    """
    totals = np.asarray(signal, np.float64) * np.asarray(written, np.float64)  # the bigWigs' sums
    if normalize == "none":
        totals = np.full_like(totals, totals.mean())
    return np.where(totals > 0, genome_bp / np.where(totals > 0, totals, 1), 1.0)


def _write_outputs(out: Path, run, counts, chosen, sizes, table, paths, samples, fasta: Path,
                   options: PseudobulkOptions, summary: PseudobulkSummary) -> None:
    from epiformer_cli.io import faults
    from epiformer_cli.io.bigwig import MIN_ENTRY_BYTES, BigWigBatch, write_bigwig_runs
    from epiformer_cli.io.files import atomic_output, atomic_write_text
    from epiformer_cli.names import file_part
    from epiformer_cli.pseudobulk.qc import CellTypeQC, nucleosome_ratio, write_qc
    from epiformer_cli.pseudobulk.signal import QC_BIN, top_bins_fraction

    n_types = len(table.types)
    fragments = sum(c.fragments for c in counts)
    reads = sum(c.reads for c in counts)
    lengths = sum(c.lengths for c in counts)
    weights = reads if options.count_duplicates else fragments
    scale = (1e6 / np.maximum(weights, 1)) if options.normalize == "cpm" else np.ones(n_types)
    pieces = [c for k, c in enumerate(chosen) if int(sum(x.per_chrom[k] for x in counts)) > 0]
    entries = np.zeros(n_types, np.int64)
    covered = np.zeros(n_types, np.int64)
    signal = np.zeros(n_types, np.float64)  # the sum of every base's count (insertions or depth)
    bin_values: List[List[np.ndarray]] = [[] for _ in range(n_types)]
    bin_counts: List[List[np.ndarray]] = [[] for _ in range(n_types)]
    for chrom in pieces:
        z = _load(run, _chrom_piece(chrom))
        for t in range(n_types):
            entries[t] += len(z[f"s{t}"])
            widths = z[f"e{t}"].astype(np.int64) - z[f"s{t}"]
            covered[t] += int(widths.sum())
            signal[t] += float((widths * z[f"v{t}"].astype(np.float64)).sum())
            bin_values[t].append(z[f"bv{t}"])
            bin_counts[t].append(z[f"bc{t}"])
    out.mkdir(parents=True, exist_ok=True)
    chrom_sizes = {c: sizes[c] for c in chosen}
    names = [f"{file_part(t)}.bw" for t in table.types]
    faults.require_free_space(out, MIN_ENTRY_BYTES * int(entries.sum()), f"writing {n_types} bigWig(s) into {out}",
                              MIN_ENTRY_BYTES * int(entries.max(initial=0)))
    with BigWigBatch() as batch:  # all appear together, or none
        for t in range(n_types):
            write_bigwig_runs(out / names[t], chrom_sizes, _type_runs(run, pieces, t, scale[t]), batch=batch)
    sheet_scale = training_scale(signal, scale, sum(sizes[c] for c in chosen), options.normalize)
    with atomic_output(out / "targets.tsv", "w") as handle:
        handle.write("name\tpath\tscale\tclip\tstat\n")
        for t, name in enumerate(table.types):
            handle.write(f"{name}\t{names[t]}\t{sheet_scale[t]:.6g}\t\tmean\n")
    total_bins = sum(-(-sizes[c] // QC_BIN) for c in chosen)
    cell_types = np.concatenate([c.cell_types for c in counts])
    cell_fragments = np.concatenate([c.cell_fragments for c in counts])
    per_cell = [cell_fragments[cell_types == t] for t in range(n_types)]
    summary.qc = [CellTypeQC(cell_type=name, cells=len(per_cell[t]), fragments=int(fragments[t]),
                             read_pairs=int(reads[t]),
                             fragments_per_cell=float(np.median(per_cell[t])) if len(per_cell[t]) else float("nan"),
                             top1pct_fraction=top_bins_fraction(bin_values[t], bin_counts[t], total_bins),
                             nucleosome_ratio=nucleosome_ratio(lengths[t]), bigwig=names[t])
                  for t, name in enumerate(table.types)]
    write_qc(out / "qc.tsv", summary.qc)
    summary.files = [*names, "targets.tsv", "qc.tsv"]
    try:
        from epiformer_cli.pseudobulk.qc import plot_fragments_per_cell, plot_lengths

        plot_lengths(out / "fragment_lengths.png", table.types, lengths)
        plot_fragments_per_cell(out / "fragments_per_cell.png", table.types, per_cell)
        summary.files += ["fragment_lengths.png", "fragments_per_cell.png"]
    except ImportError:
        from epiformer_cli.plotting import PLOTS_EXTRA

        log.warning("matplotlib is not installed: no QC figures (%s)", PLOTS_EXTRA)
    provenance = {"epiformer_version": __version__,
                  "fragments": [{"path": str(p), "sample": s, "lines": c.lines, "fragments_of_cells": c.in_cells}
                                for p, s, c in zip(paths, samples, counts)],
                  "cell_types": str(table.path), "fasta": str(fasta), "chroms": chosen,
                  "options": options.to_dict(),
                  "convention": "fragments 0-based half-open, Tn5-shifted; insertions at start and end - 1",
                  "units": ("per million fragments of the cell type" if options.normalize == "cpm" else "counts")
                  + (" (read pairs)" if options.count_duplicates else ""),
                  "tracks": list(table.types), "files": summary.files}
    atomic_write_text(out / PROVENANCE, json.dumps(provenance, indent=1) + "\n")
