"""What the piece checksums (issue 13) cost: predict, export, prepare, train start, and raw CRC-32.

Run:  python benchmarks/bench_checksums.py [--genome-mb 24] [--chrom-mb 6] [--repeats 3] [--pairs 5]
                                           [--steps 4] [--workdir DIR]

Everything is measured in one run, in this process, on a generated genome in a temporary folder
(random ACGT, ``--chrom-mb`` Mb chromosomes; a conservation bigWig; three target bigWigs at 20 bp
resolution) and a tiny-preset model with random weights (2 tracks), fp32 on the CPU, 2 torch threads:

1. ``predict_genome`` (reverse-complement averaging off: the least model work a window, so the
   largest share for the checksums) wall time, once; then (short timings: best of ``--repeats``):
   * verifying every chunk as a resumed run does (``PredictionStore.drop_damaged(store.chunks)``),
     as a % of the predict time;
   * ``export_predictions`` with the real checked read, and with the check bypassed
     (``resumable.checked_content`` patched to strip the trailer only), ``--pairs`` back-to-back
     pairs alternating which goes first; the cost is their difference (best of each, and the median
     of the per-pair differences), and also the check of the chunk files timed alone in memory (a
     difference of two noisy timings can come out negative on a shared machine), and the part of
     export that the check touches, ``PredictionStore.read`` of every chunk, paired the same way;
   * the same per-chunk CRC against the model time of a full-size (``epiformer``) chunk, from
     the analytic FLOPs per output base (``bench_forward.model_flops``) at this run's fp32 matmul
     rate (an upper bound on the model's rate, so a lower bound on its time and an upper bound on
     the %), and at one H100's assumed bf16 rate (``bench_predict``'s constants).
2. ``prepare_store`` (tiny window, 16,384 bp) with the CRC-32 computed while writing, and without
   (``zlib`` in ``epiformer_cli.runs.checksums`` replaced by a stub whose ``crc32`` returns 0),
   ``--pairs`` pairs as above, and the CRC's own work (store bytes at the measured CRC rate);
   ``TrainingStore.verify`` time and GB/s (page cache warm: the store was just written), as a % of
   one tiny-preset training epoch on this store (``--steps`` optimizer steps timed, batch 8), and for a human-genome-sized store (2 bytes/bp x 3.1e9 bp + 2 bytes x 18
   tracks x 24.2e6 bins) against one full-size epoch on this CPU and on one H100 (FLOP estimates).
3. ``zlib.crc32`` throughput on a 64 MiB buffer.

The machine may be shared: the load average is printed at the start of each part and at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import types
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dataloader import model_rate  # noqa: E402  (sibling scripts, not a package)
from bench_forward import cpu_model, loadavg, model_flops  # noqa: E402
from bench_predict import H100_BF16_DENSE, H100_UTILISATION, HG38_BP, model_file, write_genome  # noqa: E402
from bench_prepare import write_track  # noqa: E402

import epiformer_cli.runs.checksums as checksums  # noqa: E402
import epiformer_cli.runs.folder as resumable  # noqa: E402
import epiformer_cli.jobs.prepare as prepare_job  # noqa: E402
from epiformer_cli.data.prediction_store import PredictionStore  # noqa: E402
from epiformer_cli.data.training_store import TrainingStore  # noqa: E402
from epiformer_cli.jobs.export import export_predictions  # noqa: E402
from epiformer_cli.jobs.predict import predict_genome  # noqa: E402
from epiformer_cli.model.config import preset  # noqa: E402
from epiformer_cli.options import PredictOptions, PrepareOptions  # noqa: E402

HG38_STORE_BYTES = 2 * 3.1e9 + 2 * 18 * 24.2e6  # bases + conservation, float16 targets of 18 tracks
HG38_HELD_OUT_BP = 145_138_636 + 138_394_717  # chr8 + chr9 (the default validation and test chromosomes)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def best_of(fn: Callable[[], object], repeats: int) -> Tuple[float, List[float]]:
    times = [timed(fn) for _ in range(repeats)]
    return min(times), times


def paired(a: Callable[[], object], b: Callable[[], object], repeats: int) -> Tuple[List[float], List[float]]:
    """Time ``a`` and ``b`` ``repeats`` times each, alternating which goes first (a shared machine's
    load then falls on both alike)."""
    ta, tb = [], []
    for r in range(repeats):
        if r % 2 == 0:
            ta.append(timed(a))
            tb.append(timed(b))
        else:
            tb.append(timed(b))
            ta.append(timed(a))
    return ta, tb


def crc_rate(repeats: int) -> float:
    """zlib.crc32 GB/s on a 64 MiB buffer (best of ``repeats``)."""
    data = np.random.default_rng(0).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes()
    zlib.crc32(data)
    seconds, _ = best_of(lambda: zlib.crc32(data), repeats)
    return len(data) / seconds / 1e9


def matmul_gflops(repeats: int, n: int = 4096) -> float:
    """This run's fp32 matmul rate (best of ``repeats``): an upper bound on any model's GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    seconds, _ = best_of(lambda: torch.mm(a, b), repeats)
    return 2 * n ** 3 / seconds / 1e9


def flop_per_output_bp(name: str) -> Tuple[float, int]:
    """(forward FLOPs of one window, output bases of one window) of preset ``name``, 2 tracks."""
    cfg = preset(name, n_tracks=2)
    return float(model_flops(cfg)["total"]), cfg.out_bins * 128


def pair_cost(with_: List[float], without: List[float]) -> Tuple[float, float]:
    """(best with - best without) / best without, and the median of each back-to-back pair's
    (with - without) / without: the second is less moved by load that changes between pairs."""
    per_pair = sorted((a - b) / b for a, b in zip(with_, without))
    return (min(with_) - min(without)) / min(without), per_pair[len(per_pair) // 2]


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.3g}%"


def section(title: str) -> None:
    print(f"\n== {title} (load average {loadavg()})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--genome-mb", type=int, default=24)
    ap.add_argument("--chrom-mb", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each short timing (best is reported)")
    ap.add_argument("--pairs", type=int, default=5, help="with/without pairs of the export and prepare timings")
    ap.add_argument("--steps", type=int, default=4, help="tiny-preset training steps timed for the epoch estimate")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows: List[Tuple[str, str, str, str]] = []  # what, time, checksum part, share
    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
          f"python {sys.version.split()[0]}; zlib {zlib.ZLIB_RUNTIME_VERSION}", flush=True)

    section("3. raw CRC-32 and matmul rate")
    crc_gbs = crc_rate(args.repeats)
    mm = matmul_gflops(args.repeats)
    print(f"zlib.crc32: {crc_gbs:.2f} GB/s (64 MiB buffer, best of {args.repeats}); "
          f"fp32 matmul 4096^2: {mm:.0f} GFLOP/s", flush=True)

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-checksums-") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        fasta, cons = write_genome(folder, args.genome_mb, chrom_mb=args.chrom_mb)
        from epiformer_cli.io.genome import Genome

        sizes = dict(Genome(fasta).chrom_sizes)
        names = list(sizes)
        sheet = folder / "targets.tsv"
        lines = ["name\tpath\tscale\tclip\tstat"]
        for i, name in enumerate(("ASCT", "OPC", "MGC")):
            write_track(folder / f"{name}.bw", sizes, step=20, seed=10 + i)
            lines.append(f"{name}\t{name}.bw\t1\t128\tmean")
        sheet.write_text("\n".join(lines) + "\n")
        model = model_file(folder)
        print(f"generated in {time.perf_counter() - t:.0f} s: {args.genome_mb} Mb in {len(names)} chromosomes, "
              f"conservation + 3 target bigWigs, tiny model (2 tracks)", flush=True)

        # ---- 1. predict, resume check, export --------------------------------------------------
        section("1. predict (tiny preset, fp32, cpu, rc averaging off)")
        store_dir, out = folder / "pred.store", folder / "pred.bw"
        options = PredictOptions.of(device="cpu", precision="fp32", rc_average=False)
        t = time.perf_counter()
        summary = predict_genome(fasta, cons, model, out, store=store_dir, options=options)
        predict_s = time.perf_counter() - t
        store = PredictionStore(store_dir)
        n_chunks = len(store.chunks)
        chunk_bytes = sum(store.chunk_path(c).stat().st_size for c in store.chunks)
        window_s = summary.compute_seconds / summary.windows_computed
        print(f"predict_genome: {predict_s:.2f} s wall ({summary.windows_computed} windows, {n_chunks} chunks of "
              f"{store.layout.chunk_windows} windows, {chunk_bytes / 1e6:.2f} MB of chunks; compute loop "
              f"{summary.compute_seconds:.2f} s = {1e3 * window_s:.2f} ms a window, model busy "
              f"{summary.model_busy:.0%})", flush=True)

        verify_s, verify_all = best_of(lambda: store.drop_damaged(store.chunks), args.repeats)
        assert not store.drop_damaged(store.chunks), "a freshly written chunk failed its checksum"
        print(f"resume check (drop_damaged of all {n_chunks} chunks): best {1e3 * verify_s:.2f} ms "
              f"({', '.join(f'{1e3 * s:.2f}' for s in verify_all)}) = {pct(verify_s, predict_s)} of predict; "
              f"{chunk_bytes / verify_s / 1e9:.2f} GB/s", flush=True)
        rows.append(("predict_genome (wall)", f"{predict_s:.2f} s", "", ""))
        rows.append(("  resume check of all chunks", f"{1e3 * verify_s:.2f} ms", f"{1e3 * verify_s:.2f} ms",
                     pct(verify_s, predict_s)))
        write_crc_s = chunk_bytes / (crc_gbs * 1e9)
        rows.append(("  CRC while writing the chunks (bytes / CRC rate)", "", f"{1e3 * write_crc_s:.2f} ms",
                     pct(write_crc_s, predict_s)))

        bodies = [store.chunk_path(c).read_bytes() for c in store.chunks]
        body_crc_s, _ = best_of(lambda: [resumable.checked_content(b, store_dir) for b in bodies], args.repeats)
        real_checked = resumable.checked_content

        def unchecked(fn: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                resumable.checked_content = lambda data, path: data[:-checksums.TRAILER_SIZE]
                try:
                    fn()
                finally:
                    resumable.checked_content = real_checked
            return run

        def read_all() -> None:
            for chunk in store.chunks:
                store.read(chunk)

        def export() -> None:
            export_predictions(store, folder / "export.bw")

        read_all()
        r_real, r_bypass = paired(read_all, unchecked(read_all), args.pairs)
        read_best, read_median = pair_cost(r_real, r_bypass)
        print(f"PredictionStore.read of the {n_chunks} chunks: checked best {1e3 * min(r_real):.2f} ms, unchecked "
              f"best {1e3 * min(r_bypass):.2f} ms: difference {1e3 * (min(r_real) - min(r_bypass)):+.2f} ms "
              f"(median of the pairs {100 * read_median:+.1f}% of an unchecked read)", flush=True)
        export()  # warm-up (first-call costs), not timed
        t_real, t_bypass = paired(export, unchecked(export), args.pairs)
        exp_real, exp_bypass = min(t_real), min(t_bypass)
        exp_best, exp_median = pair_cost(t_real, t_bypass)
        read_cost = min(r_real) - min(r_bypass)
        print(f"export_predictions: checked best {exp_real:.3f} s ({', '.join(f'{s:.3f}' for s in t_real)}), "
              f"unchecked best {exp_bypass:.3f} s ({', '.join(f'{s:.3f}' for s in t_bypass)}): difference of the "
              f"best {1e3 * (exp_real - exp_bypass):+.1f} ms = {100 * exp_best:+.2f}%, median of the pairs "
              f"{100 * exp_median:+.2f}%; the read difference above = {pct(read_cost, exp_bypass)} of the "
              f"unchecked export; the check alone (checked_content of the {n_chunks} chunk files in memory) "
              f"{1e3 * body_crc_s:.2f} ms = {pct(body_crc_s, exp_bypass)}", flush=True)
        rows.append(("export_predictions, unchecked", f"{exp_bypass:.3f} s", "", ""))
        rows.append(("  checked - unchecked (best of each)", f"{exp_real:.3f} s",
                     f"{1e3 * (exp_real - exp_bypass):+.1f} ms", f"{100 * exp_best:+.2f}% (median of pairs "
                     f"{100 * exp_median:+.2f}%)"))
        rows.append(("  its reads of the chunks, checked - unchecked", f"{1e3 * min(r_real):.2f} ms",
                     f"{1e3 * read_cost:+.2f} ms", pct(read_cost, exp_bypass)))
        rows.append(("  the check alone (checked_content, in memory)", "", f"{1e3 * body_crc_s:.2f} ms",
                     pct(body_crc_s, exp_bypass)))

        # the same chunk bytes against a full-size model's work for that chunk
        tiny_flop, tiny_bp = flop_per_output_bp("tiny")
        full_flop, full_bp = flop_per_output_bp("epiformer")
        per_bp_ratio = (full_flop / full_bp) / (tiny_flop / tiny_bp)
        chunk_crc_s = verify_s / n_chunks  # resume check (read + CRC) of one chunk, as measured
        chunk_bp = store.layout.chunk_windows * tiny_bp
        full_chunk_windows = max(1, round((1 << 22) / full_bp))  # predict.CHUNK_BP / out_bp, as predict does
        tiny_chunk_s = store.layout.chunk_windows * window_s
        full_chunk_cpu_s = full_chunk_windows * full_flop / (mm * 1e9)
        full_chunk_h100_s = full_chunk_windows * full_flop / (H100_BF16_DENSE * H100_UTILISATION)
        achieved = tiny_flop / window_s / 1e9
        print(f"per chunk ({chunk_bp / 1e6:.2f} Mb of output, {chunk_bytes / n_chunks / 1e3:.0f} kB): checksum "
              f"{1e3 * chunk_crc_s:.3f} ms; tiny model {tiny_chunk_s:.2f} s ({store.layout.chunk_windows} windows x "
              f"{tiny_flop / 1e9:.2f} GFLOP, {achieved:.0f} GFLOP/s achieved) -> {pct(chunk_crc_s, tiny_chunk_s)}",
              flush=True)
        print(f"full size: {full_flop / 1e9:.1f} GFLOP a window of {full_bp:,} bp = {per_bp_ratio:.0f}x the tiny "
              f"preset's FLOPs per output base; a chunk of {full_chunk_windows} windows takes >= "
              f"{full_chunk_cpu_s:.0f} s here (at the {mm:.0f} GFLOP/s matmul rate) -> "
              f"{pct(chunk_crc_s, full_chunk_cpu_s)}; on one H100 (bf16, {H100_UTILISATION:.0%} of "
              f"{H100_BF16_DENSE / 1e12:.0f} TFLOP/s) {1e3 * full_chunk_h100_s:.0f} ms -> "
              f"{pct(chunk_crc_s, full_chunk_h100_s)}", flush=True)
        rows.append(("per chunk: tiny model (measured)", f"{tiny_chunk_s:.2f} s", f"{1e3 * chunk_crc_s:.3f} ms",
                     pct(chunk_crc_s, tiny_chunk_s)))
        rows.append(("per chunk: full size, this CPU (FLOPs at matmul rate)", f">= {full_chunk_cpu_s:.0f} s",
                     f"{1e3 * chunk_crc_s:.3f} ms", f"<= {pct(chunk_crc_s, full_chunk_cpu_s)}"))
        rows.append(("per chunk: full size, one H100 (FLOPs, assumed rate)", f"{1e3 * full_chunk_h100_s:.0f} ms",
                     f"{1e3 * chunk_crc_s:.3f} ms", pct(chunk_crc_s, full_chunk_h100_s)))

        # ---- 2. prepare and the train-start check ----------------------------------------------
        section("2. prepare (window 16,384 bp) and TrainingStore.verify")
        popts = PrepareOptions(window_bp=preset("tiny").seq_len, valid_chroms=(names[-2],), test_chroms=(names[-1],))
        counter = [0]
        real_zlib = checksums.zlib

        kept: Dict[str, Path] = {}

        def prepare_once(crc: bool, keep: bool = False) -> float:
            """Seconds of one prepare_store into a new folder (removed afterwards, outside the timing)."""
            counter[0] += 1
            dest = folder / f"train{counter[0]}"
            if not crc:
                checksums.zlib = types.SimpleNamespace(crc32=lambda data, value=0: 0)
            t = time.perf_counter()
            try:
                prepare_job.prepare_store(fasta, cons, sheet, dest, options=popts)
            finally:
                checksums.zlib = real_zlib
            seconds = time.perf_counter() - t
            if keep:
                kept["store"] = dest
            else:
                shutil.rmtree(dest)
            return seconds

        prepare_once(False)  # warm-up (first-call costs: imports, bigWig headers), not timed
        t_crc: List[float] = []
        t_plain: List[float] = []
        for r in range(args.pairs):  # back-to-back pairs, alternating which goes first
            for crc in ((True, False) if r % 2 == 0 else (False, True)):
                (t_crc if crc else t_plain).append(prepare_once(crc))
        prepare_once(True, keep=True)  # the store TrainingStore.verify reads
        prep_crc, prep_plain = min(t_crc), min(t_plain)
        prep_best, prep_median = pair_cost(t_crc, t_plain)
        tstore = TrainingStore(kept["store"])
        store_bytes = sum(int(v["bytes"]) for v in tstore.manifest["checksums"].values())
        prep_direct = store_bytes / (crc_gbs * 1e9)
        print(f"prepare_store: with CRC best {prep_crc:.2f} s ({', '.join(f'{s:.2f}' for s in t_crc)}), without "
              f"best {prep_plain:.2f} s ({', '.join(f'{s:.2f}' for s in t_plain)}): difference of the best "
              f"{1e3 * (prep_crc - prep_plain):+.0f} ms = {100 * prep_best:+.2f}%, median of the pairs "
              f"{100 * prep_median:+.2f}%; "
              f"the CRC's own work ({store_bytes / 1e6:.1f} MB at {crc_gbs:.2f} GB/s) {1e3 * prep_direct:.0f} ms = "
              f"{pct(prep_direct, prep_plain)}", flush=True)
        rows.append(("prepare_store, without CRC", f"{prep_plain:.2f} s", "", ""))
        rows.append(("  with CRC - without (best of each)", f"{prep_crc:.2f} s",
                     f"{1e3 * (prep_crc - prep_plain):+.0f} ms", f"{100 * prep_best:+.2f}% (median of pairs "
                     f"{100 * prep_median:+.2f}%)"))
        rows.append(("  the CRC's own work (store bytes / CRC rate)", "", f"{1e3 * prep_direct:.0f} ms",
                     pct(prep_direct, prep_plain)))

        tverify_s, tverify_all = best_of(tstore.verify, args.repeats)
        verify_gbs = store_bytes / tverify_s / 1e9
        train_windows = len(tstore.windows("train"))
        train_rate = model_rate("tiny", len(tstore.tracks), 8, args.steps)
        epoch_s = train_windows / train_rate
        print(f"TrainingStore.verify: best {1e3 * tverify_s:.0f} ms ({', '.join(f'{1e3 * s:.0f}' for s in tverify_all)}) "
              f"for {store_bytes / 1e6:.1f} MB = {verify_gbs:.2f} GB/s (page cache warm); tiny training "
              f"{train_rate:.1f} windows/s (batch 8, {args.steps} steps) x {train_windows} train windows = "
              f"{epoch_s:.1f} s an epoch -> verify = {pct(tverify_s, epoch_s)} of one epoch", flush=True)
        rows.append(("TrainingStore.verify (synthetic store)", f"{1e3 * tverify_s:.0f} ms",
                     f"{verify_gbs:.2f} GB/s", f"{pct(tverify_s, epoch_s)} of a {epoch_s:.0f} s tiny epoch"))

        hg38_verify_s = HG38_STORE_BYTES / (verify_gbs * 1e9)
        hg38_windows = (HG38_BP - HG38_HELD_OUT_BP) / 98_304  # default step = window: an upper bound
        full_train_flop = 3 * full_flop  # forward + backward
        epoch_cpu_s = hg38_windows * full_train_flop / (mm * 1e9)
        epoch_h100_s = hg38_windows * full_train_flop / (H100_BF16_DENSE * H100_UTILISATION)
        print(f"hg38 store ({HG38_STORE_BYTES / 1e9:.2f} GB): verify {hg38_verify_s:.1f} s at {verify_gbs:.2f} GB/s; "
              f"one full-size epoch (~{hg38_windows:,.0f} train windows x {full_train_flop / 1e9:.0f} GFLOP): "
              f">= {epoch_cpu_s / 3600:.0f} h on this CPU -> {pct(hg38_verify_s, epoch_cpu_s)}; "
              f"{epoch_h100_s:.0f} s on one H100 -> {pct(hg38_verify_s, epoch_h100_s)} (verify runs once a run, "
              f"at train start)", flush=True)
        rows.append(("hg38-sized store: verify (at the GB/s above)", f"{hg38_verify_s:.1f} s", "",
                     f"{pct(hg38_verify_s, epoch_cpu_s)} of a CPU epoch; {pct(hg38_verify_s, epoch_h100_s)} "
                     f"of an H100 epoch ({epoch_h100_s:.0f} s)"))
        rows.append(("zlib.crc32 (64 MiB buffer)", "", f"{crc_gbs:.2f} GB/s", ""))

    section("summary")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':{width}s}  {'time':>10s}  {'checksums':>12s}  share")
    for what, seconds, part, share in rows:
        print(f"{what:{width}s}  {seconds:>10s}  {part:>12s}  {share}")


if __name__ == "__main__":
    main()
