"""`epiformer score-variants` end to end on a generated genome and VCF: variants/s and peak RSS.

Run:  python benchmarks/bench_score_variants_vcf.py [--variants 100000,1000000] [--genome-mb 50]
                                                    [--modes grid,centered] [--centered-variants 2000] [--precision fp32]
                                                    [--workdir DIR]

Each run is the real command in a subprocess (`python -m epiformer_cli score-variants VCF --out
FILE`, tiny preset with random weights, reverse-complement averaging on, as a user would run it),
so the numbers include reading the bgzipped VCF and the FASTA, the model, and writing the TSV.
Peak RSS is the child's ru_maxrss. The VCF holds random SNVs whose REF matches the FASTA (every
record scores ``ok``), sorted, bgzipped and tabix-indexed; the density is what ``--variants`` over
``--genome-mb`` gives (1,000,000 over 50 Mb is about 240 SNVs per 12,288 bp grid window of the
tiny preset). Memory must not grow with the number of variants: compare the rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import model_file, write_genome  # noqa: E402  (a sibling script, not a package)


def write_vcf(fasta: Path, out: Path, n: int, seed: int = 1) -> Path:
    """``n`` random SNVs spread over the FASTA's chromosomes, REF read from the FASTA; bgzip + tabix."""
    import pysam

    from epiformer_cli.io.genome import Genome

    genome = Genome(fasta)
    rng = np.random.default_rng(seed)
    sizes = genome.chrom_sizes
    total = sum(sizes.values())
    plain = out.with_suffix("")  # x.vcf.gz -> x.vcf
    letters = "ACGTN"
    with open(plain, "w") as handle:
        handle.write("##fileformat=VCFv4.2\n")
        for chrom, size in sizes.items():
            handle.write(f"##contig=<ID={chrom},length={size}>\n")
        handle.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for chrom, size in sizes.items():
            k = round(n * size / total)
            starts = np.sort(rng.choice(size, size=k, replace=False))
            codes = genome.fetch(chrom, 0, size)
            shift = rng.integers(1, 4, k)
            for i, (s, d) in enumerate(zip(starts.tolist(), shift.tolist())):
                ref = letters[codes[s]]
                alt = letters[(codes[s] + d) % 4]
                handle.write(f"{chrom}\t{s + 1}\tv{i}\t{ref}\t{alt}\t.\t.\t.\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)  # writes x.vcf.gz + .tbi, removes x.vcf
    return out


_MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command, measured by a fresh parent of its own (the
    RUSAGE_CHILDREN maximum of this process would carry over from earlier, larger runs)."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="100000,1000000")
    ap.add_argument("--genome-mb", type=int, default=50)
    ap.add_argument("--modes", default="grid,centered")
    ap.add_argument("--centered-variants", type=int, default=2000,
                    help="variants for centered mode (one reference pass per variant: far slower)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    counts = sorted(int(v) for v in args.variants.split(","))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        fasta, cons = write_genome(folder, args.genome_mb)
        model = model_file(folder)
        print(f"genome {args.genome_mb} Mb, tiny preset (2 tracks), RC averaging on, {args.precision}, "
              f"{os.cpu_count()} CPUs")
        print("mode        variants     seconds   variants/s   peak RSS MB")
        for mode in args.modes.split(","):
            for n in counts if mode == "grid" else [args.centered_variants]:
                vcf = write_vcf(fasta, folder / f"v{n}.vcf.gz", n)
                out = folder / f"scores-{mode}-{n}.tsv"
                cmd = [sys.executable, "-m", "epiformer_cli", "-q", "score-variants", str(vcf), "--fasta", str(fasta),
                       "--cons", str(cons), "--model", str(model), "--out", str(out), "--device", "cpu",
                       "--precision", args.precision, "--window-mode", mode]
                seconds, rss = run(cmd)
                rows = sum(1 for _ in open(out)) - 1
                assert rows == 2 * n, f"expected {2 * n} rows (2 tracks), got {rows}"
                print(f"{mode:<10} {n:>9,}  {seconds:>10.1f}  {n / seconds:>11.1f}  {rss:>12.0f}", flush=True)
                out.unlink()


if __name__ == "__main__":
    main()
