"""`epiformer pseudobulk` against scatac-fragment-tools, and its peak memory on 100 M fragments.

1. Speed: one fragments file (gzip) with every barcode in one cell type, so both tools write the
   same bigWig (Tn5 cut sites, per million fragments) from the same file:
   ``epiformer pseudobulk`` vs ``scatac_fragment_tools bigwig --cut-sites --normalize`` (aertslab's
   tool: pyarrow parsing, numba, pybigtools writing). Both run as child processes on this machine;
   printed: fragments per second of each and their ratio, peak RSS of each, and the largest
   difference between the two bigWigs at 10,000 random positions (they must agree).
2. Memory: ``--memory`` runs epiformer alone on ``--memory-fragments`` (100 M) fragments over the
   hg38 chromosome sizes with 8 cell types, and prints its peak RSS beside the bound of
   jobs/pseudobulk.py (4 bytes x longest chromosome x cell types of a group, at most 2 GiB of arrays).

The genome is a FASTA of N with hg38's chromosome lengths (only names and lengths are read).
Fragments are drawn uniformly along the genome, lengths nucleosome-banded, barcodes from 20,000
cells (and 5% ambient ones), sorted as Cell Ranger writes them.

    python benchmarks/bench_pseudobulk.py --fragments 20000000 [--sft /path/to/scatac_fragment_tools]
    python benchmarks/bench_pseudobulk.py --memory --memory-fragments 100000000
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HG38 = {"chr1": 248956422, "chr2": 242193529, "chr3": 198295559, "chr4": 190214555, "chr5": 181538259,
        "chr6": 170805979, "chr7": 159345973, "chr8": 145138636, "chr9": 138394717, "chr10": 133797422,
        "chr11": 135086622, "chr12": 133275309, "chr13": 114364328, "chr14": 107043718, "chr15": 101991189,
        "chr16": 90338345, "chr17": 83257441, "chr18": 80373285, "chr19": 58617616, "chr20": 64444167,
        "chr21": 46709983, "chr22": 50818468, "chrX": 156040895, "chrY": 57227415, "chrM": 16569}


def write_genome(path: Path, sizes: dict) -> None:
    """A FASTA of N with these chromosome lengths (and its .fai), written once."""
    if path.exists() and Path(str(path) + ".fai").exists():
        return
    line = b"N" * 60 + b"\n"
    with open(path, "wb") as handle:
        for chrom, size in sizes.items():
            handle.write(f">{chrom}\n".encode())
            full, rest = divmod(size, 60)
            block = line * 100_000
            for _ in range(full // 100_000):
                handle.write(block)
            handle.write(line * (full % 100_000))
            if rest:
                handle.write(b"N" * rest + b"\n")
    import pysam

    pysam.faidx(str(path))


def write_fragments(path: Path, sizes: dict, n: int, n_cells: int = 20_000, seed: int = 0,
                    compress: bool = True) -> list:
    """``n`` fragments spread over the genome by length, sorted; returns the cell barcodes."""
    import pyarrow as pa
    import pyarrow.csv as pc

    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    barcodes = np.array(["".join(letters[rng.integers(0, 4, 16)]) + "-1" for _ in range(int(n_cells * 1.05))])
    total = sum(sizes.values())
    opener = gzip.open if compress else open
    options = pc.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with opener(path, "wb", **({"compresslevel": 1} if compress else {})) as handle:
        handle.write(b"# id=bench\n")
        for chrom, size in sizes.items():
            k = int(round(n * size / total))
            if k == 0:
                continue
            start = np.sort(rng.integers(0, size - 1000, k))
            length = np.where(rng.random(k) < 0.6, 30 + rng.lognormal(np.log(40), 0.5, k),
                              rng.normal(200, 25, k)).clip(30, 999).astype(np.int64)
            table = pa.table({"chrom": pa.array(np.full(k, chrom)), "start": start, "end": start + length,
                              "barcode": pa.array(barcodes[rng.integers(0, len(barcodes), k)]),
                              "count": 1 + rng.poisson(0.3, k)})
            sink = pa.BufferOutputStream()
            pc.write_csv(table, sink, write_options=options)
            handle.write(sink.getvalue().to_pybytes())
    return barcodes.tolist()  # the first n_cells are cells, the rest ambient


def measured(cmd: list, env=None) -> tuple:
    """(seconds, peak RSS in MB) of a child process, via GNU time."""
    t0 = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return seconds, int(result.stderr.strip().splitlines()[-1]) / 1024


def compare(a: Path, b: Path, sizes: dict, n: int = 10_000, seed: int = 1) -> float:
    """Largest |a - b| / max(|b|) over ``n`` random positions (no data reads as 0)."""
    import pyBigWig

    rng = np.random.default_rng(seed)
    chroms = list(sizes)
    worst, top = 0.0, 0.0
    with pyBigWig.open(str(a)) as x, pyBigWig.open(str(b)) as y:
        for _ in range(n):
            c = chroms[int(rng.integers(0, len(chroms)))]
            p = int(rng.integers(0, sizes[c]))
            u = np.nan_to_num(x.values(c, p, p + 1)[0])
            v = np.nan_to_num(y.values(c, p, p + 1)[0])
            worst, top = max(worst, abs(u - v)), max(top, abs(v))
    return worst / top if top else worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=20_000_000)
    parser.add_argument("--sft", default=shutil.which("scatac_fragment_tools"),
                        help="the scatac_fragment_tools command (pip install scatac-fragment-tools pybigtools)")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-fragments", type=int, default=100_000_000)
    parser.add_argument("--work", default="/tmp/epiformer-bench-pseudobulk")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    genome = work / "hg38_sizes.fa"
    write_genome(genome, HG38)
    epiformer = [sys.executable, "-m", "epiformer_cli", "-q"]

    if not args.memory:
        frags = work / f"fragments_{args.fragments}.tsv.gz"
        if not frags.exists():
            t0 = time.perf_counter()
            cells = write_fragments(frags, HG38, args.fragments)
            (work / "cells_one_type.tsv").write_text("barcode\tcell_type\n" + "".join(f"{b}\tall\n" for b in cells))
            print(f"wrote {args.fragments:,} fragments in {time.perf_counter() - t0:.0f} s")
        sizes_file = work / "hg38.chrom.sizes"
        sizes_file.write_text("".join(f"{c}\t{n}\n" for c, n in HG38.items()))
        shutil.rmtree(work / "ours", ignore_errors=True)
        ours_s, ours_mb = measured(epiformer + ["pseudobulk", "-f", str(frags), "-c", str(work / "cells_one_type.tsv"),
                                                "--fasta", str(genome), "-o", str(work / "ours"), "--min-cells", "1"])
        print(f"epiformer pseudobulk: {ours_s:.1f} s, {args.fragments / ours_s / 1e6:.2f} M fragments/s, peak RSS {ours_mb:,.0f} MB")
        if not args.sft:
            print("scatac_fragment_tools not found (--sft): no comparison")
            return
        theirs_bw = work / "sft.bw"
        theirs_s, theirs_mb = measured([args.sft, "bigwig", "-c", str(sizes_file), "-i", str(frags), "-o",
                                        str(theirs_bw), "--cut-sites", "--normalize"])
        print(f"scatac_fragment_tools bigwig (pybigtools): {theirs_s:.1f} s, {args.fragments / theirs_s / 1e6:.2f} M "
              f"fragments/s, peak RSS {theirs_mb:,.0f} MB")
        print(f"ratio (their time / ours): {theirs_s / ours_s:.2f}x; peak RSS ours / theirs: {ours_mb / theirs_mb:.2f}")
        # the same bigWig: every barcode is in the table (their tool keeps every fragment), so the
        # per-million scale is the same
        print(f"largest difference at 10,000 random positions (relative to the largest value): "
              f"{compare(work / 'ours' / 'all.bw', theirs_bw, HG38):.2e}")
        return

    frags = work / f"fragments_{args.memory_fragments}.tsv"
    if not frags.exists():
        t0 = time.perf_counter()
        cells = write_fragments(frags, HG38, args.memory_fragments, compress=False)
        types = [f"type{i}" for i in range(8)]
        (work / "cells_eight_types.tsv").write_text(
            "barcode\tcell_type\n" + "".join(f"{b}\t{types[i % 8]}\n" for i, b in enumerate(cells[:20_000])))
        print(f"wrote {args.memory_fragments:,} fragments in {time.perf_counter() - t0:.0f} s")
    shutil.rmtree(work / "memory", ignore_errors=True)
    seconds, mb = measured(epiformer + ["pseudobulk", "-f", str(frags), "-c", str(work / "cells_eight_types.tsv"),
                                        "--fasta", str(genome), "-o", str(work / "memory"), "--min-cells", "1"])
    bound = min(8 * 4 * max(HG38.values()), 2 << 30) / 2**20
    print(f"epiformer pseudobulk, {args.memory_fragments:,} fragments, 8 cell types, hg38 sizes: {seconds:.0f} s "
          f"({args.memory_fragments / seconds / 1e6:.2f} M fragments/s), peak RSS {mb:,.0f} MB "
          f"(per-base arrays at most {bound:,.0f} MB)")


if __name__ == "__main__":
    main()
