"""`epiformer pseudobulk`: single-cell ATAC fragments + cell types -> one bigWig per cell type."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from epiformer_cli.cli.common import (
    FORCE_HELP, ChromsOption, FastaOption, ThreadsOption, apply_threads, handle_errors, progress_bars, require,
)


def register(app: typer.Typer) -> None:
    app.command("pseudobulk")(run)


@handle_errors
def run(
    fragments: Annotated[List[str], typer.Option("--fragments", "-f", metavar="[SAMPLE=]FILE",
                                                  help="A fragments file (Cell Ranger ATAC fragments.tsv.gz, ArchR, "
                                                       "SnapATAC2: chrom, start, end, barcode, count; plain or gzip); "
                                                       "repeat for several samples. SAMPLE= names its sample in the "
                                                       "table's sample column [default: the file name].")],
    cell_types: Annotated[Path, typer.Option("--cell-types", "-c", metavar="TABLE",
                                             help="TSV of barcode, cell_type[, sample] (a header naming them, or "
                                                  "none). Barcodes not in it are not cells.", readable=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; a killed run resumes there).")],
    fasta: FastaOption = None,
    signal: Annotated[str, typer.Option("--signal", help="insertions: Tn5 insertions per base (a fragment's first "
                                                         "and last base); coverage: fragments covering each base.")] = "insertions",
    normalize: Annotated[str, typer.Option("--normalize", help="cpm: per million fragments of the cell type "
                                                               "(comparable across cell types); none: raw counts.")] = "cpm",
    count_duplicates: Annotated[bool, typer.Option("--count-duplicates", help="Weigh each fragment by its count "
                                                                              "column (PCR duplicates) instead of "
                                                                              "once.")] = False,
    min_cells: Annotated[int, typer.Option("--min-cells", help="Refuse a cell type with fewer cells (too small a "
                                                               "pseudo-bulk to train on).")] = 20,
    min_fragments: Annotated[int, typer.Option("--min-fragments", help="Refuse a cell type with fewer fragments.")] = 100_000,
    chroms: ChromsOption = None,
    threads: ThreadsOption = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": the results of an earlier run in --out; and "
                                                        "discard the parts of a run with other settings.")] = False,
) -> None:
    """Pseudo-bulk accessibility per cell type from single-cell ATAC fragments, ready for `prepare`.

    Keeps the fragments of the barcodes in --cell-types, sums them per cell type (several samples
    at once: a sample column tells repeated barcodes apart) and writes into --out one bigWig per
    cell type (base resolution, the FASTA's chromosomes), targets.tsv (for `epiformer prepare
    --targets`), qc.tsv (cells, fragments, duplicates, enrichment) and two QC figures.

    Fragments are 0-based and already Tn5-shifted (as Cell Ranger ATAC, ArchR and SnapATAC2 write
    them): the insertions are the bases start and end - 1. Memory stays bounded by the longest
    chromosome, whatever the number of fragments; a killed run resumes per file and chromosome.
    """
    from epiformer_cli.jobs.pseudobulk import pseudobulk
    from epiformer_cli.options import PseudobulkOptions

    apply_threads(threads, torch=False, arrow=True)  # pyarrow's CSV reader; pseudobulk runs no model
    fasta = require(fasta, "--fasta", "EPIFORMER_FASTA")
    options = PseudobulkOptions(signal=signal, normalize=normalize, count_duplicates=count_duplicates,
                                min_cells=min_cells, min_fragments=min_fragments, chroms=chroms, force=force)
    with progress_bars(("reading", "fragments", None), ("signal", "bp", None)) as (reading, summing):
        pseudobulk(fragments, cell_types, fasta, out, options=options, progress=reading, signal_progress=summing)
