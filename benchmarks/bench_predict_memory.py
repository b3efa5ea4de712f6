"""Peak RSS of `epiformer predict` on one long chromosome against a short one: memory must be
bounded by the batch (and a store chunk), not by the chromosome's length.

Run:  python benchmarks/bench_predict_memory.py [--long-mb 250] [--short-mb 10] [--batch-size N]
                                                [--rc-average] [--workdir DIR] [--keep]

Generates, per length, a genome of ONE chromosome (random ACGT with N runs: 10 kb telomeres at both
ends, a 3 Mb centromere in the middle and a 50 kb gap every ~20 Mb) and a per-base conservation
bigWig (one value per base, fixed step, as phastCons is; values in [0, 1]), saves a tiny-preset
model with random weights (``save_model``), then runs the real command in a child process
(``python -m epiformer_cli predict ... --device cpu``, reverse-complement averaging off unless
--rc-average) and reports its wall time, windows/s and peak RSS (ru_maxrss of the child, measured
by a parent of its own). Both runs happen in this one invocation, so the printed ratio long/short
compares like with like. Generated files (~1.4 GB for 250 Mb) go to a temporary folder, deleted at
the end unless --keep.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

_MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, "
            "file=sys.stderr); sys.exit(code)")


def n_runs(size: int) -> List[Tuple[int, int]]:
    """Where a chromosome of ``size`` bp holds N, 0-based half-open: telomeres, a centromere, gaps."""
    runs = [(0, min(10_000, size)), (max(0, size - 10_000), size)]
    if size > 10_000_000:
        mid = size // 2
        runs.append((mid - 1_500_000, mid + 1_500_000))
    runs += [(s, s + 50_000) for s in range(20_000_000, size - 100_000, 20_000_000)]
    return sorted(runs)


def write_chromosome(folder: Path, name: str, size: int, seed: int = 0) -> Tuple[Path, Path]:
    """A one-chromosome FASTA of ``size`` bp (60-column lines) and its per-base conservation bigWig.

    Written in 6 Mb pieces, so generating never holds the chromosome in memory.
    """
    import pyBigWig

    rng = np.random.default_rng(seed)
    fasta, cons = folder / f"{name}.fa", folder / f"{name}.cons.bw"
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    runs = n_runs(size)
    width, piece = 60, 6_000_000  # a multiple of the line width: every piece ends a line
    with open(fasta, "wb") as handle:
        handle.write(f">{name}\n".encode())
        for start in range(0, size, piece):
            n = min(piece, size - start)
            seq = letters[rng.integers(0, 4, n)]
            for lo, hi in runs:
                a, b = max(lo, start), min(hi, start + n)
                if b > a:
                    seq[a - start:b - start] = ord("N")
            rows = -(-n // width)
            padded = np.full(rows * width, ord("\n"), dtype=np.uint8)
            padded[:n] = seq
            lines = np.full((rows, width + 1), ord("\n"), dtype=np.uint8)
            lines[:, :width] = padded.reshape(rows, width)
            flat = lines.reshape(-1)
            if n % width:  # the last, partial line: drop its padding
                flat = np.concatenate([flat[:(rows - 1) * (width + 1) + n % width], flat[-1:]])
            handle.write(flat.tobytes())
    bw = pyBigWig.open(str(cons), "w")
    bw.addHeader([(name, size)])
    for start in range(0, size, piece):
        n = min(piece, size - start)
        values = rng.beta(0.3, 1.5, n)
        bw.addEntries(name, start, values=values.tolist(), span=1, step=1)
    bw.close()
    return fasta, cons


def model_file(folder: Path, name: str = "tiny") -> Path:
    """A model of the preset ``name`` with random weights (2 tracks): bench_predict's."""
    from bench_predict import model_file as random_model_file  # the sibling script (benchmarks/ is on sys.path)

    return random_model_file(folder, name)


def run_predict(folder: Path, fasta: Path, cons: Path, model: Path, batch: Optional[int], rc: bool) -> Dict:
    """Wall time and peak RSS (MB) of one `epiformer predict` child process."""
    out = folder / f"pred-{fasta.stem}.bw"
    cmd = [sys.executable, "-m", "epiformer_cli", "-q", "predict", "--fasta", str(fasta), "--cons", str(cons),
           "--model", str(model), "--out", str(out), "--store", str(folder / f"store-{fasta.stem}"),
           "--device", "cpu", "--force", "--rc-average" if rc else "--no-rc-average"]
    if batch is not None:
        cmd += ["--batch-size", str(batch)]
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"predict failed:\n{done.stderr}")
    kb, seconds = done.stderr.strip().splitlines()[-1].split()
    shutil.rmtree(folder / f"store-{fasta.stem}", ignore_errors=True)
    out.unlink(missing_ok=True)
    return {"peak_rss_mb": int(kb) / 1024, "seconds": float(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long-mb", type=float, default=250)
    ap.add_argument("--short-mb", type=float, default=10)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the command's own default")
    ap.add_argument("--rc-average", action="store_true", help="average with the reverse strand (2 forwards a window)")
    ap.add_argument("--workdir", default=None, help="folder for the generated files (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files (with --workdir)")
    args = ap.parse_args()
    import torch

    from epiformer_cli.inference.engine import default_batch_size
    from epiformer_cli.model.config import preset

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench-predict-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    out_bp = preset("tiny").out_bp
    batch = args.batch_size or default_batch_size(preset("tiny"), torch.device("cpu"))
    settings = (f"tiny, batch {batch}{'' if args.batch_size else ' (default)'}, "
                f"rc {'on' if args.rc_average else 'off'}, {torch.get_num_threads()} threads")
    try:
        model = model_file(folder)
        results = {}
        for label, mb in (("short", args.short_mb), ("long", args.long_mb)):
            size = int(mb * 1_000_000)
            fasta, cons = folder / f"chr{label}.fa", folder / f"chr{label}.cons.bw"
            if not (fasta.exists() and cons.exists()):
                t = time.perf_counter()
                write_chromosome(folder, f"chr{label}", size, seed=int(mb))
                print(f"generated {label}: one {mb:g} Mb chromosome in {time.perf_counter() - t:.0f} s "
                      f"(FASTA {fasta.stat().st_size / 1e6:.0f} MB, bigWig {cons.stat().st_size / 1e6:.0f} MB)",
                      flush=True)
            r = run_predict(folder, fasta, cons, model, args.batch_size, args.rc_average)
            r["windows"] = -(-size // out_bp)
            r["windows_per_s"] = r["windows"] / r["seconds"]
            results[label] = r
            print(f"{label}: {mb:g} Mb, {r['windows']:,} windows ({settings}): peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{r['seconds']:.1f} s, {r['windows_per_s']:.1f} windows/s (wall clock of the whole command)",
                  flush=True)
        long, short = results["long"], results["short"]
        print(f"long/short: length x{args.long_mb / args.short_mb:.0f}, "
              f"peak RSS x{long['peak_rss_mb'] / short['peak_rss_mb']:.2f} "
              f"({long['peak_rss_mb'] - short['peak_rss_mb']:+.0f} MB), "
              f"windows/s x{long['windows_per_s'] / short['windows_per_s']:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
