"""Forward-pass speed of the full-size Epiformer on this machine, against its own GEMM rate.

Run:  python benchmarks/bench_forward.py [--repeats 5] [--preset epiformer]

Prints, for fp32 and bf16: GFLOP per window (counted by torch's FlopCounterMode), the median
time of a batch-1 forward (after warm-up) for the plain eager model and for the fast inference
path, the achieved GFLOP/s, this run's 4096^2 matrix-multiply GFLOP/s (timed in the same rounds,
interleaved with the forwards), their ratio, and the bf16 outputs' relative error against fp32.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.model import Epiformer, count_parameters, prepare_for_inference, preset


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="epiformer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-eager", action="store_true", help="do not time the plain eager model")
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = preset(args.preset)
    model = Epiformer(cfg).eval()
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 4, (1, cfg.seq_len), generator=g, dtype=torch.uint8)
    cons = torch.rand(1, cfg.seq_len, generator=g)
    x = model_inputs(codes, cons, cfg.conservation)

    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"python {platform.python_version()}")
    print(f"model: preset {args.preset}, {count_parameters(model):,} parameters, input {tuple(x.shape)}")

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    gflop = counter.get_total_flops() / 1e9
    print(f"work: {gflop:.1f} GFLOP per window (FlopCounterMode: convolutions, matmuls, attention)")

    # The machine may be shared: every round times each matmul and each forward once, back to
    # back, so the ratio compares rates measured under the same load; medians over rounds.
    n = 4096
    mats = {p: (torch.randn(n, n).to(d), torch.randn(n, n).to(d), torch.empty(n, n, dtype=d))
            for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    paths = {}
    outputs = {}
    with torch.no_grad():
        if not args.skip_eager:
            paths["eager fp32"] = ("fp32", lambda: model(x))

            def eager_bf16():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(x).float()

            paths["eager bf16 (autocast)"] = ("bf16", eager_bf16)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            fast = prepare_for_inference(model, dtype)
            paths[f"fast {name} ({fast.conv_impl})"] = (name, fast)
        for label, (_, fn) in paths.items():  # warm-up, and the outputs compared below
            outputs[label] = fn() if label.startswith("eager") else fn(x)
            if label.startswith("fast"):
                fn(x)
        times = {label: [] for label in paths}
        gemm = {p: [] for p in mats}
        for _ in range(args.repeats):
            for p, (a, b, out) in mats.items():
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                gemm[p].append(2 * n**3 / (time.perf_counter() - start) / 1e9)
            for label, (_, fn) in paths.items():
                start = time.perf_counter()
                fn() if label.startswith("eager") else fn(x)
                times[label].append(time.perf_counter() - start)
    rates = {p: statistics.median(v) for p, v in gemm.items()}
    for p, v in gemm.items():
        print(f"matmul {p} {n}^2: median {rates[p]:.0f} GFLOP/s (rounds: {', '.join(f'{r:.0f}' for r in v)})")

    print()
    print(f"{'path':28s} {'time s':>8s} {'GFLOP/s':>8s} {'matmul':>8s} {'ratio':>7s}  per-round ratio")
    for label, (prec, _) in paths.items():
        t = statistics.median(times[label])
        rate = gflop / t
        rounds = " ".join(f"{gflop / tt / g:.0%}" for tt, g in zip(times[label], gemm[prec]))
        print(f"{label:28s} {t:8.3f} {rate:8.0f} {rates[prec]:8.0f} {rate / rates[prec]:7.1%}  {rounds}")

    ref = [v for k, v in outputs.items() if k.startswith("fast fp32")][0]
    print()
    for label, y in outputs.items():
        if label.startswith("fast fp32"):
            continue
        rel = ((y - ref).abs().max() / ref.abs().max()).item()
        print(f"max relative difference vs fast fp32: {label:28s} {rel:.2e}")


if __name__ == "__main__":
    main()
