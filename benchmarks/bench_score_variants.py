"""Variants/s of score-variants' fast path against the plain path, on this CPU.

The plain path is a full reference AND alternative forward pass per variant (what scoring without
shared reference passes and incremental towers costs); the fast path shares one reference pass per
grid window and recomputes only an SNV's receptive field in the conv tower (Transformer and head
still run per allele). Same windows, same precision, same random model, RC averaging off (it
doubles both paths alike). Timing covers the model work only (no FASTA/VCF I/O).

    python benchmarks/bench_score_variants.py                      # tiny, then small, then full (brief)
    python benchmarks/bench_score_variants.py --presets epiformer --per-window 10 30 --precision bf16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def bench(preset_name: str, per_window: int, windows: int, precision: str, plain_variants: int) -> dict:
    from epiformer_cli.data.encoding import model_inputs
    from epiformer_cli.model.config import preset
    from epiformer_cli.model.incremental import IncrementalTower
    from epiformer_cli.model.fast import prepare_for_inference
    from epiformer_cli.model.network import Epiformer

    torch.manual_seed(0)
    cfg = preset(preset_name, n_tracks=1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fast = prepare_for_inference(Epiformer(cfg).eval(), dtype)
    tower = IncrementalTower(fast)
    rng = np.random.default_rng(0)
    L, crop = cfg.seq_len, cfg.crop_bp
    wins = [torch.from_numpy(rng.integers(0, 4, L, dtype=np.uint8)) for _ in range(windows)]
    cons = torch.zeros(1, L)

    def inputs(codes):
        return model_inputs(codes[None], cons, cfg.conservation, dtype=dtype)

    # warm-up
    fast(inputs(wins[0]))
    tower.finish(tower.reference(inputs(wins[0])).z)

    t0 = time.perf_counter()
    n_fast = 0
    for codes in wins:
        x = inputs(codes)
        state = tower.reference(x)
        tower.finish(state.z)
        pos = rng.integers(crop, L - crop, per_window).tolist()
        cols = []
        for p in pos:
            alt = codes[p:p + 1].clone()
            alt[0] = (alt[0] + 1) % 4
            cols.append(model_inputs(alt[None], cons[:, p:p + 1], cfg.conservation, dtype=dtype)[0])
        tower.finish(tower.alternative_z(state, pos, torch.stack(cols)))
        n_fast += per_window
    t_fast = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_plain = 0
    codes = wins[0]
    for p in rng.integers(crop, L - crop, plain_variants).tolist():
        alt = codes.clone()
        alt[p] = (alt[p] + 1) % 4
        fast(inputs(codes))
        fast(inputs(alt))
        n_plain += 1
    t_plain = time.perf_counter() - t0
    fast_rate, plain_rate = n_fast / t_fast, n_plain / t_plain
    return {"preset": preset_name, "precision": precision, "per_window": per_window,
            "fast_vps": fast_rate, "plain_vps": plain_rate, "speedup": fast_rate / plain_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "epiformer"])
    ap.add_argument("--per-window", nargs="+", type=int, default=[10, 30])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {"tiny": (4, 20), "small": (2, 6), "epiformer": (1, 2)}  # (windows, plain variants): brief
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("preset      precision  SNVs/window  fast var/s  plain var/s  speedup")
    for name in args.presets:
        windows, plain = sizes.get(name, (1, 2))
        for k in args.per_window:
            r = bench(name, k, windows, args.precision, plain)
            print(f"{r['preset']:<11} {r['precision']:<10} {k:>11}  {r['fast_vps']:>10.2f}  {r['plain_vps']:>11.3f}  "
                  f"{r['speedup']:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
