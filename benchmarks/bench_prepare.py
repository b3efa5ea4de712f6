"""`epiformer prepare` throughput (Mb/s) and peak RSS on a generated genome with 3 target tracks.

Run:  python benchmarks/bench_prepare.py [--genome-mb 200] [--chrom-mb 50] [--workdir DIR]

Generates a random FASTA of ``--genome-mb`` Mb (chromosomes of ``--chrom-mb`` Mb, named chr1..;
the last two are held out for validation and test), a per-base conservation bigWig (as phastCons is:
one value per base, fixed step) and three target bigWigs at 20 bp resolution (as pseudo-bulk ATAC
coverage tracks usually are), then runs the real command in a child process and reports its wall
time, Mb/s of genome and peak RSS (ru_maxrss of the child, measured by a parent of its own). The
full `epiformer` window (98,304 bp, stepping by its length, the default) is used. Generation time is not counted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import write_genome  # noqa: E402  (a sibling script, not a package)

_MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def write_track(path: Path, sizes: dict, step: int, seed: int) -> Path:
    """A fixed-step bigWig: one value per ``step`` bp over every chromosome, written in 10 Mb pieces."""
    import pyBigWig

    rng = np.random.default_rng(seed)
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(sizes.items()))
    piece = 10_000_000
    for name, size in sizes.items():
        for start in range(0, size, piece):
            n = -(-min(piece, size - start) // step)
            if start + n * step > size:  # the last value must not pass the chromosome end
                n -= 1
            if n <= 0:
                continue
            values = rng.gamma(0.3, 2.0, n) if step > 1 else rng.beta(0.3, 1.5, n)
            bw.addEntries(name, start, values=values.astype(np.float64).tolist(), span=step, step=step)
    bw.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--genome-mb", type=int, default=200)
    ap.add_argument("--chrom-mb", type=int, default=25)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        fasta, _ = write_genome(folder, args.genome_mb, chrom_mb=args.chrom_mb)
        from epiformer_cli.io.genome import Genome

        sizes = dict(Genome(fasta).chrom_sizes)
        cons = write_track(folder / "phastcons.bw", sizes, step=1, seed=1)
        sheet = folder / "targets.tsv"
        rows = ["name\tpath\tscale\tclip\tstat"]
        for i, name in enumerate(("ASCT", "OPC", "MGC")):
            write_track(folder / f"{name}.bw", sizes, step=20, seed=10 + i)
            rows.append(f"{name}\t{name}.bw\t1\t128\tmean")
        sheet.write_text("\n".join(rows) + "\n")
        names = list(sizes)
        held = ["--valid-chroms", names[-2], "--test-chroms", names[-1]]
        sizes_mb = {p.name: p.stat().st_size / 1e6 for p in folder.iterdir() if p.suffix in {".fa", ".bw"}}
        print(f"generated in {time.perf_counter() - t:.0f} s: {args.genome_mb} Mb in {len(names)} chromosomes; "
              + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes_mb.items()), flush=True)
        cmd = [sys.executable, "-m", "epiformer_cli", "-q", "prepare", "--fasta", str(fasta), "--cons", str(cons),
               "--targets", str(sheet), "--out", str(folder / "store"), "--preset", "epiformer", *held]
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if done.returncode != 0:
            sys.exit(f"prepare failed:\n{done.stderr}")
        rss_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
        store_mb = sum(p.stat().st_size for p in (folder / "store").rglob("*") if p.is_file()) / 1e6
        print(f"prepare: {seconds:.1f} s, {args.genome_mb / seconds:.2f} Mb/s, peak RSS {rss_mb:.0f} MB, "
              f"store {store_mb:.0f} MB ({store_mb * 1e6 / (args.genome_mb * 1e6):.2f} bytes/bp)")


if __name__ == "__main__":
    main()
