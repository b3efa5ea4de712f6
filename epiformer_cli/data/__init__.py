"""Data layout shared by every job: window tiling, input encoding, reverse complement."""
