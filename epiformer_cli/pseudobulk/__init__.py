"""From single-cell ATAC fragments to pseudo-bulk tracks per cell type (``epiformer pseudobulk``).

* :mod:`~epiformer_cli.pseudobulk.fragments`: the fragments format, read in parsed blocks;
* :mod:`~epiformer_cli.pseudobulk.cells`: the cell-type table (barcode, cell type, sample);
* :mod:`~epiformer_cli.pseudobulk.signal`: fragments -> per-base signal per cell type, in two
  passes of bounded memory;
* :mod:`~epiformer_cli.pseudobulk.qc`: ``qc.tsv`` and the QC figures.
"""
