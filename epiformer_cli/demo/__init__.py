"""A small synthetic genome whose accessibility is a known function of its sequence.

``generate_demo(out_dir, seed=0)`` writes, in a few seconds: a soft-masked FASTA of four
chromosomes (~4.6 Mb, with N gaps), a phastCons-like conservation bigWig, one pseudo-bulk ATAC
bigWig per cell type (microglia, neuron, oligodendrocyte) with a Basenji-style targets sheet, a
blacklist, a bgzipped and indexed VCF with its truth table, and RULES.md stating the rule:

- motif hits of real JASPAR matrices drive accessibility: CTCF in every cell type; SPI1 and CEBPB
  in microglia (cooperatively); FOS::JUN in neurons (weakly in microglia); GATA1 in
  oligodendrocytes; on top of a low, GC-dependent background;
- each hit makes a Gaussian peak (sd 60 bp); coverage is Poisson read noise around that;
- causal variants break a motif hit; neutral ones lie far from every hit.

Core code: no terminal, no torch.
"""

from epiformer_cli.demo.generator import DemoData, generate_demo

__all__ = ["DemoData", "generate_demo"]
