"""What ``score-variants --motif-db`` costs: variants/s of the motif scan and the process's peak RSS.

Run:  python benchmarks/bench_motif_scan.py [--variants 100000] [--indels 0.1] [--chunk 5000]
                                             [--threads N] [--meme FILE] [--workdir DIR]

The database is JASPAR CORE vertebrates as pyjaspar ships it (about 1,000 motifs, 4-33 bp; the
time to read it is printed), or ``--meme FILE``. The variants are drawn on a random 8 Mb genome
written as a FASTA in a temporary folder: SNVs, and a fraction ``--indels`` of deletions and
insertions of 1-10 bp. Two timings, in chunks of ``--chunk`` alleles as the job makes them:

1. the scan alone (:meth:`MotifScanner.strongest` on sequences built beforehand);
2. what the job does per chunk (:func:`epiformer_cli.variants.motifs.variant_motifs`: the FASTA
   reads of every allele's sequences, then the scan), extrapolated to a million variants.

Peak RSS is the process's (ru_maxrss), after both, with the RSS before the scan for comparison.
The machine may be shared: the load average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epiformer_cli.bases import decode_sequence  # noqa: E402
from epiformer_cli.io.genome import Genome  # noqa: E402
from epiformer_cli.io.vcf import Allele, classify  # noqa: E402
from epiformer_cli.motifs.database import jaspar_release, jaspar_vertebrates, read_meme  # noqa: E402
from epiformer_cli.motifs.scan import MotifScanner  # noqa: E402
from epiformer_cli.variants.motifs import local_sequences, variant_motifs  # noqa: E402
from epiformer_cli.variants.scoring import Task  # noqa: E402

GENOME_BP = 8_000_000


def rss_mb(peak: bool = True) -> float:
    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_tasks(genome: Genome, codes: np.ndarray, n: int, indels: float, seed: int = 0):
    """``n`` ok tasks on chr1: SNVs, and deletions/insertions of 1-10 bp (VCF style, with an anchor)."""
    rng = np.random.default_rng(seed)
    tasks = {}
    positions = rng.integers(100, len(codes) - 100, n)
    for i, pos in enumerate(positions):
        pos = int(pos)
        if rng.random() < indels:
            k = int(rng.integers(1, 11))
            if rng.random() < 0.5:
                ref, alt = decode_sequence(codes[pos:pos + 1 + k]), decode_sequence(codes[pos:pos + 1])
            else:
                ref = decode_sequence(codes[pos:pos + 1])
                alt = ref + "".join(rng.choice(list("ACGT"), k))
        else:
            ref = decode_sequence(codes[pos:pos + 1])
            alt = "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]
        allele = Allele(i, 1, "chr1", pos + 1, pos, pos + len(ref), ".", ref, alt, classify(ref, alt))
        tasks[(i, 1)] = Task(allele, chrom="chr1")
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=100_000)
    parser.add_argument("--indels", type=float, default=0.1)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--meme", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(f"load average at start: {loadavg()}; CPUs usable: {len(os.sched_getaffinity(0))}")

    started = time.perf_counter()
    motifs = read_meme(args.meme) if args.meme else jaspar_vertebrates()
    source = str(args.meme) if args.meme else jaspar_release()
    print(f"database: {source} read in {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    scanner = MotifScanner(motifs, threads=args.threads)
    lengths = scanner.lengths
    print(f"scanner: {len(motifs)} motifs, {lengths.min()}-{lengths.max()} bp (mean {lengths.mean():.1f}), "
          f"thresholds and matrices in {time.perf_counter() - started:.2f} s; {scanner.threads} thread(s), "
          f"float32 margin {scanner.margin:.4f}")

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        codes = np.random.default_rng(1).integers(0, 4, GENOME_BP).astype(np.uint8)
        fasta = Path(tmp) / "g.fa"
        text = decode_sequence(codes)
        fasta.write_text(">chr1\n" + "\n".join(text[i:i + 60] for i in range(0, len(text), 60)) + "\n")
        del text
        genome = Genome(fasta)
        tasks = make_tasks(genome, codes, args.variants, args.indels)
        keys = list(tasks)
        chunks = [keys[i:i + args.chunk] for i in range(0, len(keys), args.chunk)]

        # 1. the scan alone, on sequences built beforehand
        built = []
        for chunk in chunks:
            seqs = [local_sequences(genome, "chr1", tasks[k].allele.start, tasks[k].allele.ref, tasks[k].allele.alt,
                                    scanner.flank) for k in chunk]
            spans = np.array([s for _, _, s in seqs])
            width = 2 * scanner.flank + int(spans.max())
            ref = np.full((len(chunk), width), 4, np.uint8)
            alt = np.full((len(chunk), width), 4, np.uint8)
            for i, (r, a, _) in enumerate(seqs):
                ref[i, :len(r)], alt[i, :len(a)] = r, a
            built.append((ref, alt, spans))
        before = rss_mb(peak=False)
        started, cpu = time.perf_counter(), time.process_time()
        found = 0
        for ref, alt, spans in built:
            found += sum(h is not None for h in scanner.strongest(ref, alt, spans))
        scan_s, scan_cpu = time.perf_counter() - started, time.process_time() - cpu
        del built

        # 2. as the job does it per chunk: FASTA reads, then the scan
        started = time.perf_counter()
        for chunk in chunks:
            variant_motifs({k: tasks[k] for k in chunk}, genome, scanner)
        job_s = time.perf_counter() - started
        genome.close()

    n = args.variants
    print(f"{n:,} variants ({args.indels:.0%} indels of 1-10 bp), chunks of {args.chunk:,}:")
    print(f"  scan alone:        {n / scan_s:,.0f} variants/s ({scan_s:.1f} s wall, {scan_cpu:.1f} s CPU); "
          f"{found / n:.1%} of the variants overlap an instance")
    print(f"  as the job does:   {n / job_s:,.0f} variants/s ({job_s:.1f} s; a million in "
          f"{1e6 / (n / job_s) / 60:.1f} min)")
    print(f"  RSS before the scan {before:.0f} MB, peak RSS {rss_mb():.0f} MB")
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
