"""Does the training DataLoader keep up with the model? Windows/s delivered vs windows/s consumed.

For the ``tiny`` (16,384 bp), ``small`` (32,768 bp) and full ``epiformer`` (98,304 bp) presets:
builds the demo genome and a store of that window length in a temporary folder, measures the
windows/s the DataLoader delivers (batches of 8 windows, with augmentation, as in training) with 0,
1 and 2 workers, and the windows/s of a full training step (forward, backward, AdamW) on this CPU,
and prints the ratio. The loader must exceed the model. For the full preset it also estimates the
training windows/s of one H100 from the model's FLOPs (a training step costs about 3x the forward
pass), which is what a loader must feed there.

    python benchmarks/bench_dataloader.py [--batches 30] [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from epiformer_cli.data.dataset import Augment, TrainBatchSampler, WindowDataset  # noqa: E402
from epiformer_cli.data.encoding import model_inputs  # noqa: E402
from epiformer_cli.data.training_store import TrainingStore  # noqa: E402
from epiformer_cli.model.config import preset  # noqa: E402
from epiformer_cli.model.network import Epiformer  # noqa: E402
from epiformer_cli.training.losses import poisson_loss  # noqa: E402
from bench_predict import H100_BF16_DENSE, H100_UTILISATION, gflop_per_window  # noqa: E402  (sibling script)

BATCH = {"tiny": 8, "small": 4, "epiformer": 1}  # training step batch on this CPU
LOADER_BATCH = 8


def loader_rate(store: TrainingStore, crop: int, batch: int, workers: int, batches: int) -> float:
    ds = WindowDataset(store, "train", crop, Augment(), seed=0)
    sampler = TrainBatchSampler(len(ds), batch, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                        **({"prefetch_factor": 4} if workers else {}))
    done, t0, epoch = 0, None, 0
    while done < batches + 2:
        sampler.set_epoch(epoch)
        for b in loader:
            done += 1
            if done == 2:  # skip worker start-up
                t0 = time.perf_counter()
            if done >= batches + 2:
                break
        epoch += 1
    return batches * batch / (time.perf_counter() - t0)


def model_rate(name: str, n_tracks: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    cfg = preset(name, n_tracks=n_tracks)
    model = Epiformer(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    codes = torch.randint(0, 4, (batch, cfg.seq_len), dtype=torch.uint8)
    cons = torch.rand(batch, cfg.seq_len)
    targets = torch.rand(batch, n_tracks, cfg.out_bins)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        loss = poisson_loss(model(model_inputs(codes, cons, cfg.conservation)), targets)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return batch / (sum(times[1:]) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="loader batches to time per setting")
    parser.add_argument("--steps", type=int, default=6, help="training steps to time per preset")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--presets", default="tiny,small,epiformer")
    args = parser.parse_args()
    from epiformer_cli.demo.generator import generate_demo
    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.options import PrepareOptions

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        demo = generate_demo(Path(tmp) / "demo", seed=0)
        for name in args.presets.split(","):
            cfg = preset(name)
            out = Path(tmp) / f"store_{name}"
            prepare_store(demo.fasta, demo.conservation, demo.targets_sheet, out, blacklist=demo.blacklist,
                          options=PrepareOptions(window_bp=cfg.seq_len, step_bp=cfg.seq_len // 2,
                                                 valid_chroms=demo.valid_chroms, test_chroms=demo.test_chroms))
            store = TrainingStore(out)
            batch = BATCH[name]
            train_rate = model_rate(name, len(store.tracks), batch, args.steps)
            print(f"{name:9s} training step (batch {batch}): {train_rate:8.2f} windows/s", flush=True)
            for workers in (int(w) for w in args.workers.split(",")):
                rate = loader_rate(store, cfg.crop_bins, LOADER_BATCH, workers, args.batches)
                print(f"{name:9s} loader, {workers} worker(s):     {rate:8.1f} windows/s   "
                      f"loader/model = {rate / train_rate:6.1f}x", flush=True)
            if name == "epiformer":
                gflop = gflop_per_window(name)
                h100 = H100_BF16_DENSE * H100_UTILISATION / (3 * gflop * 1e9)
                print(f"{name:9s} one H100 at {H100_UTILISATION:.0%} of bf16 peak: {3 * gflop:.0f} GFLOP per training "
                      f"window -> about {h100:.0f} windows/s to feed", flush=True)


if __name__ == "__main__":
    main()
