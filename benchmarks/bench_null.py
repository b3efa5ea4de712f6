"""The null of score-variants on the demo: clustered (10 SNVs a window) vs independent SNVs, and the cache.

Three questions, one run, on a finished demo folder (``epiformer demo --out DEMO``):

1. **Cost**: seconds to score a null of 10,000 SNVs drawn one per window (``--null-per-window 1``,
   every SNV pays its own reference pass) and ten per window (the default), each into a cache of
   its own; the ratio is the speed-up.
2. **Calibration holds**: random genomic SNVs (another seed, drawn independently) scored against
   each null must get uniform ``diff_p`` (5% below 0.05, 1% below 0.01, median 0.5, small
   Kolmogorov-Smirnov distance to the uniform); the demo's neutral SNVs keep ~5% below 0.05 and its
   motif-breaking SNVs keep small p-values; the two nulls' |diff| distributions agree (two-sample KS).
3. **The cache**: a second VCF scored to standard output costs the null again without the cache
   (what every pipe paid before) and nothing with it.

The demo's genome is small (4.6 Mb: 375 windows of its model), so a null of 10,000 SNVs shares
windows whatever the draw, and costs the same either way there. The cost is therefore also measured
on a genome of hg38's scale for the null (``--speed-mb``, random sequence, the demo's model), where
independent SNVs rarely meet in a window (10,000 SNVs on hg38 fall in ~9,800 of its 250,000 windows
of this model), side by side, rounds interleaved.

    python benchmarks/bench_null.py DEMO OUT_FOLDER [--size 10000] [--random 10000] [--speed-mb 200 --speed-size 1000]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from epiformer_cli.io.genome import Genome
from epiformer_cli.jobs.demo import calibration_check
from epiformer_cli.jobs.score_variants import score_variants
from epiformer_cli.options import ScoreOptions
from epiformer_cli.variants.null import draw_null_snvs, read_null


def ks_uniform(p: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample ``p`` and the uniform on [0, 1]."""
    p = np.sort(p[np.isfinite(p)])
    n = len(p)
    return float(max(np.max(np.arange(1, n + 1) / n - p), np.max(p - np.arange(n) / n)))


def ks_two(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                               - np.searchsorted(b, grid, side="right") / len(b))))


def score(vcf, demo: Path, out, cache: Path, **options) -> float:
    """Seconds of one score-variants run with ``cache`` as the cache folder."""
    os.environ["EPIFORMER_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    sink = io.StringIO() if out == "-" else None
    score_variants(vcf, demo / "data" / "genome.fa", demo / "data" / "conservation.bw", demo / "run" / "model.pt",
                   out, options=ScoreOptions.of(device="cpu", force=True, **options), stdout=sink)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=10_000, help="null SNVs")
    parser.add_argument("--random", type=int, default=10_000, help="random SNVs scored against each null")
    parser.add_argument("--speed-mb", type=int, default=200, help="genome size (Mb) of the cost comparison")
    parser.add_argument("--speed-size", type=int, default=1_000, help="null SNVs of the cost comparison")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the cost comparison")
    parser.add_argument("--skip-demo", action="store_true", help="only the cost comparison")
    args = parser.parse_args()
    demo, out = args.demo, args.out
    out.mkdir(parents=True, exist_ok=True)
    speed(demo, out, args.speed_mb, args.speed_size, args.rounds)
    if not args.skip_demo:
        on_demo(demo, out, args)


def speed(demo: Path, out: Path, megabases: int, size: int, rounds: int) -> None:
    """Seconds of a null of ``size`` SNVs drawn 1 and 10 a window, on a random genome of ``megabases``."""
    import pyBigWig

    from epiformer_cli.model.modelfile import load_model

    fasta, cons = out / "big.fa", out / "big.cons.bw"
    chroms = {f"chr{i + 1}": megabases * 1_000_000 // 4 for i in range(4)}
    if not (fasta.exists() and cons.exists()):
        rng = np.random.default_rng(0)
        with open(fasta, "w") as handle:
            for name, length in chroms.items():
                handle.write(f">{name}\n")
                for start in range(0, length, 9_999_960):  # whole lines of 60
                    codes = rng.integers(0, 4, size=min(9_999_960, length - start), dtype=np.uint8)
                    text = np.frombuffer(b"ACGT", dtype=np.uint8)[codes].tobytes()
                    handle.write("\n".join(text[i:i + 60].decode() for i in range(0, len(text), 60)) + "\n")
        bw = pyBigWig.open(str(cons), "w")
        bw.addHeader(list(chroms.items()))
        for name, length in chroms.items():
            starts = np.arange(0, length, 10_000, dtype=np.int64)
            bw.addEntries([name] * len(starts), starts.tolist(), ends=np.minimum(starts + 10_000, length).tolist(),
                          values=rng.random(len(starts)).tolist())
        bw.close()
    config = load_model(demo / "run" / "model.pt").config
    windows = sum(chroms.values()) // (config.seq_len - 2 * config.crop_bp)
    one = out / "big-one.vcf"
    one.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + next(iter(draw_null_snvs(Genome(fasta), 1, seed=7))).line)
    print(f"cost: a null of {size:,} SNVs on a random genome of {megabases} Mb ({windows:,} windows of the demo's "
          f"model), {rounds} round(s), the one-variant run's time minus a run reusing its null")
    seconds: dict = {1: [], 10: []}
    for r in range(rounds):
        for per_window in ((1, 10) if r % 2 == 0 else (10, 1)):
            cache = out / f"speed-cache-{per_window}"
            shutil.rmtree(cache, ignore_errors=True)
            started = time.perf_counter()
            os.environ["EPIFORMER_CACHE_DIR"] = str(cache)
            score_variants(one, fasta, cons, demo / "run" / "model.pt", out / "big-one.tsv",
                           options=ScoreOptions.of(device="cpu", force=True, null_size=size,
                                                   null_per_window=per_window, max_null_minutes=0))
            paid = time.perf_counter() - started
            started = time.perf_counter()
            score_variants(one, fasta, cons, demo / "run" / "model.pt", out / "big-one.tsv",
                           options=ScoreOptions.of(device="cpu", force=True, null_size=size,
                                                   null_per_window=per_window))
            seconds[per_window].append(paid - (time.perf_counter() - started))
            print(f"  round {r + 1}: {per_window:>2} a window {seconds[per_window][-1]:.1f} s "
                  f"({size / seconds[per_window][-1]:.1f} SNVs/s)", flush=True)
    a, b = float(np.median(seconds[1])), float(np.median(seconds[10]))
    print(f"  median: 1 a window {a:.1f} s, 10 a window {b:.1f} s: {a / b:.2f}x faster "
          f"(rounds {', '.join(f'{x / y:.2f}' for x, y in zip(seconds[1], seconds[10]))})\n")


def on_demo(demo: Path, out: Path, args) -> None:
    """Calibration of both nulls on the demo, and the cache's second VCF."""
    fasta = demo / "data" / "genome.fa"
    vcf = demo / "data" / "variants.vcf.gz"
    tiny = out / "one.vcf"  # a VCF of one variant: its run's time is the null's, plus start-up
    first = next(r for r in draw_null_snvs(Genome(fasta), 1, seed=7))
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    tiny.write_text(header + first.line)
    random_vcf = out / "random.vcf"
    random_vcf.write_text(header + "".join(r.line for r in draw_null_snvs(Genome(fasta), args.random, seed=1)))

    print(f"demo {demo}; null of {args.size:,} SNVs; {args.random:,} random SNVs (seed 1, independent)")
    results = {}
    for per_window in (1, 10):
        cache = out / f"cache-{per_window}"
        shutil.rmtree(cache, ignore_errors=True)
        paid = score(tiny, demo, out / f"one-{per_window}.tsv", cache, null_size=args.size,
                     null_per_window=per_window, max_null_minutes=0)
        again = score(tiny, demo, out / f"one-{per_window}.tsv", cache, null_size=args.size,
                      null_per_window=per_window)
        (null_file,) = (cache / "nulls").glob("null-*.tsv.gz")
        score(random_vcf, demo, out / f"random-{per_window}.tsv", cache, null_size=args.size,
              null_per_window=per_window)
        score(vcf, demo, out / f"demo-{per_window}.tsv", cache, null_size=args.size, null_per_window=per_window)
        results[per_window] = {"null_s": paid - again, "run_s": paid, "reuse_s": again, "null": read_null(null_file)}
        print(f"  {per_window:>2} a window: first run {paid:.1f} s, a run reusing it {again:.1f} s: "
              f"the null {paid - again:.1f} s")
    ratio = results[1]["null_s"] / results[10]["null_s"]
    print(f"null cost: 1 a window {results[1]['null_s']:.1f} s, 10 a window {results[10]['null_s']:.1f} s: "
          f"{ratio:.2f}x faster")

    print("\ncalibration of random SNVs (diff_p, every track row):")
    print(f"  {'null':<14} {'rows':>6} {'<0.05':>7} {'<0.01':>7} {'median':>7} {'KS to U(0,1)':>13}")
    for per_window in (1, 10):
        rows = pd.read_csv(out / f"random-{per_window}.tsv", sep="\t", na_values=["NA"])
        p = rows.loc[rows["status"] == "ok", "diff_p"].to_numpy()
        print(f"  {per_window:>2} a window   {len(p):>6} {np.mean(p < 0.05):>7.4f} {np.mean(p < 0.01):>7.4f} "
              f"{np.median(p):>7.3f} {ks_uniform(p):>13.4f}")
    print("\nthe demo's variants (demo calibration check):")
    truth = pd.read_csv(demo / "data" / "variants_truth.tsv", sep="\t", dtype={"chrom": str})
    for per_window in (1, 10):
        rows = pd.read_csv(out / f"demo-{per_window}.tsv", sep="\t", dtype={"chrom": str}, na_values=["NA"])
        check = calibration_check(rows[rows["status"] == "ok"], truth)
        print(f"  {per_window:>2} a window: neutral SNVs below 0.05 {check['neutral_below_0.05']:.3f}, "
              f"motif-breaking median diff_p {check['causal_median_p']:.3g}")
    print("\nthe two nulls per track: two-sample KS distance of |diff| and of ref_sum (critical 5%: "
          f"{1.36 * np.sqrt(2 / args.size):.4f} for independent samples)")
    for track in results[1]["null"].tracks:
        a, b = results[1]["null"].tracks[track], results[10]["null"].tracks[track]
        print(f"  {track:<16} |diff| {ks_two(np.abs(a['diff']), np.abs(b['diff'])):.4f}   "
              f"ref_sum {ks_two(a['ref_sum'], b['ref_sum']):.4f}")

    print("\na second VCF to standard output (the demo's VCF):")
    cache = out / "cache-10"
    with_cache = score(vcf, demo, "-", cache, null_size=args.size)
    without = score(vcf, demo, "-", out / "cache-empty", null_size=args.size)
    shutil.rmtree(out / "cache-empty", ignore_errors=True)
    print(f"  with the cache {with_cache:.1f} s; without it (the null scored again, as every pipe did) "
          f"{without:.1f} s: {without / with_cache:.1f}x")


if __name__ == "__main__":
    main()
