"""htslib, through pysam, with htslib's own stderr messages off.

htslib prints warnings and errors straight to the C stderr (``[W::hts_idx_load3] The index file is
older than the data file``, ``[W::vcf_parse] Contig 'chrX' is not defined in the header``,
``[E::hts_open_format] ...``). The readers here raise one clear error instead, or log what a user
needs to know themselves, so every module that uses pysam imports it through :func:`pysam`.
"""

from __future__ import annotations


def pysam():
    """The ``pysam`` module, with htslib's verbosity set to 0 (its ``hts_verbose``: nothing
    printed). The setting is process-wide and survives a fork; setting it again costs nothing."""
    import pysam as module

    module.set_verbosity(0)
    return module
