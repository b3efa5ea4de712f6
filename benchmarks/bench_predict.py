"""End-to-end `predict` speed and memory against the model alone, and hg38 extrapolations.

Run:  python benchmarks/bench_predict.py [--sizes-mb 50,200] [--e2e-mb 20] [--batch-size 32]
                                         [--skip-rss] [--skip-full] [--workdir DIR]

Measures (tiny preset, random weights; the values do not matter, the work does):
1. model-only forward windows/s: the fast inference path on pre-built inputs, batch B, fp32 and bf16;
2. end-to-end windows/s: predict_genome on a generated genome (reader thread, model, writer thread,
   store, bigWig export) at the same batch size and precision, reverse-complement averaging OFF so
   both count one forward per window (with it on, both halve); ratio end-to-end / model-only; and
   the fraction of the compute loop the model was running rather than waiting for the reader or
   writer threads (robust to a shared machine, unlike the ratio of two separately timed rates);
3. peak RSS of a `epiformer predict` subprocess on generated 50 and 200 Mb genomes;
4. bf16 / fp32 speed-up of the forward (tiny, and the full preset at batch 1);
5. hg38 time on this CPU (full preset, reverse-complement averaging on = 2 forwards a window) and on
   one H100 from FLOPs (assumed rate stated in the output).
The machine may be shared: numbers are medians of a few repeats and may still be disturbed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.model.config import preset
from epiformer_cli.model.fast import prepare_for_inference
from epiformer_cli.model.modelfile import save_model
from epiformer_cli.model.network import Epiformer

HG38_BP = 3_099_734_149  # GRCh38 primary assembly incl. unplaced/unlocalised contigs (UCSC hg38.chrom.sizes, no alts)
HG38_MAIN_CHROMS = 25  # windows are counted per chromosome; contigs add < 1%
H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM bf16 dense tensor-core peak (NVIDIA datasheet)
H100_UTILISATION = 0.40  # assumed fraction of peak a conv + attention model reaches


def write_genome(folder: Path, total_mb: int, chrom_mb: int = 25, seed: int = 0) -> tuple[Path, Path]:
    """A random FASTA of ``total_mb`` Mb in ``chrom_mb`` Mb chromosomes and a conservation bigWig."""
    import pyBigWig

    rng = np.random.default_rng(seed)
    fasta = folder / f"g{total_mb}.fa"
    cons = folder / f"g{total_mb}.cons.bw"
    sizes = {}
    remaining = total_mb * 1_000_000
    i = 1
    while remaining > 0:
        sizes[f"chr{i}"] = min(chrom_mb * 1_000_000, remaining)
        remaining -= sizes[f"chr{i}"]
        i += 1
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(fasta, "wb") as handle:
        for name, size in sizes.items():
            handle.write(f">{name}\n".encode())
            width = 60
            for start in range(0, size, 6_000_000):
                n = min(6_000_000, size - start)
                seq = letters[rng.integers(0, 4, n)]
                rows = -(-n // width)
                padded = np.full(rows * width, ord("\n"), dtype=np.uint8)
                padded[:n] = seq
                buf = np.empty((rows, width + 1), dtype=np.uint8)
                buf[:, :width] = padded.reshape(rows, width)
                buf[:, width] = ord("\n")
                lines = buf.reshape(-1)
                if n % width:  # last partial row: drop its padding
                    lines = np.concatenate([lines[:(rows - 1) * (width + 1) + n % width], np.array([ord("\n")], dtype=np.uint8)])
                handle.write(lines.tobytes())
    bw = pyBigWig.open(str(cons), "w")
    bw.addHeader(list(sizes.items()))
    for name, size in sizes.items():
        starts = np.arange(0, size - 500, 1000, dtype=np.int64)
        bw.addEntries([name] * len(starts), starts.tolist(), ends=(starts + 500).tolist(),
                      values=rng.random(len(starts)).tolist())
    bw.close()
    return fasta, cons


def model_file(folder: Path, name: str = "tiny") -> Path:
    torch.manual_seed(0)
    model = Epiformer(preset(name, n_tracks=2))
    return save_model(folder / f"{name}.pt", model, model.config, ["a", "b"])


def forward_rate(name: str, batch: int, dtype: torch.dtype, repeats: int = 3, batches: int = 4) -> float:
    """Model-only windows/s of the fast inference path (inputs built once, outside the timing)."""
    torch.manual_seed(0)
    model = Epiformer(preset(name, n_tracks=2)).eval()
    fast = prepare_for_inference(model, dtype)
    cfg = model.config
    codes = torch.randint(0, 4, (batch, cfg.seq_len), dtype=torch.uint8)
    x = model_inputs(codes, torch.rand(batch, cfg.seq_len), cfg.conservation, dtype=dtype)
    fast(x)  # warm-up: workspaces, kernels
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batches):
            fast(x)
        rates.append(batch * batches / (time.perf_counter() - t))
    return statistics.median(rates)


def gflop_per_window(name: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    cfg = preset(name, n_tracks=1)
    model = Epiformer(cfg).eval()
    x = model_inputs(torch.randint(0, 4, (1, cfg.seq_len), dtype=torch.uint8), torch.rand(1, cfg.seq_len),
                     cfg.conservation)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def end_to_end(workdir: Path, fasta: Path, cons: Path, model: Path, batch: int, precision: str) -> dict:
    from epiformer_cli.jobs.predict import predict_genome
    from epiformer_cli.options import PredictOptions

    store = workdir / f"e2e-{precision}.store"
    out = workdir / f"e2e-{precision}.bw"
    import shutil

    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    summary = predict_genome(fasta, cons, model, out, store=store,
                             options=PredictOptions.of(device="cpu", precision=precision, batch_size=batch,
                                                       rc_average=False))
    wall = time.perf_counter() - t
    return {"windows": summary.windows_computed, "seconds": wall, "windows_per_s": summary.windows_computed / wall,
            "model_busy": summary.model_busy, "loop_seconds": summary.compute_seconds}


def peak_rss(fasta: Path, cons: Path, model: Path, workdir: Path, batch: int) -> dict:
    """Peak RSS (MB) and wall time of a whole `epiformer predict` process (its own child)."""
    import shutil

    out = workdir / f"rss-{fasta.stem}.bw"
    shutil.rmtree(workdir / f".{out.name}.store", ignore_errors=True)
    cmd = [sys.executable, "-m", "epiformer_cli", "-q", "predict", "--fasta", str(fasta), "--cons", str(cons),
           "--model", str(model), "--out", str(out), "--device", "cpu", "--batch-size", str(batch),
           "--no-rc-average"]
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    kb, seconds, code = done.stdout.split()
    if code != "0":
        raise RuntimeError(f"predict failed: {done.stderr}")
    return {"peak_rss_mb": int(kb) / 1024, "seconds": float(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="50,200", help="genome sizes for the peak-RSS runs")
    parser.add_argument("--e2e-mb", type=int, default=20, help="genome size for the end-to-end rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-full", action="store_true", help="skip the full-preset forward timing")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-predict-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch_size}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, workdir {workdir}", flush=True)

    model = model_file(workdir)
    fasta, cons = write_genome(workdir, args.e2e_mb)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        only = forward_rate("tiny", args.batch_size, dtype)
        e2e = end_to_end(workdir, fasta, cons, model, args.batch_size, precision)
        only_after = forward_rate("tiny", args.batch_size, dtype)  # bracket: the machine may be shared
        reference = (only + only_after) / 2
        results[f"tiny_{precision}"] = {"model_only_windows_per_s": reference, "end_to_end": e2e,
                                        "ratio": e2e["windows_per_s"] / reference}
        print(f"tiny {precision} batch {args.batch_size}: model-only {only:.1f}/{only_after:.1f} windows/s, "
              f"end-to-end {e2e['windows_per_s']:.1f} windows/s ({e2e['windows']} windows, {e2e['seconds']:.1f} s, "
              f"{args.e2e_mb} Mb) -> {e2e['windows_per_s'] / reference:.0%} of model-only; model busy "
              f"{e2e['model_busy']:.1%} of the compute loop", flush=True)
    results["tiny_bf16_speedup"] = (results["tiny_bf16"]["model_only_windows_per_s"]
                                    / results["tiny_fp32"]["model_only_windows_per_s"])
    print(f"tiny bf16/fp32 forward speed-up: {results['tiny_bf16_speedup']:.2f}x", flush=True)

    if not args.skip_rss:
        for mb in (int(s) for s in args.sizes_mb.split(",")):
            g, c = write_genome(workdir, mb, seed=mb)
            rss = peak_rss(g, c, model, workdir, args.batch_size)
            results[f"rss_{mb}mb"] = rss
            print(f"predict on {mb} Mb (tiny, batch {args.batch_size}, no rc): peak RSS {rss['peak_rss_mb']:.0f} MB, "
                  f"{rss['seconds']:.0f} s", flush=True)
            g.unlink()

    out_bp = {name: preset(name).out_bp for name in ("tiny", "epiformer")}
    windows_hg38 = {name: HG38_BP / bp + HG38_MAIN_CHROMS / 2 for name, bp in out_bp.items()}
    gflop = {name: gflop_per_window(name) for name in ("tiny", "epiformer")}
    results["gflop_per_window"] = gflop
    results["hg38_windows"] = windows_hg38
    e2e_rate = results["tiny_fp32"]["end_to_end"]["windows_per_s"]
    results["hg38_tiny_cpu_hours_rc"] = windows_hg38["tiny"] * 2 / e2e_rate / 3600
    print(f"hg38, tiny preset, rc on, this CPU: {results['hg38_tiny_cpu_hours_rc']:.1f} h", flush=True)
    if not args.skip_full:
        full = {p: forward_rate("epiformer", 1, d, repeats=2, batches=1)
                for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        results["full_forward_windows_per_s"] = full
        for p, rate in full.items():
            hours = windows_hg38["epiformer"] * 2 / rate / 3600
            results[f"hg38_full_cpu_hours_rc_{p}"] = hours
            print(f"full preset {p} batch 1: {1 / rate:.2f} s/window ({gflop['epiformer'] * rate:.0f} GFLOP/s); "
                  f"hg38 with rc ({windows_hg38['epiformer']:.0f} windows x 2): {hours:.0f} h on this CPU", flush=True)
        results["full_bf16_speedup"] = full["bf16"] / full["fp32"]
    flop_hg38 = windows_hg38["epiformer"] * 2 * gflop["epiformer"] * 1e9
    h100_s = flop_hg38 / (H100_BF16_DENSE * H100_UTILISATION)
    results["hg38_full_h100_seconds_rc"] = h100_s
    print(f"full preset: {gflop['epiformer']:.0f} GFLOP/window; hg38 with rc = {flop_hg38 / 1e15:.1f} PFLOP -> "
          f"{h100_s / 60:.1f} min on one H100 at {H100_UTILISATION:.0%} of {H100_BF16_DENSE / 1e12:.0f} TFLOP/s bf16",
          flush=True)
    (workdir / "bench_predict.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
