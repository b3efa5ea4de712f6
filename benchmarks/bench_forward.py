"""Forward-pass speed of a full-size model on this machine, against its own GEMM rate.

Run:  python benchmarks/bench_forward.py [--repeats 5] [--preset epiformer|published|small|tiny]
          [--precisions fp32 bf16] [--skip-eager] [--seq-len N] [--bf16-matmul-size N]

Prints, per precision: GFLOP per window, the median time of a batch-1 forward (after warm-up)
for the plain eager model and for the fast inference path, the achieved GFLOP/s, this run's
matrix-multiply GFLOP/s (timed in the same rounds, interleaved with the forwards), their ratio
(median and per round), the outputs' relative error against fp32, and the load average before and
after (the machine may be shared).

Which FLOPs: those the EAGER model defines (``build_network(cfg)``, either family), counted by
torch's FlopCounterMode (convolutions, matmuls) plus the fused CPU attention kernel, which
FlopCounterMode (torch 2.13) does not count (``_scaled_dot_product_flash_attention_for_cpu``:
q.k^T and p.v, 2 x 2 L^2 d per layer). An analytic count per part is printed as a check. Every
rate uses the eager count, also for the fast path, so a fold the fast path makes counts as
speed; for the ``published`` family the fast path folds the head's pointwise conv (d -> 2d) and
linear (2d -> tracks) into one (tracks x d) matrix and so does ~1.5 GFLOP less per window
(printed as "fast path computes").

``published`` family, per layer (L bins, d width, h heads of dh = d / h, f feed-forward width):
q, k, v projections 3 x 2 L d^2 (no output projection); the relative_key term, one
(L x dh) by (dh x (2L - 1)) product per head, 2 L dh (2L - 1) h; attention 4 L^2 d; feed-forward
d -> f -> d without a gate, 4 L d f. The conv tower is the same layout as ``epiformer``'s (4 input
channels instead of 5).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Dict

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.model import build_network, count_parameters, prepare_for_inference, preset
from epiformer_cli.model.config import PRESETS, ModelConfig


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "n/a"


def model_flops(cfg: ModelConfig) -> Dict[str, int]:
    """Analytic FLOPs (2 per multiply-add) of one window of the eager model, by part.

    Keys: ``tower`` (stem + 6 blocks: convolutions and pointwise residual convolutions),
    ``qkv``, ``out_proj`` (epiformer only), ``rel_key`` (published only), ``attention``
    (q.k^T and p.v), ``ffn``, ``head`` (the eager head), ``head_fast`` (the fast path's head:
    the published family folds conv + linear into one (tracks x d) matrix) and ``total``
    (eager). Element-wise work (norms, activations, pools, softmax) is not counted, as in
    FlopCounterMode.
    """
    parts: Dict[str, int] = {}
    length = cfg.seq_len
    tower = 2 * length * cfg.in_channels * cfg.stem_channels * cfg.stem_kernel
    tower += 2 * length * cfg.stem_channels ** 2
    c_in = cfg.stem_channels
    for c_out in cfg.tower_channels:
        length //= 2  # each stage's conv runs on its input length, then pools
        tower += 2 * length * c_in * c_out * cfg.tower_kernel + 2 * length * c_out ** 2
        c_in = c_out
    parts["tower"] = tower
    L, d, h, f = cfg.n_bins, cfg.d_model, cfg.n_heads, cfg.ffn_dim
    dh = d // h
    n, ob = cfg.n_layers, cfg.out_bins
    parts["qkv"] = n * 3 * 2 * L * d * d
    parts["attention"] = n * 2 * 2 * L * L * d
    if cfg.arch == "published":
        parts["rel_key"] = n * h * 2 * L * dh * (2 * L - 1)
        parts["ffn"] = n * 2 * 2 * L * d * f
        parts["head"] = 2 * ob * d * cfg.head_hidden + 2 * ob * cfg.head_hidden * cfg.n_tracks
        parts["head_fast"] = 2 * ob * d * cfg.n_tracks
    else:
        parts["out_proj"] = n * 2 * L * d * d
        parts["ffn"] = n * (2 * L * d * 2 * f + 2 * L * f * d)  # SwiGLU: d -> 2f (value, gate), f -> d
        parts["head"] = 2 * ob * d * 2 * cfg.head_hidden + 2 * ob * cfg.head_hidden * cfg.n_tracks
        parts["head_fast"] = parts["head"]
    parts["total"] = sum(v for k, v in parts.items() if k != "head_fast")
    return parts


def trunk_flops(parts: Dict[str, int], fast: bool = True) -> int:
    """Transformer + head FLOPs (what every alternative allele still costs in score-variants)."""
    head = parts["head_fast"] if fast else parts["head"]
    return sum(parts.get(k, 0) for k in ("qkv", "out_proj", "rel_key", "attention", "ffn")) + head


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def counted_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's count of one eager forward, with the fused CPU attention kernel counted."""
    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _cpu_attention_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="epiformer", choices=sorted(PRESETS),
                        help="model preset; 'published' is the published 8-layer network (arch published)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (medians are reported)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--skip-eager", action="store_true", help="do not time the plain eager model")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="override the preset's window (bp, a multiple of 128): a reduced model, "
                             "e.g. for bf16 on a CPU without bf16 instructions")
    parser.add_argument("--bf16-matmul-size", type=int, default=4096,
                        help="side of the bf16 reference matmul (fp32 is always 4096); smaller where "
                             "bf16 matmuls are emulated (AVX2-only CPUs: ~1 GFLOP/s)")
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = preset(args.preset) if args.seq_len is None else preset(args.preset, seq_len=args.seq_len)
    model = build_network(cfg).eval()
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 4, (1, cfg.seq_len), generator=g, dtype=torch.uint8)
    cons = torch.rand(1, cfg.seq_len, generator=g)
    x = model_inputs(codes, cons, cfg.conservation)

    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"python {platform.python_version()}")
    print(f"load average before: {loadavg()}")
    print(f"model: preset {args.preset} (arch {cfg.arch}, {cfg.n_layers} layers, width {cfg.d_model}, "
          f"{cfg.n_heads} heads), {count_parameters(model):,} parameters, input {tuple(x.shape)}")

    parts = model_flops(cfg)
    counted = counted_flops(model, x)
    gflop = counted / 1e9
    print(f"work: {gflop:.4g} GFLOP per window, the eager model's (FlopCounterMode + fused CPU attention)")
    detail = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in parts.items() if k not in ("total", "head_fast"))
    print(f"  analytic: {parts['total'] / 1e9:.4g} GFLOP ({detail})")
    if parts["head_fast"] != parts["head"]:
        fast_total = parts["total"] - parts["head"] + parts["head_fast"]
        print(f"  fast path computes {fast_total / 1e9:.1f} GFLOP (head folded to (tracks x d): "
              f"{parts['head_fast'] / 1e9:.4f} instead of {parts['head'] / 1e9:.2f}); rates below use the eager count")

    # The machine may be shared: every round times each matmul and each forward once, back to
    # back, so the ratio compares rates measured under the same load; medians over rounds.
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    sizes = {"fp32": 4096, "bf16": args.bf16_matmul_size}
    mats = {}
    for p in args.precisions:
        n, d = sizes[p], dtypes[p]
        mats[p] = (torch.randn(n, n).to(d), torch.randn(n, n).to(d), torch.empty(n, n, dtype=d))
    paths = {}
    outputs = {}
    with torch.no_grad():
        if not args.skip_eager:
            if "fp32" in args.precisions:
                paths["eager fp32"] = ("fp32", lambda: model(x))
            if "bf16" in args.precisions:
                def eager_bf16():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return model(x).float()

                paths["eager bf16 (autocast)"] = ("bf16", eager_bf16)
        for name in args.precisions:
            fast = prepare_for_inference(model, dtypes[name])
            # the published family's transformer + head run in fp32 whatever the tower's dtype
            trunk = "" if fast.trunk_dtype == fast.dtype else ", fp32 trunk"
            paths[f"fast {name} ({fast.conv_impl}{trunk})"] = (name, fast)
        for label, (_, fn) in paths.items():  # warm-up, and the outputs compared below
            outputs[label] = fn() if label.startswith("eager") else fn(x)
            if label.startswith("fast"):
                fn(x)
        ref_label = next((k for k in outputs if k.startswith("fast fp32")), None)
        if ref_label is None:  # no fp32 path timed: compare against an (untimed) eager fp32 forward
            ref_label = "eager fp32"
            outputs.setdefault(ref_label, model(x))
        times = {label: [] for label in paths}
        gemm = {p: [] for p in mats}
        for _ in range(args.repeats):
            for p, (a, b, out) in mats.items():
                n = a.shape[0]
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                gemm[p].append(2 * n**3 / (time.perf_counter() - start) / 1e9)
            for label, (_, fn) in paths.items():
                start = time.perf_counter()
                fn() if label.startswith("eager") else fn(x)
                times[label].append(time.perf_counter() - start)
    rates = {p: statistics.median(v) for p, v in gemm.items()}
    for p, v in gemm.items():
        print(f"matmul {p} {sizes[p]}^2: median {rates[p]:.1f} GFLOP/s (rounds: {', '.join(f'{r:.1f}' for r in v)})")

    print()
    # ratio: median forward rate / median matmul rate; best: fastest forward / fastest matmul
    # (the rounds least disturbed by other processes); per round: that round's forward / matmul
    print(f"{'path':34s} {'time s':>8s} {'GFLOP/s':>8s} {'matmul':>8s} {'ratio':>7s} {'best':>6s}  per-round ratio")
    for label, (prec, _) in paths.items():
        t = statistics.median(times[label])
        rate = gflop / t
        best = gflop / min(times[label]) / max(gemm[prec])
        rounds = " ".join(f"{gflop / tt / g:.0%}" for tt, g in zip(times[label], gemm[prec]))
        print(f"{label:34s} {t:8.3f} {rate:8.1f} {rates[prec]:8.1f} {rate / rates[prec]:7.1%} {best:6.0%}  {rounds}")

    ref = outputs[ref_label]
    print()
    for label, y in outputs.items():
        if label == ref_label:
            continue
        rel = ((y - ref).abs().max() / ref.abs().max()).item()
        print(f"max relative difference vs {ref_label.split(' (')[0]}: {label:34s} {rel:.2e}")
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
