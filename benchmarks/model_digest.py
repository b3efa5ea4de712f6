"""What checking a model file's weights on every load costs (issue 21): full-size model, CPU.

Run:  python benchmarks/model_digest.py [--preset epiformer] [--tracks 1] [--repeats 5]

Builds the network of a preset (default ``epiformer``, the published size: 98,304 bp in) on the
CPU with random weights, saves it with ``save_model`` in a temporary folder, and times, each the
best of ``--repeats`` from the page cache:

1. ``load_model`` as every command calls it (the SHA-256 of the weights and the finite check);
2. ``load_model`` with both checks patched out (``modelfile._check_weights`` a no-op), in
   alternating pairs with 1 so that drift on a shared machine hits both alike;
3. the parts: ``torch.load(weights_only=True)`` alone, ``weights_digest`` alone (and its GB/s),
   ``first_non_finite`` alone.

Prints the ratio with/without and the checks' share of a load. The folder is removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import loadavg  # noqa: E402  (sibling scripts, not a package)
from epiformer_cli.model import build_network, count_parameters, modelfile, preset  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best(fn, repeats: int) -> float:
    return min(timed(fn) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="epiformer", help="model preset (default: the published size)")
    parser.add_argument("--tracks", type=int, default=1, help="output tracks (the head's last layer only)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average before: {loadavg()}")
    cfg = preset(args.preset, n_tracks=args.tracks)
    torch.manual_seed(0)
    model = build_network(cfg).eval()
    tracks = [f"track{i + 1}" for i in range(args.tracks)]
    folder = Path(tempfile.mkdtemp(prefix="model-digest-bench-"))
    try:
        path = modelfile.save_model(folder / "model.pt", model, cfg, tracks)
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        print(f"preset {args.preset}: {count_parameters(model):,} parameters, {len(state)} tensors, "
              f"{nbytes / 1e6:.1f} MB of weights, file {path.stat().st_size / 1e6:.1f} MB")
        modelfile.load_model(path)  # warm the page cache and torch's first-call costs

        checked_fn = modelfile._check_weights
        checked, unchecked = [], []
        for i in range(args.repeats):  # alternate which goes first
            order = [("checked", checked_fn), ("unchecked", lambda *a: None)]
            for name, fn in order if i % 2 == 0 else reversed(order):
                modelfile._check_weights = fn
                (checked if name == "checked" else unchecked).append(timed(lambda: modelfile.load_model(path)))
        modelfile._check_weights = checked_fn

        raw_load = best(lambda: torch.load(path, map_location="cpu", weights_only=True), args.repeats)
        digest = best(lambda: modelfile.weights_digest(state), args.repeats)
        finite = best(lambda: modelfile.first_non_finite(state), args.repeats)
        print(f"load average after: {loadavg()}")
        print()
        print(f"    {'what (best of ' + str(args.repeats) + ')':50s} {'time':>9s}")
        rows = [("load_model, checked (every command)", min(checked)),
                ("load_model, checks patched out", min(unchecked)),
                ("  torch.load(weights_only=True) alone", raw_load),
                ("  weights_digest alone", digest),
                ("  first_non_finite alone", finite)]
        for name, seconds in rows:
            print(f"    {name:50s} {seconds * 1e3:7.1f} ms")
        print(f"    checked runs:   {', '.join(f'{t * 1e3:.0f}' for t in checked)} ms")
        print(f"    unchecked runs: {', '.join(f'{t * 1e3:.0f}' for t in unchecked)} ms")
        print(f"    SHA-256 of the weights: {nbytes / digest / 1e9:.2f} GB/s")
        print(f"    ratio checked / unchecked load (best of each): {min(checked) / min(unchecked):.3f}x; "
              f"the checks' own work: {(digest + finite) / min(unchecked) * 100:.1f}% of an unchecked load")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
