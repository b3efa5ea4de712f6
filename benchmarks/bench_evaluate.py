"""`evaluate`: time spent predicting vs computing the metrics, measured in one run, and at hg38 scale.

Run:  python benchmarks/bench_evaluate.py [--genome-mb 8] [--tracks 18] [--batch-size 8] [--workdir DIR]

Measures (tiny preset, random weights; the values do not matter, the work does):
1. one `evaluate --targets` run (the job, evaluate_model) on a generated genome of --genome-mb Mb
   with --tracks target bigWigs: its own timers split it into predicting (reading the FASTA,
   conservation and bigWigs, the model) and computing every metric; figures and report apart;
2. the metrics alone (score_bins) and the figures on synthesised bins of hg38's default held-out
   chromosomes (chr8 + chr9: 2,215,105 bins of 128 bp) x --tracks tracks;
3. the prediction of those chromosomes extrapolated from run 1's windows/s (the tiny preset, the
   cheapest model: any larger one only makes prediction's share larger), so that "evaluate is
   dominated by prediction" is a ratio of two numbers from one run on one machine.
The machine may be shared: timings are single runs and may be disturbed.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_predict import write_genome  # noqa: E402  the sibling script's random genome

from epiformer_cli.model.config import preset  # noqa: E402
from epiformer_cli.model.modelfile import save_model  # noqa: E402
from epiformer_cli.model.network import Epiformer  # noqa: E402

#: hg38 (UCSC chrom.sizes): the default held-out chromosomes of `prepare` (chr8 valid, chr9 test)
HG38_HELD_OUT = {"chr8": 145_138_636, "chr9": 138_394_717}


def write_targets(folder: Path, fasta_sizes: dict, n_tracks: int, seed: int = 1) -> Path:
    """``n_tracks`` bigWigs of 128 bp steps (exponential values, a shared component so tracks
    correlate) and a targets sheet naming them t1..tN."""
    import pyBigWig

    rng = np.random.default_rng(seed)
    lines = ["name\tpath"]
    shared = {c: rng.exponential(1.0, -(-n // 128)) for c, n in fasta_sizes.items()}
    for t in range(n_tracks):
        path = folder / f"t{t + 1}.bw"
        bw = pyBigWig.open(str(path), "w")
        bw.addHeader(list(fasta_sizes.items()))
        for chrom, size in fasta_sizes.items():
            values = shared[chrom] * rng.uniform(0.5, 1.5) + rng.exponential(0.5, len(shared[chrom]))
            bw.addEntries(chrom, 0, values=values.astype(float).tolist(), span=128, step=128)
        bw.close()
        lines.append(f"t{t + 1}\t{path.name}")
    sheet = folder / "targets.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def chrom_sizes(fasta: Path) -> dict:
    from epiformer_cli.io.genome import Genome

    genome = Genome(fasta)
    try:
        return dict(genome.chrom_sizes)
    finally:
        genome.close()


def synthetic_bins(n_tracks: int, seed: int = 2):
    """EvaluatedBins of hg38's chr8 + chr9 (every bin once) with correlated random values."""
    from epiformer_cli.evaluate.bins import BIN_BP, EvaluatedBins

    rng = np.random.default_rng(seed)
    chroms = list(HG38_HELD_OUT)
    per = [-(-HG38_HELD_OUT[c] // BIN_BP) for c in chroms]
    n = sum(per)
    base = rng.exponential(1.0, (n, 1)).astype(np.float32)
    target = (base * rng.uniform(0.5, 1.5, (1, n_tracks)) + rng.exponential(0.5, (n, n_tracks))).astype(np.float32)
    pred = (target * rng.uniform(0.6, 1.4, (n, n_tracks))).astype(np.float32)
    chrom = np.concatenate([np.full(k, i, dtype=np.int32) for i, k in enumerate(per)])
    bins = np.concatenate([np.arange(k, dtype=np.int64) for k in per])
    return EvaluatedBins([f"t{t + 1}" for t in range(n_tracks)], chroms, dict(HG38_HELD_OUT), chrom, bins, pred,
                         target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genome-mb", type=int, default=8)
    parser.add_argument("--tracks", type=int, default=18)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    from epiformer_cli.data.tiling import WindowGrid
    from epiformer_cli.evaluate import plots
    from epiformer_cli.evaluate.score import score_bins
    from epiformer_cli.jobs.evaluate import evaluate_model
    from epiformer_cli.options import EvaluateInference, EvaluateOptions

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        fasta, cons = write_genome(folder, args.genome_mb, chrom_mb=max(1, args.genome_mb // 2))
        sizes = chrom_sizes(fasta)
        sheet = write_targets(folder, sizes, args.tracks)
        torch.manual_seed(0)
        model = Epiformer(preset("tiny", n_tracks=args.tracks))
        model_path = save_model(folder / "tiny.pt", model, model.config, [f"t{t + 1}" for t in range(args.tracks)])
        options = EvaluateOptions(inference=EvaluateInference(device="cpu", batch_size=args.batch_size),
                                  chroms=tuple(sizes))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tiny preset, {args.tracks} tracks, "
              f"batch {args.batch_size}, fp32, no reverse-complement averaging (evaluate's default)")
        started = time.perf_counter()
        summary = evaluate_model(model_path, folder / "out", targets=sheet, fasta=fasta, cons=cons, options=options)
        total = time.perf_counter() - started
        rest = total - summary.predict_seconds - summary.metrics_seconds
        rate = summary.windows / summary.predict_seconds
        print(f"\n1. evaluate --targets on {args.genome_mb} Mb ({summary.scores.bins:,} bins, {summary.windows:,} "
              f"windows), one run:")
        print(f"   predicting {summary.predict_seconds:8.2f} s  ({rate:.1f} windows/s, inputs and targets read included)")
        print(f"   metrics    {summary.metrics_seconds:8.2f} s")
        print(f"   figures, report, files, set-up {rest:8.2f} s   (total {total:.2f} s)")
        print(f"   prediction / metrics: {summary.predict_seconds / max(summary.metrics_seconds, 1e-9):.1f}x")

    bins = synthetic_bins(args.tracks)
    t0 = time.perf_counter()
    scores = score_bins(bins, top_fraction=0.01, loci=3)
    metrics_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t0 = time.perf_counter()
        plots.plot_heatmap(scores.matrix, scores.tracks, Path(tmp) / "h.png")
        plots.plot_scatter(bins, [r["pearson"] for r in scores.table], Path(tmp) / "s.png")
        plots.plot_loci(scores.loci, scores.tracks, Path(tmp) / "l.png")
        figures_s = time.perf_counter() - t0
    grid = WindowGrid.from_config(preset("tiny"))
    windows = sum(grid.n_windows(size) for size in HG38_HELD_OUT.values())
    predict_s = windows / rate
    print(f"\n2. hg38 chr8 + chr9: {len(bins):,} bins x {args.tracks} tracks (synthesised):")
    print(f"   metrics    {metrics_s:8.2f} s   (score_bins: every number of metrics.tsv, the matrix, specificity "
          f"over {scores.peaks:,} peaks)")
    print(f"   figures    {figures_s:8.2f} s")
    print(f"\n3. predicting them: {windows:,} tiny-preset windows at {rate:.1f} windows/s = {predict_s:8.1f} s "
          f"(extrapolated from run 1)")
    print(f"   prediction / (metrics + figures): {predict_s / (metrics_s + figures_s):.1f}x; prediction's share "
          f"{100 * predict_s / (predict_s + metrics_s + figures_s):.0f}% of the run")
    full, tiny = preset("epiformer"), preset("tiny")  # the published size, and the measured one
    flops_ratio = (full.seq_len * full.stem_channels * full.d_model) / (tiny.seq_len * tiny.stem_channels * tiny.d_model)
    full_windows = sum(WindowGrid.from_config(full).n_windows(size) for size in HG38_HELD_OUT.values())
    print(f"   (the full-size preset: {full_windows:,} windows at ~{flops_ratio:.0f}x the tiny preset's FLOPs a window "
          f"(engine.py's estimate): prediction takes ~{math.ceil(full_windows * flops_ratio / windows):,}x longer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
