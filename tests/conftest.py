"""Shared fixtures: tiny files made in tmp_path, never downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_fasta(path: Path, records: dict[str, str], width: int = 60, newline: str = "\n") -> Path:
    """Write ``records`` (name -> sequence) as a FASTA with ``width``-column lines."""
    with open(path, "w", newline="") as handle:
        for name, seq in records.items():
            handle.write(f">{name}{newline}")
            for i in range(0, len(seq), width):
                handle.write(seq[i : i + width] + newline)
    return path


def write_bigwig(path: Path, chrom_sizes: dict[str, int], intervals: dict[str, list[tuple[int, int, float]]]) -> Path:
    """Write a bigWig with explicit (start, end, value) intervals per chromosome."""
    import pyBigWig

    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(chrom_sizes.items()))
    for chrom in chrom_sizes:
        entries = intervals.get(chrom, [])
        if entries:
            bw.addEntries([chrom] * len(entries), [s for s, _, _ in entries], ends=[e for _, e, _ in entries],
                          values=[float(v) for _, _, v in entries])
    bw.close()
    return path


@pytest.fixture
def random_seq():
    rng = np.random.default_rng(0)

    def make(length: int) -> str:
        return "".join(rng.choice(list("ACGT"), size=length))

    return make
