"""Time and peak memory of `epiformer motifs` on 1,000 and 10,000 explained regions.

The explain folders are synthetic (no model runs): 500 bp regions of random sequence, each with one
to three sites of four consensus motifs planted in the first track's hypothetical contributions
(gradient-like: mean over bases removed), small noise elsewhere, as ``explain --method gradient``
stores them. Each size runs the real command in a child process; its wall time and peak resident
memory (the largest of the process and the children modisco-lite forks) are printed, with the
patterns it found and what they were named.

    python benchmarks/bench_motifs.py [--sizes 1000,10000] [--tracks 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import write_explain_folder  # noqa: E402

#: consensus sites planted (SPI1-, CTCF-, GATA- and AP-1-like)
SITES = ("AAAAAGAGGAAGTG", "CCGCGNGGNGGCAG".replace("N", "C"), "AGATAAGA", "TGACTCA")


def make_folder(folder: Path, n_regions: int, n_tracks: int, length: int = 500, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    regions, blocks = [], []
    for i in range(n_regions):
        seq = rng.choice(list("ACGT"), size=length)
        m = rng.normal(0, 0.02, size=(n_tracks, 4, length))
        taken = np.zeros(length, dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            site = SITES[int(rng.integers(len(SITES)))]
            if rng.random() < 0.5:
                site = site[::-1].translate(str.maketrans("ACGT", "TGCA"))
            at = int(rng.integers(100, length - 100 - len(site)))
            if taken[at - 5:at + len(site) + 5].any():
                continue
            taken[at:at + len(site)] = True
            seq[at:at + len(site)] = list(site)
            for j, base in enumerate(site):
                m[0, "ACGT".index(base), at + j] += 1.0
        regions.append((f"chr{1 + i % 22}", 10_000 + 2_000 * i, "".join(seq)))
        blocks.append(m - m.mean(axis=1, keepdims=True))
    write_explain_folder(folder, regions, np.concatenate(blocks, axis=2),
                         ["microglia", "neuron", "oligodendrocyte"][:n_tracks])


def run(folder: Path, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from epiformer_cli.cli.app import main; main()", "-q", "motifs", "--contrib", str(folder),
                           "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024  # kB -> MB (Linux)
    record = json.loads((out / "motifs.json").read_text())
    names = [line.split("\t")[5] for line in (out / "motifs.tsv").read_text().splitlines()[1:]]
    return {"seconds": seconds, "peak_mb": peak, "patterns": record["patterns"], "seqlets": record["seqlets"],
            "factors": [n for n in names if n != "."]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--tracks", type=int, default=1)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            folder = Path(tmp) / f"explain{n}"
            t0 = time.perf_counter()
            make_folder(folder, n, args.tracks)
            made = time.perf_counter() - t0
            result = run(folder, Path(tmp) / f"motifs{n}")
            size = (folder / "contrib.npz").stat().st_size / 2**20
            print(f"regions {n:>6,}  tracks {args.tracks}  contrib.npz {size:7.1f} MB (made in {made:.0f} s)  "
                  f"motifs {result['seconds']:6.1f} s  peak RSS {result['peak_mb']:7.0f} MB  "
                  f"patterns {result['patterns']}  named {', '.join(result['factors'])}")


if __name__ == "__main__":
    main()
