"""Variants/s of score-variants' fast path against the plain path, on this CPU.

The plain path is a full reference AND alternative forward pass per variant (what scoring without
shared reference passes and incremental towers costs); the fast path shares one reference pass per
grid window and recomputes only an SNV's receptive field in the conv tower (Transformer and head
still run per allele). Same windows, same precision, same random model, RC averaging off (it
doubles both paths alike). Timing covers the model work only (no FASTA/VCF I/O).

    python benchmarks/bench_score_variants.py                      # tiny, then small, then full (brief)
    python benchmarks/bench_score_variants.py --presets epiformer --per-window 10 30 --precision bf16
    python benchmarks/bench_score_variants.py --presets published --per-window 10 30 --rounds 3

Both model families run (``published`` is the published 8-layer network). Each round times the
fast path and then the plain path for every SNV count; the table gives medians over rounds and
each round's speed-up (the machine may be shared).

The bound: per variant the fast path still runs the whole Transformer + head for the alternative
allele (plus a few hundred bp of conv tower), and one full reference pass per window is shared by
its n SNVs; the plain path runs two full forwards. With F the FLOPs of one fast-path forward, T
those of its Transformer + head and P the incremental tower's per SNV, the exact computation is
at best 2 F / (F / n + T + P) times faster ("FLOP bound"; FLOPs of the model as the fast path
computes it, from ``bench_forward.model_flops``: the published head folded to (tracks x d)). The
"time bound" is the same formula with this run's measured times of a fast forward and of a
Transformer + head pass (P ignored).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_forward import loadavg, model_flops, trunk_flops  # noqa: E402


def patch_flops(tower) -> int:
    """FLOPs of the incremental tower for one single-base substitution (all stages' patches)."""
    total = 0
    for (_, out_w, _), st in zip(tower._plan(1), tower.stages):
        rows = 2 * out_w  # conv outputs before the max-pool
        total += 2 * rows * st.kernel * st.c_in * st.c_out + 2 * rows * st.c_out ** 2
    return total


def config_patch_flops(cfg) -> int:
    """:func:`patch_flops` from the model config alone (no model built): the same stage plan as
    ``IncrementalTower._plan(1)``."""
    stages = [(cfg.stem_kernel, cfg.in_channels, cfg.stem_channels)]
    c_in = cfg.stem_channels
    for c_out in cfg.tower_channels:
        stages.append((cfg.tower_kernel, c_in, c_out))
        c_in = c_out
    total, w = 0, 1
    for kernel, c_in, c_out in stages:
        w = (w + 2 * (kernel // 2) + 1) // 2 + 1
        rows = 2 * w
        total += 2 * rows * kernel * c_in * c_out + 2 * rows * c_out ** 2
    return total


def bench(preset_name: str, per_windows, windows: int, precision: str, plain_variants: int, rounds: int) -> list:
    from epiformer_cli.data.encoding import model_inputs
    from epiformer_cli.model.config import preset
    from epiformer_cli.model.fast import prepare_for_inference
    from epiformer_cli.model.incremental import IncrementalTower
    from epiformer_cli.model.network import build_network

    torch.manual_seed(0)
    cfg = preset(preset_name, n_tracks=1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fast = prepare_for_inference(build_network(cfg).eval(), dtype)
    tower = IncrementalTower(fast)
    rng = np.random.default_rng(0)
    L, crop = cfg.seq_len, cfg.crop_bp
    cons = torch.zeros(1, L)

    def inputs(codes):
        return model_inputs(codes[None], cons, cfg.conservation, dtype=dtype)

    def window():
        return torch.from_numpy(rng.integers(0, 4, L, dtype=np.uint8))

    # warm-up
    w0 = window()
    fast(inputs(w0))
    tower.finish(tower.reference(inputs(w0)).z)

    parts = model_flops(cfg)
    f_fwd = parts["total"] - parts["head"] + parts["head_fast"]
    f_trunk = trunk_flops(parts)
    f_patch = patch_flops(tower)

    runs = {k: {"fast": [], "plain": [], "trunk_s": [], "forward_s": []} for k in per_windows}
    for _ in range(rounds):
        for k in per_windows:
            t_trunk = []
            t0 = time.perf_counter()
            n_fast = 0
            for _ in range(windows):
                codes = window()
                x = inputs(codes)
                state = tower.reference(x)
                s = time.perf_counter()
                tower.finish(state.z)
                t_trunk.append(time.perf_counter() - s)
                pos = rng.integers(crop, L - crop, k).tolist()
                cols = []
                for p in pos:
                    alt = codes[p:p + 1].clone()
                    alt[0] = (alt[0] + 1) % 4
                    cols.append(model_inputs(alt[None], cons[:, p:p + 1], cfg.conservation, dtype=dtype)[0])
                tower.finish(tower.alternative_z(state, pos, torch.stack(cols)))
                n_fast += k
            t_fast = time.perf_counter() - t0

            t0 = time.perf_counter()
            n_plain = 0
            codes = window()
            for p in rng.integers(crop, L - crop, plain_variants).tolist():
                alt = codes.clone()
                alt[p] = (alt[p] + 1) % 4
                fast(inputs(codes))
                fast(inputs(alt))
                n_plain += 1
            t_plain = time.perf_counter() - t0
            r = runs[k]
            r["fast"].append(n_fast / t_fast)
            r["plain"].append(n_plain / t_plain)
            r["trunk_s"].append(statistics.median(t_trunk))
            r["forward_s"].append(t_plain / (2 * n_plain))

    rows = []
    for k, r in runs.items():
        speedups = [a / b for a, b in zip(r["fast"], r["plain"])]
        t_fwd, t_trunk = statistics.median(r["forward_s"]), statistics.median(r["trunk_s"])
        rows.append({
            "preset": preset_name, "precision": precision, "per_window": k,
            "fast_vps": statistics.median(r["fast"]), "plain_vps": statistics.median(r["plain"]),
            "speedup": statistics.median(speedups), "rounds": speedups,
            "flop_share": f_trunk / f_fwd, "flop_bound": 2 * f_fwd / (f_fwd / k + f_trunk + f_patch),
            "time_share": t_trunk / t_fwd, "time_bound": 2 * t_fwd / (t_fwd / k + t_trunk),
            "gflop_forward": f_fwd / 1e9, "gflop_trunk": f_trunk / 1e9, "mflop_patch": f_patch / 1e6,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "epiformer"],
                    choices=["tiny", "small", "epiformer", "published"])
    ap.add_argument("--per-window", nargs="+", type=int, default=[10, 30])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds per preset (medians reported)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # (windows of SNVs, plain variants) per round: brief
    sizes = {"tiny": (4, 20), "small": (2, 6), "epiformer": (1, 2), "published": (1, 2)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average before: {loadavg()}")
    print("preset      precision  SNVs/window  fast var/s  plain var/s  speedup  per-round        "
          "FLOP bound (T/F)   time bound (T/F)")
    for name in args.presets:
        windows, plain = sizes[name]
        for r in bench(name, args.per_window, windows, args.precision, plain, args.rounds):
            rounds = " ".join(f"{s:.1f}" for s in r["rounds"])
            print(f"{r['preset']:<11} {r['precision']:<10} {r['per_window']:>11}  {r['fast_vps']:>10.2f}  "
                  f"{r['plain_vps']:>11.3f}  {r['speedup']:>6.1f}x  {rounds:<15}  "
                  f"{r['flop_bound']:>5.2f}x ({r['flop_share']:.3f})    {r['time_bound']:>5.2f}x ({r['time_share']:.3f})",
                  flush=True)
        print(f"  {name}: fast forward {r['gflop_forward']:.1f} GFLOP, Transformer + head {r['gflop_trunk']:.2f} GFLOP, "
              f"incremental tower {r['mflop_patch']:.0f} MFLOP per SNV", flush=True)
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
