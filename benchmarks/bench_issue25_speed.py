"""Issue 25, item 4, side by side with an older checkout: ISM's reference pass in plain passes, and
end-to-end ``score-variants`` of the tiny preset at 10 SNVs a window.

Run:  git -C /work/main archive HEAD | tar -x -C /tmp/before      # the "before" tree, once
      python benchmarks/bench_issue25_speed.py --compare-with /tmp/before
      python benchmarks/bench_issue25_speed.py --compare-with /tmp/before --parts ism --ism-preset tiny
      python benchmarks/bench_issue25_speed.py --parts score --windows 300 --rounds 5   # this tree alone

Both sides run in child processes, the "before" side with ``PYTHONPATH=DIR`` (and the child's
working directory outside both trees, so ``-m epiformer_cli`` imports that side's package), the
"after" side with this script's own tree. Rounds interleave the sides (which side runs first
alternates), and medians over rounds are reported with per-round values and ratios, so a shared
machine slows both sides alike. Both sides' children get the same environment: threads as
each picks by default, and ``OMP_WAIT_POLICY`` set to ``--wait-policy`` (default PASSIVE; ``""``
leaves it unset), so the comparison isolates the model code even when one tree's command line sets
its own policy.

1. ``--parts ism``: in one child per side and round, the fixed part of an ISM call (an empty span:
   the reference tower of the window, ``IncrementalTower.reference``, plus its Transformer and
   head, rc averaging off) and a plain pass (``engine.predict`` of the window), each timed
   ``--ism-repeats`` times interleaved after a warm-up; reported: the median ratio
   t(reference pass) / t(plain pass) ("plain passes"). Random weights, 1 track, fp32, preset
   ``--ism-preset`` (default the full-size ``epiformer``, where the issue measured 1.36).
2. ``--parts score``: the real command (``python -m epiformer_cli -q score-variants VCF --out TSV
   --null-size 0 --device cpu``, tiny preset with random weights and 2 tracks, rc averaging on)
   on ``--per-window`` random SNVs in each of ``--windows`` grid windows (the VCF of
   ``bench_score_variants_vcf.write_window_vcf``); variants/s = variants / wall seconds of the
   child (start-up, reading and writing included). Both sides' TSVs must have every row; their
   effects are compared (max abs difference printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

#: the ISM child: prints {"ref": [s...], "plain": [s...]} for one preset.
_ISM_CHILD = r"""
import json, sys, time
import numpy as np, torch
from epiformer_cli.explain.ism import IsmExplainer
from epiformer_cli.explain.regions import place
from epiformer_cli.inference.engine import InferenceEngine
from epiformer_cli.model.config import preset
from epiformer_cli.model.network import build_network
name, repeats = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
cfg = preset(name, n_tracks=1)
engine = InferenceEngine(build_network(cfg).eval(), device="cpu", rc_average=False, batch_size=1)
ism = IsmExplainer(engine)
rng = np.random.default_rng(0)
codes = rng.integers(0, 4, cfg.seq_len, dtype=np.uint8)
cons = rng.random(cfg.seq_len, dtype=np.float32)
mid = cfg.seq_len // 2
pl = place(mid, mid + 1, cfg)
ref = lambda: ism.explain(codes, cons, pl.first, pl.first, pl.bins)
plain = lambda: engine.predict(codes[None], cons[None])
ref(); plain()  # warm-up: work buffers, kernels
out = {"ref": [], "plain": []}
for _ in range(repeats):
    for key, call in (("ref", ref), ("plain", plain)):
        t = time.perf_counter(); call(); out[key].append(time.perf_counter() - t)
print(json.dumps(out))
"""


#: OpenMP's wait policy of both sides' children (``--wait-policy``): the same on both sides, so a
#: tree whose command line sets its own (issue 25's item 3) is compared on this item's changes alone.
WAIT_POLICY = {"value": "PASSIVE"}


def _env(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    if WAIT_POLICY["value"]:
        env["OMP_WAIT_POLICY"] = WAIT_POLICY["value"]
    return env


def _loadavg() -> str:
    from bench_forward import loadavg

    return loadavg()


def _sides(compare_with: str | None) -> list[tuple[str, Path]]:
    sides = [("after", ROOT)]
    if compare_with:
        before = Path(compare_with).resolve()
        if not (before / "epiformer_cli").is_dir():
            sys.exit(f"--compare-with {before}: no epiformer_cli/ there (git -C REPO archive HEAD | tar -x -C DIR)")
        sides.insert(0, ("before", before))
    return sides


def bench_ism(sides, preset_name: str, rounds: int, repeats: int, workdir: Path) -> None:
    print(f"\n== ISM reference pass / plain pass: preset {preset_name}, rc off, fp32, {repeats} timings of each "
          f"a round, OMP_WAIT_POLICY={WAIT_POLICY['value'] or '(unset)'}; load {_loadavg()}", flush=True)
    ratios = {name: [] for name, _ in sides}
    times = {name: [] for name, _ in sides}
    for r in range(rounds):
        line = []
        for name, tree in sides if r % 2 == 0 else sides[::-1]:
            done = subprocess.run([sys.executable, "-c", _ISM_CHILD, preset_name, str(repeats)], cwd=workdir,
                                  env=_env(tree), capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} ISM child failed:\n{done.stderr}")
            got = json.loads(done.stdout.strip().splitlines()[-1])
            ratio = statistics.median(a / b for a, b in zip(got["ref"], got["plain"]))
            ratios[name].append(ratio)
            times[name].append((statistics.median(got["ref"]), statistics.median(got["plain"])))
            line.append(f"{name} ref {times[name][-1][0]:.3f} s / plain {times[name][-1][1]:.3f} s = {ratio:.3f}")
        print(f"  round {r + 1}: " + "; ".join(line) + f"; load {_loadavg()}", flush=True)
    for name, _ in sides:
        print(f"{name:<7} reference pass = {statistics.median(ratios[name]):.3f} plain passes "
              f"(rounds {', '.join(f'{x:.3f}' for x in ratios[name])})")


def _effects(path: Path):
    import pandas as pd

    table = pd.read_csv(path, sep="\t", comment="#")
    return table.select_dtypes("number")


def bench_score(sides, per_window: int, windows: int, rounds: int, workdir: Path) -> None:
    from bench_predict import model_file, write_genome
    from bench_score_variants_vcf import run, write_window_vcf

    from epiformer_cli.model.config import preset

    cfg = preset("tiny", n_tracks=2)
    n = per_window * windows
    fasta, cons = write_genome(workdir, -(-(windows * cfg.out_bins * cfg.bin_size + cfg.seq_len) // 1_000_000))
    model = model_file(workdir, "tiny")
    vcf = write_window_vcf(fasta, workdir / "v.vcf.gz", cfg, per_window, windows)
    print(f"\n== score-variants, tiny preset (2 tracks), {windows} grid windows x {per_window} SNVs = {n:,} variants, "
          f"rc averaging on, fp32, --null-size 0, {os.cpu_count()} CPUs, OMP_WAIT_POLICY="
          f"{WAIT_POLICY['value'] or '(unset)'}; load {_loadavg()}", flush=True)
    rates = {name: [] for name, _ in sides}
    for r in range(rounds):
        line = []
        for name, tree in sides if r % 2 == 0 else sides[::-1]:
            out = workdir / f"{name}.tsv"
            out.unlink(missing_ok=True)  # the last round's stays, for the comparison below
            cmd = [sys.executable, "-m", "epiformer_cli", "-q", "score-variants", str(vcf), "--fasta", str(fasta),
                   "--cons", str(cons), "--model", str(model), "--out", str(out), "--device", "cpu", "--null-size", "0"]
            env = _env(tree)
            t = time.perf_counter()
            done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr}")
            rates[name].append(n / seconds)
            line.append(f"{name} {seconds:.1f} s = {n / seconds:.1f} var/s")
        print(f"  round {r + 1}: " + "; ".join(line) + f"; load {_loadavg()}", flush=True)
    for name, _ in sides:
        print(f"{name:<7} {statistics.median(rates[name]):8.1f} var/s (rounds {', '.join(f'{x:.1f}' for x in rates[name])})")
    if len(sides) == 2:
        ratio = [a / b for a, b in zip(rates["after"], rates["before"])]
        print(f"after / before: median {statistics.median(ratio):.2f}x (rounds {', '.join(f'{x:.2f}' for x in ratio)})")
        a, b = _effects(workdir / "after.tsv"), _effects(workdir / "before.tsv")
        if a.shape == b.shape and list(a.columns) == list(b.columns):
            print(f"numeric columns of the two TSVs: max abs difference {float((a - b).abs().max().max()):.3g}")
        else:
            print("the two TSVs have different columns: not compared")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare-with", default=None, help="a tree (git archive) to run as the 'before' side")
    ap.add_argument("--parts", nargs="+", default=["ism", "score"], choices=["ism", "score"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ism-preset", default="epiformer")
    ap.add_argument("--ism-repeats", type=int, default=3)
    ap.add_argument("--per-window", type=int, default=10)
    ap.add_argument("--windows", type=int, default=300)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY of both sides ('' to leave it unset)")
    args = ap.parse_args()
    WAIT_POLICY["value"] = args.wait_policy
    sides = _sides(args.compare_with)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if "score" in args.parts:
            bench_score(sides, args.per_window, args.windows, args.rounds, Path(tmp))
        if "ism" in args.parts:
            bench_ism(sides, args.ism_preset, args.rounds, args.ism_repeats, Path(tmp))


if __name__ == "__main__":
    main()
