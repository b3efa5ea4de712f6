"""File formats, one module each: genome FASTA, bigWig, BED, VCF, and chromosome-name aliases."""
