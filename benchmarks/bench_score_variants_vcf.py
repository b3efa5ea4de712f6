"""`epiformer score-variants` end to end on a generated genome and VCF: variants/s and peak RSS.

Run:  python benchmarks/bench_score_variants_vcf.py [--variants 100000,1000000] [--genome-mb 50]
                                                    [--modes grid,centered] [--centered-variants 2000] [--precision fp32]
                                                    [--workdir DIR]

Each run is the real command in a subprocess (`python -m epiformer_cli score-variants VCF --out
FILE`, tiny preset with random weights, reverse-complement averaging on, as a user would run it),
so the numbers include reading the bgzipped VCF and the FASTA, the model, and writing the TSV.
Peak RSS is the child's ru_maxrss. The VCF holds random SNVs whose REF matches the FASTA (every
record scores ``ok``), sorted, bgzipped and tabix-indexed; the density is what ``--variants`` over
``--genome-mb`` gives (1,000,000 over 50 Mb is about 240 SNVs per 12,288 bp grid window of the
tiny preset). Memory must not grow with the number of variants: compare the rows.

Batched against one-allele-at-a-time scoring (``VariantScorer(batched=False)``, the path before
alleles were batched through the Transformer; the child process is patched, the command itself
has no such switch), at an exact density of SNVs per grid window:

    python benchmarks/bench_score_variants_vcf.py --per-window 10 --windows 200 --rounds 3
    python benchmarks/bench_score_variants_vcf.py --preset epiformer --per-window 10 --windows 2 --rounds 2

``--per-window K --windows N`` writes K random SNVs into each of the first N grid windows' output
spans of a generated genome; each round runs the one-at-a-time command, then the batched one
(both with ``--null-size 0``: scoring only; every other round in the reverse order), and times a ``torch.mm`` in this process just before
(the Transformer's feed-forward product at the model's batch size). Reported: medians and
per-round values, the speed-up, and the FLOP bound on variants/s at that measured rate. Per
variant, with V views (2: RC averaging on), T the FLOPs of one Transformer + head pass, P the
incremental tower's per SNV and F a forward pass (the reference, shared by the K SNVs of a
window): ``rate / (V (T + P + F / K))``; also printed ``rate / (V (T + P))``, the per-allele work
alone (``bench_forward.model_flops`` / ``trunk_flops``, ``bench_score_variants.config_patch_flops``).
Use ``--one-at-a-time`` or ``--batched-only`` to run one side only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import model_file, write_genome  # noqa: E402  (a sibling script, not a package)


def write_vcf(fasta: Path, out: Path, n: int, seed: int = 1) -> Path:
    """``n`` random SNVs spread over the FASTA's chromosomes, REF read from the FASTA; bgzip + tabix."""
    import pysam

    from epiformer_cli.io.genome import Genome

    genome = Genome(fasta)
    rng = np.random.default_rng(seed)
    sizes = genome.chrom_sizes
    total = sum(sizes.values())
    plain = out.with_suffix("")  # x.vcf.gz -> x.vcf
    letters = "ACGTN"
    with open(plain, "w") as handle:
        handle.write("##fileformat=VCFv4.2\n")
        for chrom, size in sizes.items():
            handle.write(f"##contig=<ID={chrom},length={size}>\n")
        handle.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for chrom, size in sizes.items():
            k = round(n * size / total)
            starts = np.sort(rng.choice(size, size=k, replace=False))
            codes = genome.fetch(chrom, 0, size)
            shift = rng.integers(1, 4, k)
            for i, (s, d) in enumerate(zip(starts.tolist(), shift.tolist())):
                ref = letters[codes[s]]
                alt = letters[(codes[s] + d) % 4]
                handle.write(f"{chrom}\t{s + 1}\tv{i}\t{ref}\t{alt}\t.\t.\t.\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)  # writes x.vcf.gz + .tbi, removes x.vcf
    return out


_MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command, measured by a fresh parent of its own (the
    RUSAGE_CHILDREN maximum of this process would carry over from earlier, larger runs)."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024


#: the child of ``--one-at-a-time``: the real command with every VariantScorer built with batched=False.
_ONE_AT_A_TIME = ("import functools, sys; from epiformer_cli.variants import scoring; "
                  "scoring.VariantScorer.__init__ = functools.partialmethod(scoring.VariantScorer.__init__, batched=False); "
                  "from epiformer_cli.cli.app import main; sys.argv[0] = 'epiformer'; main()")


def write_window_vcf(fasta: Path, out: Path, config, per_window: int, windows: int, seed: int = 1) -> Path:
    """``per_window`` random SNVs in each of the first ``windows`` grid windows' output spans of the
    first chromosome (0-based spans ``[k out_bp, (k + 1) out_bp)``), REF from the FASTA; bgzip + tabix."""
    import pysam

    from epiformer_cli.io.genome import Genome

    genome = Genome(fasta)
    chrom, size = next(iter(genome.chrom_sizes.items()))
    out_bp = config.out_bins * config.bin_size
    if windows * out_bp + config.crop_bp > size:
        sys.exit(f"{windows} windows of {out_bp:,} bp do not fit {chrom} ({size:,} bp): raise --genome-mb")
    codes = genome.fetch(chrom, 0, windows * out_bp)
    rng = np.random.default_rng(seed)
    plain = out.with_suffix("")
    with open(plain, "w") as handle:
        handle.write(f"##fileformat=VCFv4.2\n##contig=<ID={chrom},length={size}>\n")
        handle.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for k in range(windows):
            for i, s in enumerate(np.sort(rng.choice(out_bp, per_window, replace=False) + k * out_bp).tolist()):
                ref, alt = "ACGT"[codes[s]], "ACGT"[(codes[s] + int(rng.integers(1, 4))) % 4]
                handle.write(f"{chrom}\t{s + 1}\tw{k}v{i}\t{ref}\t{alt}\t.\t.\t.\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    return out


def gemm_gflops(config, repeats: int = 5) -> float:
    """fp32 ``torch.mm`` GFLOP/s of the Transformer's feed-forward product at the batch scoring
    uses (``trunk_batch_rows`` alleles of n_bins rows, d_model -> ffn_dim): best of ``repeats``."""
    import torch

    from epiformer_cli.model.incremental import trunk_batch_rows

    m, k, n = trunk_batch_rows(config) * config.n_bins, config.d_model, config.ffn_dim
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def component_ms(config, per_window: int, repeats: int = 3) -> dict:
    """Median ms of the parts of scoring one window of ``per_window`` SNVs in one view, in this
    process (random weights): the reference tower, a Transformer + head pass alone (``finish``, one
    row) and per row in a batch (``finish_many``, ``trunk_batch_rows`` rows), the incremental tower
    per SNV one at a time (``alternative_z``) and together (``alternative_z_many``)."""
    import statistics

    import torch

    from epiformer_cli.data.encoding import model_inputs
    from epiformer_cli.model.fast import prepare_for_inference
    from epiformer_cli.model.incremental import IncrementalTower, trunk_batch_rows
    from epiformer_cli.model.network import build_network

    torch.manual_seed(0)
    tower = IncrementalTower(prepare_for_inference(build_network(config).eval()))
    x = model_inputs(torch.randint(0, 4, (1, config.seq_len), dtype=torch.uint8), torch.rand(1, config.seq_len),
                     config.conservation)
    state = tower.reference(x)
    pos = np.linspace(config.crop_bp, config.seq_len - config.crop_bp, per_window).astype(int).tolist()
    cols = torch.stack([x[0, :, p:p + 1].roll(1, 0) for p in pos])
    rows = trunk_batch_rows(config)
    z = state.z[None].repeat(rows, 1, 1)
    parts = {"reference": (lambda: tower.reference(x), 1), "finish": (lambda: tower.finish(state.z), 1),
             "finish_many": (lambda: tower.finish_many(z), rows),
             "alternative_z": (lambda: tower.alternative_z(state, pos, cols), per_window),
             "alternative_z_many": (lambda: tower.alternative_z_many(state, pos, cols), per_window)}
    out = {}
    with torch.inference_mode():
        for name, (call, per) in parts.items():
            call()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                call()
                times.append((time.perf_counter() - t) / per * 1e3)
            out[name] = statistics.median(times)
    return out


def compare(args) -> None:
    """Batched against one-at-a-time scoring at ``--per-window`` SNVs per window (see the module docstring)."""
    import statistics

    from bench_forward import loadavg, model_flops, trunk_flops
    from bench_score_variants import config_patch_flops

    from epiformer_cli.model.config import preset

    cfg = preset(args.preset, n_tracks=2)
    parts = model_flops(cfg)
    f_fwd = parts["total"] - parts["head"] + parts["head_fast"]
    f_trunk, f_patch = trunk_flops(parts), config_patch_flops(cfg)
    views = 2  # RC averaging on, as the command's default
    per_variant = views * (f_trunk + f_patch + f_fwd / args.per_window)
    per_allele = views * (f_trunk + f_patch)
    n = args.per_window * args.windows
    sides = [s for s, on in (("one-at-a-time", not args.batched_only), ("batched", not args.one_at_a_time)) if on]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        out_bp = cfg.out_bins * cfg.bin_size
        fasta, cons = write_genome(folder, -(-(args.windows * out_bp + cfg.seq_len) // 1_000_000))  # whole Mb
        model = model_file(folder, args.preset)
        vcf = write_window_vcf(fasta, folder / "v.vcf.gz", cfg, args.per_window, args.windows)
        help_text = subprocess.run([sys.executable, "-m", "epiformer_cli", "score-variants", "--help"],
                                   capture_output=True, text=True).stdout
        extra = ["--null-size", "0"] if "--null-size" in help_text else []
        print(f"{args.preset} preset (2 tracks), {args.windows} grid windows x {args.per_window} SNVs = {n:,} variants, "
              f"RC averaging on, fp32, {os.cpu_count()} CPUs; load average before: {loadavg()}")
        print(f"per variant: F {f_fwd / 1e9:.3f} GFLOP a forward (the reference, / {args.per_window} SNVs), "
              f"T {f_trunk / 1e9:.4f} GFLOP Transformer + head, P {f_patch / 1e9:.5f} GFLOP incremental tower, "
              f"x {views} views = {per_variant / 1e9:.3f} GFLOP ({per_allele / 1e9:.3f} per allele alone)")
        rates = {s: [] for s in sides}
        gemm = []
        for r in range(args.rounds):
            gemm.append(gemm_gflops(cfg))
            line = [f"round {r + 1}: mm {gemm[-1]:.1f} GFLOP/s"]
            for side in sides if r % 2 == 0 else sides[::-1]:  # alternate which side runs first
                out = folder / f"{side}.tsv"
                cmd = ["-m", "epiformer_cli"] if side == "batched" else ["-c", _ONE_AT_A_TIME]
                cmd = [sys.executable, *cmd, "-q", "score-variants", str(vcf), "--fasta", str(fasta), "--cons", str(cons),
                       "--model", str(model), "--out", str(out), "--device", "cpu", *extra]
                seconds, rss = run(cmd)
                rows = sum(1 for _ in open(out)) - 1
                assert rows == 2 * n, f"expected {2 * n} rows (2 tracks), got {rows}"
                out.unlink()
                rates[side].append(n / seconds)
                line.append(f"{side} {seconds:.1f} s = {n / seconds:.2f} var/s (peak RSS {rss:.0f} MB)")
            print("  " + "; ".join(line) + f"; load {loadavg()}", flush=True)
        ms = component_ms(cfg, args.per_window)
        k = args.per_window
        shared = ms["reference"] + ms["finish"]  # a window's reference and its Transformer pass, per view
        before = shared + k * (ms["finish"] + ms["alternative_z"])
        after = shared + k * (ms["finish_many"] + ms["alternative_z_many"])
        print("model parts, ms (this process, median of 3): " + ", ".join(f"{n} {v:.2f}" for n, v in ms.items())
              + " (finish_many and alternative_z* per row)")
        print(f"  a window of {k} SNVs, one view: one-at-a-time {before:.1f} ms, batched {after:.1f} ms "
              f"({before / after:.2f}x); the reference alone {shared:.1f} ms, so even a free Transformer "
              f"for the SNVs would give at most {before / (shared + k * ms['alternative_z_many']):.2f}x")
        rate = statistics.median(gemm)
        bound, bound_allele = rate * 1e9 / per_variant, rate * 1e9 / per_allele
        print(f"median mm rate {rate:.1f} GFLOP/s -> bound {bound:.2f} var/s (all work), {bound_allele:.2f} var/s "
              f"(per-allele work alone)")
        print("side            var/s (median)  per round                 of bound  achieved GFLOP/s")
        for side in sides:
            v = statistics.median(rates[side])
            per = ", ".join(f"{x:.2f}" for x in rates[side])
            print(f"{side:<15} {v:>14.2f}  {per:<24}  {v / bound:>7.1%}  {v * per_variant / 1e9:>10.1f}")
        if len(sides) == 2:
            speedups = [b / a for a, b in zip(rates["one-at-a-time"], rates["batched"])]
            print(f"speed-up batched / one-at-a-time: median {statistics.median(speedups):.2f}x "
                  f"(rounds {', '.join(f'{x:.2f}' for x in speedups)})")
        print(f"load average after: {loadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="100000,1000000")
    ap.add_argument("--genome-mb", type=int, default=50)
    ap.add_argument("--modes", default="grid,centered")
    ap.add_argument("--centered-variants", type=int, default=2000,
                    help="variants for centered mode (one reference pass per variant: far slower)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--preset", default="tiny", help="model preset of the batched/one-at-a-time comparison")
    ap.add_argument("--per-window", type=int, default=None,
                    help="compare batched and one-at-a-time scoring at this many SNVs per grid window")
    ap.add_argument("--windows", type=int, default=200, help="grid windows of SNVs (with --per-window)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the comparison (medians reported)")
    side = ap.add_mutually_exclusive_group()
    side.add_argument("--one-at-a-time", action="store_true", help="with --per-window: only the one-at-a-time path")
    side.add_argument("--batched-only", action="store_true", help="with --per-window: only the batched path")
    args = ap.parse_args()
    if args.per_window:
        compare(args)
        return
    counts = sorted(int(v) for v in args.variants.split(","))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        fasta, cons = write_genome(folder, args.genome_mb)
        model = model_file(folder)
        print(f"genome {args.genome_mb} Mb, tiny preset (2 tracks), RC averaging on, {args.precision}, "
              f"{os.cpu_count()} CPUs")
        print("mode        variants     seconds   variants/s   peak RSS MB")
        for mode in args.modes.split(","):
            for n in counts if mode == "grid" else [args.centered_variants]:
                vcf = write_vcf(fasta, folder / f"v{n}.vcf.gz", n)
                out = folder / f"scores-{mode}-{n}.tsv"
                cmd = [sys.executable, "-m", "epiformer_cli", "-q", "score-variants", str(vcf), "--fasta", str(fasta),
                       "--cons", str(cons), "--model", str(model), "--out", str(out), "--device", "cpu",
                       "--precision", args.precision, "--window-mode", mode]
                seconds, rss = run(cmd)
                rows = sum(1 for _ in open(out)) - 1
                assert rows == 2 * n, f"expected {2 * n} rows (2 tracks), got {rows}"
                print(f"{mode:<10} {n:>9,}  {seconds:>10.1f}  {n / seconds:>11.1f}  {rss:>12.0f}", flush=True)
                out.unlink()


if __name__ == "__main__":
    main()
