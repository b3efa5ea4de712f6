"""Windows/s and peak RSS of the inference engine by batch size, per preset: what the default CPU
batch (``default_batch_size``) is chosen from.

Run:  python benchmarks/bench_batch_size.py [--presets tiny small epiformer] [--batches 1,2,4,8,16,32,64]
                                            [--repeats 3] [--max-rss-gb 20]

Each (preset, batch) runs in a child process of its own, so its peak RSS (ru_maxrss: torch, the
model, the inputs and one batch size's work buffers) is that batch's alone. The child builds the
preset with random weights, warms up one batch (work buffers), then times ``InferenceEngine.predict``
(fast fp32 path, reverse-complement averaging off) on random inputs of max(``--windows``, batch)
windows twice: wall clock with the default threads, and the CPU time of the one compute thread with
``torch.set_num_threads(1)`` (``time.thread_time``), which other processes on a shared machine do
not inflate much. Children whose work buffers would pass ``--max-rss-gb`` (estimated from the batch
below) are skipped.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

WINDOWS = {"tiny": 128, "small": 32, "epiformer": 2}


def one(name: str, batch: int, windows: int) -> dict:
    """Time one preset at one batch size in this process (the child's side)."""
    import numpy as np
    import torch

    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.model.config import preset
    from epiformer_cli.model.network import Epiformer

    torch.manual_seed(0)
    model = Epiformer(preset(name, n_tracks=2)).eval()
    engine = InferenceEngine(model, device="cpu", batch_size=batch, rc_average=False)
    n = -(-max(windows, batch) // batch) * batch
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (n, model.config.seq_len), dtype=np.uint8)
    cons = rng.random((n, model.config.seq_len), dtype=np.float32)
    engine.predict(codes[:batch], cons[:batch])  # warm-up: this batch size's work buffers
    t = time.perf_counter()
    engine.predict(codes, cons)
    wall = n / (time.perf_counter() - t)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = time.thread_time()
    engine.predict(codes, cons)
    cpu = n / (time.thread_time() - t)
    return {"preset": name, "batch": batch, "windows": n, "wall_windows_per_s": wall, "threads": threads,
            "windows_per_cpu_s": cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "epiformer"])
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over all batch sizes (interleaved)")
    ap.add_argument("--windows", type=int, default=None, help="windows per timing (default per preset)")
    ap.add_argument("--max-rss-gb", type=float, default=20.0)
    ap.add_argument("--one", nargs=3, metavar=("PRESET", "BATCH", "WINDOWS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    from epiformer_cli.model.config import preset

    batches = [int(b) for b in args.batches.split(",")]
    rows: dict = {}
    for _ in range(args.repeats):
        for name in args.presets:
            cfg = preset(name)
            per_window_gb = 26 * cfg.seq_len * cfg.stem_channels / 1e9  # work buffers, as measured
            for batch in batches:
                if batch * per_window_gb > args.max_rss_gb:
                    continue
                windows = args.windows or WINDOWS.get(name, 8)
                done = subprocess.run([sys.executable, __file__, "--one", name, str(batch), str(windows)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{name} batch {batch} failed:\n{done.stderr}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows.setdefault((name, batch), []).append(r)
                print(f"{name} batch {batch}: {r['wall_windows_per_s']:.2f} windows/s ({r['threads']} threads), "
                      f"{r['windows_per_cpu_s']:.2f} windows/CPU-s (1 thread), peak RSS {r['peak_rss_mb']:.0f} MB",
                      flush=True)
    print("\npreset batch | windows/s median (threads) | windows/CPU-s median | peak RSS MB")
    for (name, batch), rs in rows.items():
        print(f"{name} {batch} | {statistics.median(r['wall_windows_per_s'] for r in rs):.2f} | "
              f"{statistics.median(r['windows_per_cpu_s'] for r in rs):.2f} | "
              f"{max(r['peak_rss_mb'] for r in rs):.0f}")


if __name__ == "__main__":
    main()
