"""epiformer: predict chromatin accessibility from DNA and conservation with the Epiformer model.

Importing this package is cheap (no torch): the heavy modules are imported by the functions that
need them, so ``epiformer --help`` stays fast. The notebook API (:mod:`epiformer_cli.api`) is
reachable from here and loads on first use::

    import epiformer_cli as epi
    epi.load_model(path)                                      # the model file's contents
    epi.import_model(checkpoint, "brain.pt", tracks=[...])    # a published checkpoint -> model file
    epi.predict_region(fasta, cons, model, chrom, start, end)  # 128 bp bins of a region, an array
    epi.score_variants(variants, fasta, cons, model)           # score-variants' TSV as a DataFrame
    epi.explain_regions(regions, fasta, cons, model, out)      # explain's contributions, as arrays
    epi.find_motifs(["explained/"], "motifs/")                 # TF-MoDISco + TOMTOM, motifs.tsv as a table
    epi.pseudobulk(["fragments.tsv.gz"], "cells.tsv", fasta, "pb/")  # bigWigs per cell type, qc.tsv as a table
    epi.evaluate(model, "eval/", data="store/")                # metrics.tsv as a table
"""

__version__ = "0.1.0"

_API = ("load_model", "import_model", "predict_region", "score_variants", "explain_regions", "find_motifs",
        "pseudobulk", "evaluate", "use_threads", "RegionPrediction")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """The notebook API on first use (PEP 562), so ``import epiformer_cli`` does not import torch."""
    if name in _API:
        from epiformer_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'epiformer_cli' has no attribute {name!r}")
