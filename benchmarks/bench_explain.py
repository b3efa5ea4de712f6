"""explain's cost on this CPU: ISM's fast path against plain passes, gradient x input in forward
passes, and the job's memory on 1,000 against 10,000 regions.

Run:  python benchmarks/bench_explain.py                       # all three parts (~20-30 min on 2 cores)
      python benchmarks/bench_explain.py --quick               # smoke run: tiny model, few regions (~30 s)
      python benchmarks/bench_explain.py --parts ism --preset epiformer --bases 4 --rounds 5
      python benchmarks/bench_explain.py --parts ism --preset published --bases 4 --rounds 3
      python benchmarks/bench_explain.py --parts gradient --gradient-presets tiny epiformer
      python benchmarks/bench_explain.py --parts memory --regions 1000 10000 --memory-tracks a --memory-threads 1

Every ratio is measured in ONE run (the machine may be shared): each round times both sides of a
ratio back to back, and medians over rounds are reported with the per-round values.

1. ISM (``--parts ism``; ``--preset``, default the full ``epiformer``; random weights, 1 track,
   reverse-complement averaging OFF, so one view; fp32). The fast path is
   ``IsmExplainer(engine).explain`` of a span of ``--bases`` bases (3 mutants a base): one
   reference pass (tower + transformer + head), then per mutant the conv tower only inside its
   receptive field (``IncrementalTower.alternative_z_many``) and the transformer + head
   (``finish_many``). The plain path is ``engine.predict`` of each mutant's whole window. Per
   round: the fast call of ``--bases`` bases, the same call on an empty span (its fixed part: the
   reference pass), ``--plain`` plain passes, one transformer + head call on a batch of mutants
   (``finish_many``) and a 4096^2 fp32 matmul. Two speed-ups over the plain path are printed:
     call:     mutants/s of the whole call (reference pass included);
     marginal: per mutant beyond the reference, n / (t(call) - t(empty span)): what long spans approach.
   The bounds, with F the FLOPs of one forward (as the fast path computes it: bench_forward's
   analytic count, checked against FlopCounterMode on the plain network), T those of the
   transformer + head and P the incremental tower's for one substitution (bench_score_variants'
   ``patch_flops``): a plain mutant costs F, a fast one T + P, and the call's reference pass F is
   shared by its n = 3 x bases mutants, so
     call <= F / (F / n + T + P),     marginal <= F / (T + P)      ("FLOP bound").
   The "time bound" is the same with this run's times: a plain pass for F, the transformer + head
   call per mutant for T + P.
   The achieved GFLOP/s of the fast path (those FLOPs over the measured time) is printed against
   the matmul rate of the same rounds. (bench_forward.py times its matmul inline in ``main``, so
   the few lines are repeated here as ``matmul_gflops``; its FLOP counters are imported.)

2. Gradient (``--parts gradient``): ``GradientExplainer(model, engine).explain`` of one 100 bp
   region, reverse-complement averaging ON (2 views), 1 and 3 tracks (the full preset: 1 track,
   ``--gradient-repeats-full`` rounds), divided by one plain forward of the same eager network
   under ``torch.no_grad()`` timed in the same round ("forward-pass equivalents"); also per fast-
   path forward (``prepare_for_inference``, what ``predict`` runs). gradient.py's docstring
   estimates views x (1 + 2 x tracks), counting a backward as two forwards; autograd.grad with
   respect to the input alone skips the weight gradients, so about views x (1 + tracks) is expected.

3. Memory (``--parts memory``): the real job ``epiformer_cli.jobs.explain.explain`` (tiny preset,
   random weights, 2 tracks ``a`` and ``b``, of which ``--memory-tracks`` are explained (default
   both), ``--memory-method`` gradient by default, ``plot=0``, rc off, cpu) on a
   generated genome (one chromosome of ``--genome-mb`` Mb, random ACGT with N telomeres, per-base
   conservation bigWig) and BEDs of ``--regions`` random ``--region-bp`` bp regions, each run in a
   fresh child process; prints its peak RSS (ru_maxrss of that child, measured by a parent of its
   own) and wall time, and the RSS the child reached after its first region, half of them and all
   of them (before the outputs are assembled). Generated files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_forward import counted_flops, cpu_model, loadavg, model_flops, trunk_flops  # noqa: E402
from bench_score_variants import patch_flops  # noqa: E402

from epiformer_cli.model.config import PRESETS  # noqa: E402


def matmul_gflops(mats) -> float:
    """GFLOP/s of one fp32 square matmul (``mats`` = (a, b, out)); bench_forward's reference rate."""
    a, b, out = mats
    n = a.shape[0]
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    return 2 * n ** 3 / (time.perf_counter() - start) / 1e9


def _pct(values: Sequence[float]) -> str:
    return " ".join(f"{v:.0%}" for v in values)


def _nums(values: Sequence[float], fmt: str = ".2f") -> str:
    return ", ".join(format(v, fmt) for v in values)


def random_window(cfg, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, cfg.seq_len, dtype=np.uint8)
    cons = rng.random(cfg.seq_len, dtype=np.float32)
    return codes, cons


# ---- 1. ISM ---------------------------------------------------------------------------------------
def bench_ism(preset_name: str, bases: int, rounds: int, plain: int, matmul_n: int, flop_count: bool) -> None:
    from epiformer_cli.data.encoding import model_inputs
    from epiformer_cli.explain.ism import IsmExplainer
    from epiformer_cli.explain.regions import place
    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.model.config import preset
    from epiformer_cli.model.network import build_network

    torch.manual_seed(0)
    cfg = preset(preset_name, n_tracks=1)
    model = build_network(cfg).eval()
    codes, cons = random_window(cfg)
    print(f"\n== ISM: preset {preset_name} (arch {cfg.arch}, {cfg.seq_len:,} bp, {cfg.n_bins} bins, width "
          f"{cfg.d_model}, {cfg.n_layers} layers), 1 track, rc off (1 view), fp32", flush=True)

    parts = model_flops(cfg)
    f_fwd = parts["total"] - parts["head"] + parts["head_fast"]
    f_trunk = trunk_flops(parts)
    if flop_count:
        x = model_inputs(torch.from_numpy(codes)[None], torch.from_numpy(cons)[None], cfg.conservation)
        counted = counted_flops(model, x)
        print(f"FlopCounterMode, plain network: {counted / 1e9:.2f} GFLOP a window (analytic, eager: "
              f"{parts['total'] / 1e9:.2f})", flush=True)
        del x

    engine = InferenceEngine(model, device="cpu", rc_average=False, batch_size=1)
    ism = IsmExplainer(engine)
    f_patch = patch_flops(ism.tower)
    n = 3 * bases
    print(f"F (forward, as the fast path computes it) {f_fwd / 1e9:.2f} GFLOP; T (transformer + head) "
          f"{f_trunk / 1e9:.2f} GFLOP (T/F {f_trunk / f_fwd:.3f}); P (incremental tower, 1 bp) "
          f"{f_patch / 1e9:.3f} GFLOP", flush=True)
    print(f"bases per transformer call (ism.bases_per_batch): {ism.bases_per_batch}", flush=True)

    # a span of `bases` bases in the middle of the window, placed as the job places regions
    mid = cfg.seq_len // 2
    pl = place(mid, mid + bases, cfg)

    def fast_call(mutate: bool = True):
        # mutate=False: an empty span, i.e. only the call's fixed part (the reference pass)
        return ism.explain(codes, cons, pl.first, pl.last if mutate else pl.first, pl.bins)

    def plain_pass(i):
        mutant = codes.copy()
        off = pl.first + i % bases
        mutant[off] = (mutant[off] + 1 + i // bases % 3) % 4
        return engine.predict(mutant[None], cons[None])

    # the transformer + head alone on one call's batch of mutants: the "time bound" below
    z_batch = torch.randn(3 * ism.bases_per_batch, cfg.n_bins, cfg.d_model, generator=torch.Generator().manual_seed(2))

    def trunk_call():
        ism.tower.finish_many(z_batch)

    mats = (torch.randn(matmul_n, matmul_n), torch.randn(matmul_n, matmul_n), torch.empty(matmul_n, matmul_n))
    # warm-up: work buffers of every shape used below, kernels, the matmul
    t0 = time.perf_counter()
    fast_call()
    fast_call(False)
    plain_pass(0)
    trunk_call()
    matmul_gflops(mats)
    print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)

    rec: Dict[str, List[float]] = {k: [] for k in ("call", "ref", "plain", "trunk", "mm")}
    for r in range(rounds):
        rec["mm"].append(matmul_gflops(mats))
        t = time.perf_counter()
        fast_call()
        rec["call"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fast_call(False)
        rec["ref"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(plain):
            plain_pass(i)
        rec["plain"].append((time.perf_counter() - t) / plain)
        t = time.perf_counter()
        trunk_call()
        rec["trunk"].append((time.perf_counter() - t) / len(z_batch))
        print(f"  round {r + 1}: call ({n} mutants) {rec['call'][-1]:.3f} s, call (0 mutants) {rec['ref'][-1]:.3f} s, "
              f"plain pass {rec['plain'][-1]:.3f} s, transformer + head {rec['trunk'][-1]:.3f} s a mutant, "
              f"matmul {rec['mm'][-1]:.1f} GFLOP/s; load {loadavg()}", flush=True)

    med = statistics.median
    call_bound = f_fwd / (f_fwd / n + f_trunk + f_patch)
    marg_bound = f_fwd / (f_trunk + f_patch)
    # the same bounds with this run's times: a plain pass t_plain for F, a transformer + head
    # pass (finish_many on one call's batch, per mutant) t_trunk for T + P (P ignored)
    t_plain, t_trunk = med(rec["plain"]), med(rec["trunk"])
    call_tbound = t_plain / (t_plain / n + t_trunk)
    marg_tbound = t_plain / t_trunk
    call_ratio = [p * n / c for c, p in zip(rec["call"], rec["plain"])]  # (n / t_call) / (1 / t_plain)
    marg_s = [(c - r) / n for c, r in zip(rec["call"], rec["ref"])]
    marg_ratio = [p / m for m, p in zip(marg_s, rec["plain"])]
    call_gf = [(f_fwd + n * (f_trunk + f_patch)) / c / 1e9 for c in rec["call"]]
    marg_gf = [(f_trunk + f_patch) / m / 1e9 for m in marg_s]
    plain_gf = [f_fwd / p / 1e9 for p in rec["plain"]]
    trunk_gf = [f_trunk / t / 1e9 for t in rec["trunk"]]
    mm = med(rec["mm"])
    print(f"\nmatmul fp32 {matmul_n}^2: median {mm:.1f} GFLOP/s (rounds: {_nums(rec['mm'], '.1f')})")
    print(f"{'path':44s} {'mutants/s':>9s} {'speed-up':>8s} {'FLOP bound':>10s} {'of it':>6s} {'time bound':>10s} "
          f"{'of it':>6s} {'GFLOP/s':>8s} {'of matmul':>9s}  per-round speed-up")
    rows = [
        (f"plain: engine.predict per mutant ({plain}/round)", 1 / t_plain, [1.0] * rounds, None, None, plain_gf),
        (f"fast: explain call, {bases} bases = {n} mutants", n / med(rec["call"]), call_ratio, call_bound, call_tbound,
         call_gf),
        ("fast: marginal mutant (call n - call 0) / n", 1 / med(marg_s), marg_ratio, marg_bound, marg_tbound, marg_gf),
        ("(transformer + head alone, finish_many)", 1 / t_trunk, [t_plain / t for t in rec["trunk"]], None, None,
         trunk_gf),
    ]
    for label, mps, ratios, bound, tbound, gf in rows:
        sp = med(ratios)
        b = f"{bound:9.2f}x {sp / bound:6.0%}" if bound else f"{'':10s} {'':6s}"
        tb = f"{tbound:9.2f}x {sp / tbound:6.0%}" if tbound else f"{'':10s} {'':6s}"
        print(f"{label:44s} {mps:9.3f} {sp:7.2f}x {b} {tb} {med(gf):8.1f} {med(gf) / mm:9.0%}  {_nums(ratios)}")
    print(f"FLOP bounds: call F / (F/n + T + P) = {f_fwd / 1e9:.1f} / ({f_fwd / n / 1e9:.1f} + {f_trunk / 1e9:.2f} + "
          f"{f_patch / 1e9:.3f}); marginal F / (T + P) = {f_fwd / 1e9:.1f} / {(f_trunk + f_patch) / 1e9:.2f}")
    print(f"time bounds: call t_plain / (t_plain/n + t_trunk), marginal t_plain / t_trunk, with t_plain "
          f"{t_plain:.4g} s, t_trunk {t_trunk:.4g} s a mutant (T/F in time {t_trunk / t_plain:.3f}, in FLOPs "
          f"{f_trunk / f_fwd:.3f})")
    print(f"a marginal mutant took {med(marg_s):.4g} s: transformer + head {t_trunk:.4g} s + the rest (incremental "
          f"tower, inputs, sums) {med(marg_s) - t_trunk:.4g} s", flush=True)


# ---- 2. gradient ----------------------------------------------------------------------------------
def bench_gradient(preset_name: str, track_counts: Sequence[int], repeats: int, forwards: int) -> None:
    from epiformer_cli.data.encoding import model_inputs
    from epiformer_cli.explain.gradient import GradientExplainer
    from epiformer_cli.explain.regions import place
    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.model.config import preset
    from epiformer_cli.model.network import build_network

    torch.manual_seed(0)
    cfg = preset(preset_name, n_tracks=max(track_counts))
    model = build_network(cfg).eval()
    codes, cons = random_window(cfg)
    x = model_inputs(torch.from_numpy(codes)[None], torch.from_numpy(cons)[None], cfg.conservation)
    mid = cfg.seq_len // 2
    pl = place(mid - 50, mid + 50, cfg)  # a 100 bp region
    explainers = {}
    for k in track_counts:
        engine = InferenceEngine(model, device="cpu", rc_average=True, tracks=list(range(k)))
        explainers[k] = GradientExplainer(model, engine)
    fast = explainers[track_counts[0]].engine.fast
    print(f"\n== gradient: preset {preset_name} ({cfg.seq_len:,} bp, width {cfg.d_model}, {cfg.n_layers} layers, "
          f"{cfg.n_tracks} model tracks), 100 bp region, rc on (2 views), fp32, {repeats} round(s), "
          f"{forwards} plain forward(s) a round", flush=True)

    def plain_forward():
        with torch.no_grad():
            model(x)

    t0 = time.perf_counter()
    plain_forward()
    fast(x)
    for g in explainers.values():
        g.explain(codes, cons, pl.first, pl.last, pl.bins)
    print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)

    rec: Dict[str, List[float]] = {"fwd": [], "fast": [], **{f"g{k}": [] for k in track_counts}}
    for r in range(repeats):
        ts = []
        for _ in range(forwards):
            t = time.perf_counter()
            plain_forward()
            ts.append(time.perf_counter() - t)
        rec["fwd"].append(statistics.median(ts))
        t = time.perf_counter()
        fast(x)
        rec["fast"].append(time.perf_counter() - t)
        for k, g in explainers.items():
            t = time.perf_counter()
            g.explain(codes, cons, pl.first, pl.last, pl.bins)
            rec[f"g{k}"].append(time.perf_counter() - t)
        print(f"  round {r + 1}: plain forward {rec['fwd'][-1]:.3f} s, fast forward {rec['fast'][-1]:.3f} s, "
              + ", ".join(f"gradient {k} track(s) {rec[f'g{k}'][-1]:.3f} s" for k in track_counts)
              + f"; load {loadavg()}", flush=True)

    med = statistics.median
    print(f"{'':22s} {'time s':>8s} {'plain fwd eq.':>13s} {'fast fwd eq.':>12s} {'docstring':>9s} "
          f"{'views x (1+tracks)':>18s}  per-round plain fwd eq.")
    print(f"{'plain forward (no grad)':22s} {med(rec['fwd']):8.3f}")
    print(f"{'fast-path forward':22s} {med(rec['fast']):8.3f}")
    for k in track_counts:
        per = [g / f for g, f in zip(rec[f"g{k}"], rec["fwd"])]
        per_fast = [g / f for g, f in zip(rec[f"g{k}"], rec["fast"])]
        print(f"{f'gradient, {k} track(s)':22s} {med(rec[f'g{k}']):8.3f} {med(per):13.2f} {med(per_fast):12.2f} "
              f"{2 * (1 + 2 * k):9d} {2 * (1 + k):18d}  {_nums(per)}", flush=True)


# ---- 3. memory of the job -------------------------------------------------------------------------
_MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, "
            "file=sys.stderr); sys.exit(code)")


def run_job(spec: dict) -> None:
    """The child: run the explain job once and print what it did (JSON, last line of stdout)."""
    import resource

    from epiformer_cli.jobs.explain import explain
    from epiformer_cli.options import ExplainOptions, InferenceOptions

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    marks: Dict[str, float] = {"start": rss_mb()}

    def progress(done: int, total=None) -> None:
        # the job calls progress(0, total=T) first, then progress(k) as regions (gradient) or
        # mutants (ISM) are done; older versions passed total=... every time
        if total is not None:
            progress.total = total
        before, progress.n = progress.n, progress.n + done
        if before == 0 and progress.n > 0:
            marks["first region"] = rss_mb()
        if before < progress.total // 2 <= progress.n:
            marks["half"] = rss_mb()
        if before < progress.total <= progress.n:
            marks["all regions"] = rss_mb()

    progress.n, progress.total = 0, 0
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    tracks = tuple(spec["tracks"]) if spec["tracks"] else None
    options = ExplainOptions(inference=InferenceOptions(device="cpu", rc_average=False, tracks=tracks),
                             method=spec["method"], plot=0, max_mutants=10 ** 12, force=True)
    t = time.perf_counter()
    summary = explain(spec["fasta"], spec["cons"], spec["model"], spec["out"], regions=spec["bed"],
                      options=options, progress=progress)
    marks["end"] = rss_mb()
    print(json.dumps({"seconds": time.perf_counter() - t, "regions": summary.regions, "computed": summary.computed,
                      "mutants": summary.mutants, "rss_mb": marks, "files": summary.files}))


def write_bed(path: Path, n: int, region_bp: int, chrom: str, size: int, seed: int) -> Path:
    """``n`` random regions of ``region_bp`` bp, sorted, away from the N telomeres."""
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.integers(20_000, size - 20_000 - region_bp, n))
    with open(path, "w") as handle:
        for i, s in enumerate(starts):
            handle.write(f"{chrom}\t{s}\t{s + region_bp}\tr{i}\n")
    return path


def bench_memory(counts: Sequence[int], region_bp: int, method: str, tracks: Sequence[str], genome_mb: float,
                 threads: int | None, workdir: str | None, keep: bool) -> None:
    from bench_predict import model_file  # tiny preset, random weights, tracks "a" and "b"
    from bench_predict_memory import write_chromosome

    folder = Path(workdir or tempfile.mkdtemp(prefix="bench-explain-"))
    folder.mkdir(parents=True, exist_ok=True)
    size = int(genome_mb * 1_000_000)
    print(f"\n== memory: the explain job, tiny preset (2-track model, tracks explained: "
          f"{', '.join(tracks) if tracks else 'all'}), method {method}, plot 0, rc off, cpu; "
          f"regions of {region_bp} bp on a {genome_mb:g} Mb chromosome; one child process per run, "
          f"{threads or torch.get_num_threads()} torch thread(s)", flush=True)
    try:
        t = time.perf_counter()
        fasta, cons = write_chromosome(folder, "chr1", size, seed=1)
        model = model_file(folder)
        print(f"generated genome, conservation bigWig and model in {time.perf_counter() - t:.0f} s", flush=True)
        results = {}
        for n in counts:
            bed = write_bed(folder / f"regions-{n}.bed", n, region_bp, "chr1", size, seed=n)
            out = folder / f"out-{n}"
            spec = {"fasta": str(fasta), "cons": str(cons), "model": str(model), "bed": str(bed), "out": str(out),
                    "method": method, "tracks": list(tracks), "threads": threads}
            cmd = [sys.executable, os.path.abspath(__file__), "--run-job", json.dumps(spec)]
            done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"explain job failed:\n{done.stderr[-4000:]}")
            kb, seconds = done.stderr.strip().splitlines()[-1].split()
            job = json.loads(done.stdout.strip().splitlines()[-1])
            r = {"peak": int(kb) / 1024, "wall": float(seconds), **job}
            results[n] = r
            marks = ", ".join(f"{k} {v:.0f}" for k, v in job["rss_mb"].items())
            outsize = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
            mutants = f", {job['mutants']:,} mutants" if job["mutants"] else ""
            print(f"{n:>7,} regions: peak RSS {r['peak']:.0f} MB, wall {r['wall']:.1f} s (job {job['seconds']:.1f} s, "
                  f"{n / job['seconds']:.1f} regions/s){mutants}; "
                  f"child RSS MB at: {marks}; outputs {outsize:.1f} MB; load {loadavg()}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if len(counts) >= 2:
            a, b = results[counts[0]], results[counts[-1]]
            print(f"{counts[-1]:,} / {counts[0]:,} regions: peak RSS x{b['peak'] / a['peak']:.2f} "
                  f"({b['peak'] - a['peak']:+.0f} MB), wall time x{b['wall'] / a['wall']:.1f}", flush=True)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["ism", "gradient", "memory"], choices=["ism", "gradient", "memory"])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: ISM and gradient on the tiny preset only, 1 round, 20 and 100 regions")
    ap.add_argument("--threads", type=int, default=None)
    g = ap.add_argument_group("ISM")
    g.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="ISM's model preset (default epiformer; tiny with --quick)")
    g.add_argument("--bases", type=int, default=4, help="span of the fast call (3 mutants a base)")
    g.add_argument("--rounds", type=int, default=3, help="timed rounds (medians reported)")
    g.add_argument("--plain", type=int, default=3, help="plain per-mutant passes a round")
    g.add_argument("--matmul-size", type=int, default=4096, help="side of the fp32 reference matmul")
    g.add_argument("--no-flop-count", action="store_true", help="skip the FlopCounterMode check (one eager forward)")
    g = ap.add_argument_group("gradient")
    g.add_argument("--gradient-presets", nargs="+", default=["tiny", "epiformer"], choices=sorted(PRESETS))
    g.add_argument("--gradient-repeats", type=int, default=5, help="rounds for presets other than the full ones")
    g.add_argument("--gradient-repeats-full", type=int, default=2, help="rounds for epiformer / published (1 track)")
    g = ap.add_argument_group("memory")
    g.add_argument("--regions", nargs="+", type=int, default=[1000, 10000])
    g.add_argument("--region-bp", type=int, default=100)
    g.add_argument("--memory-method", default="gradient", choices=["gradient", "ism"])
    g.add_argument("--memory-tracks", nargs="*", default=[], help="track names to explain (model: a, b; default all)")
    g.add_argument("--genome-mb", type=float, default=10)
    g.add_argument("--memory-threads", type=int, default=None,
                   help="torch threads of the job's process (default: torch's)")
    g.add_argument("--workdir", default=None, help="folder for the generated files (default: a temporary one)")
    g.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--run-job", default=None, help=argparse.SUPPRESS)  # the memory part's child
    args = ap.parse_args()
    if args.run_job:
        run_job(json.loads(args.run_job))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.preset, args.bases, args.rounds, args.plain = args.preset or "tiny", 2, 1, 2
        args.gradient_presets, args.gradient_repeats = ["tiny"], 1
        args.regions, args.genome_mb = [20, 100], 1

    args.preset = args.preset or "epiformer"
    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"load average before: {loadavg()}", flush=True)
    if "ism" in args.parts:
        bench_ism(args.preset, args.bases, args.rounds, args.plain, args.matmul_size, not args.no_flop_count)
    if "gradient" in args.parts:
        for name in args.gradient_presets:
            full = name in ("epiformer", "published")
            bench_gradient(name, [1] if full else [1, 3],
                           args.gradient_repeats_full if full else args.gradient_repeats, 2 if full else 10)
    if "memory" in args.parts:
        bench_memory(args.regions, args.region_bp, args.memory_method, args.memory_tracks, args.genome_mb,
                     args.memory_threads, args.workdir, args.keep)
    print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    main()
