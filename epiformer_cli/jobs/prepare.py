"""``prepare``: genome FASTA + conservation bigWig + target bigWigs -> a training store.

Streams chromosome by chromosome in 1 Mb chunks, so memory stays bounded whatever the genome
size. The store is built in a hidden ``.<name>.partial`` folder beside the output, chromosome by
chromosome with a done-marker each: a killed run resumes where it stopped, and the output folder
appears only when complete. Re-running on the same inputs is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.data.encoding import N
from epiformer_cli.data.training_store import (
    MANIFEST,
    STORE_FORMAT,
    WINDOWS,
    cons_path,
    quantise_conservation,
    seq_path,
    targets_path,
)
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.bed import IntervalIndex, read_bed
from epiformer_cli.io.bigwig import BigWig, bin_values
from epiformer_cli.io.chroms import resolve_name
from epiformer_cli.io.files import atomic_write_text, check_output_dir, file_identity
from epiformer_cli.io.genome import Genome
from epiformer_cli.io.targets import TargetTrack, read_targets

log = logging.getLogger(__name__)

CHUNK_BP = 1 << 20  # bases read per step: bounded memory, a multiple of the 128 bp bin
BIN_BP = 128
DEFAULT_VALID = ("chr8",)
DEFAULT_TEST = ("chr9",)
FLOAT16_MAX = 65504.0


@dataclass
class PrepareSummary:
    """What ``prepare_store`` did: the store, its windows per split, and whether it was reused."""

    out: Path
    tracks: List[str]
    chroms: List[str]
    windows: Dict[str, int]
    reused: bool = False
    seconds: float = 0.0
    dropped: Dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        state = "up to date" if self.reused else f"written in {self.seconds:.1f} s"
        counts = ", ".join(f"{k} {v}" for k, v in self.windows.items())
        return (f"{self.out}: {state}; {len(self.chroms)} chromosomes, {len(self.tracks)} tracks "
                f"({', '.join(self.tracks)}); windows: {counts}")


def _resolve_list(names: Optional[Sequence[str]], available: List[str], what: str, fasta: Path) -> List[str]:
    out = []
    for name in names or []:
        for part in str(name).split(","):
            part = part.strip()
            if not part:
                continue
            found = resolve_name(part, available)
            if found is None:
                raise UsageError(
                    f"{what}: chromosome {part!r} is not in {fasta} (it has {', '.join(available[:6])}"
                    f"{', ...' if len(available) > 6 else ''})"
                )
            if found not in out:
                out.append(found)
    return out


def prepare_store(
    *,
    fasta: Path,
    cons: Optional[Path],
    targets: Path,
    out: Path,
    window_bp: int,
    step_bp: Optional[int] = None,
    blacklist: Optional[Path] = None,
    chroms: Optional[Sequence[str]] = None,
    valid_chroms: Optional[Sequence[str]] = None,
    test_chroms: Optional[Sequence[str]] = None,
    max_n_fraction: float = 0.1,
    force: bool = False,
    progress: Optional[Callable[..., None]] = None,
) -> PrepareSummary:
    """Build a training store (see :mod:`epiformer_cli.data.training_store` for its layout).

    Args:
        fasta: genome FASTA (plain or bgzipped).
        cons: conservation bigWig (phastCons-like, 0..1; missing = 0), or None for all zero.
        targets: targets sheet (TSV with name, path[, scale, clip, stat]) or a list of bigWigs.
        out: the store folder to create.
        window_bp: training window length in bp (the model's input length; multiple of 128).
        step_bp: distance between window starts (default: the window length, i.e. no overlap).
        blacklist: BED of regions whose windows are dropped.
        chroms: chromosomes to use (default all in the FASTA). Aliases (1 vs chr1) are resolved.
        valid_chroms / test_chroms: held-out chromosomes (default chr8 / chr9).
        max_n_fraction: windows with a larger fraction of N bases are dropped.
        force: rebuild even when an up-to-date store exists at ``out``.
        progress: called as ``progress(n_bp, total=...)`` as bases are processed.
    """
    started = time.perf_counter()
    out = Path(out)
    step_bp = step_bp or window_bp
    if window_bp <= 0 or window_bp % BIN_BP or step_bp <= 0 or step_bp % BIN_BP:
        raise UsageError(f"window ({window_bp}) and step ({step_bp}) must be positive multiples of {BIN_BP} bp")
    if not 0 <= max_n_fraction <= 1:
        raise UsageError("--max-n-fraction must be between 0 and 1")
    check_output_dir(out, inputs=[fasta, cons, targets, blacklist])

    genome = Genome(fasta)
    all_chroms = genome.chroms
    use = _resolve_list(chroms, all_chroms, "--chroms", fasta) if chroms else list(all_chroms)
    valid = _resolve_list(valid_chroms if valid_chroms else None, all_chroms, "--valid-chroms", fasta)
    test = _resolve_list(test_chroms if test_chroms else None, all_chroms, "--test-chroms", fasta)
    if not valid_chroms:
        valid = [c for c in (resolve_name(n, all_chroms) for n in DEFAULT_VALID) if c]
    if not test_chroms:
        test = [c for c in (resolve_name(n, all_chroms) for n in DEFAULT_TEST) if c]
    if not valid or not test:
        raise UsageError(
            f"{fasta} has no chr8/chr9 (the default held-out chromosomes): choose them with "
            "--valid-chroms and --test-chroms"
        )
    if set(valid) & set(test):
        raise UsageError(f"a chromosome cannot be both validation and test: {', '.join(set(valid) & set(test))}")
    for c in valid + test:
        if c not in use:
            use.append(c)
    use = [c for c in all_chroms if c in set(use)]  # FASTA order

    tracks = read_targets(targets)
    track_files = {t.name: BigWig(t.path, f"target {t.name!r}") for t in tracks}
    for t in tracks:
        cmap = track_files[t.name].bind(use, str(fasta), genome.chrom_sizes)
        lacking = [c for c in use if c not in cmap]
        if lacking:
            raise InputFileError(
                f"{t.path}: target {t.name!r} has no data for chromosome(s) {', '.join(lacking[:5])}: "
                "exclude them with --chroms, or use a bigWig covering the whole genome"
            )
    cons_file = None
    if cons is not None:
        cons_file = BigWig(cons, "conservation bigWig")  # clipped and counted per chromosome below
        cmap = cons_file.bind(use, str(fasta), genome.chrom_sizes)
        lacking = [c for c in use if c not in cmap]
        if lacking:
            log.warning("%s has no conservation for %s: read as 0", cons, ", ".join(lacking[:5]))
    black = IntervalIndex(read_bed(blacklist, genome.chrom_sizes, unknown="skip")) if blacklist else IntervalIndex([])

    fingerprint = {
        "format_version": STORE_FORMAT,
        "fasta": file_identity(Path(fasta)),
        "cons": file_identity(Path(cons)) if cons else None,
        "targets_sheet": file_identity(Path(targets)),
        "tracks": [dict(t.to_dict(), **{"file": file_identity(t.path)}) for t in tracks],
        "blacklist": file_identity(Path(blacklist)) if blacklist else None,
        "chroms": use,
        "valid_chroms": valid,
        "test_chroms": test,
        "window_bp": window_bp,
        "step_bp": step_bp,
        "max_n_fraction": max_n_fraction,
    }
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()

    if (out / MANIFEST).exists() and not force:
        try:
            existing = json.loads((out / MANIFEST).read_text())
        except json.JSONDecodeError:
            existing = {}
        if existing.get("fingerprint") == key:
            log.info("%s is up to date with its inputs: nothing to do", out)
            return PrepareSummary(out, [t.name for t in tracks], use,
                                  {k: v for k, v in existing["windows_per_split"].items()}, reused=True)
        raise UsageError(f"{out} already holds a store made from other inputs or options: use --force to rebuild it")
    if out.exists() and not (out / MANIFEST).exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not a prepared store: choose another --out")

    build = out.parent / f".{out.name}.partial"
    build_key = build / "fingerprint"
    if build.exists() and (not build_key.exists() or build_key.read_text() != key):
        shutil.rmtree(build)  # a partial build of other inputs: never mix
    if build.exists():
        log.info("resuming the interrupted build in %s", build)
    for sub in ("seq", "cons", "targets", "done"):
        (build / sub).mkdir(parents=True, exist_ok=True)
    build_key.write_text(key)

    total_bp = sum(genome.chrom_sizes[c] for c in use)
    if progress:
        progress(0, total=total_bp)
    stats = {t.name: {"sum": 0.0, "max": 0.0, "bins": 0, "nonzero": 0} for t in tracks}
    cons_outside = 0
    for index, chrom in enumerate(use):
        done = build / "done" / f"{index}.json"
        if done.exists():
            info = json.loads(done.read_text())
        else:
            info = _write_chromosome(genome, cons_file, tracks, track_files, build, index, chrom, progress)
            atomic_write_text(done, json.dumps(info))
        for name, s in info["track_stats"].items():
            agg = stats[name]
            agg["sum"] += s["sum"]
            agg["max"] = max(agg["max"], s["max"])
            agg["bins"] += s["bins"]
            agg["nonzero"] += s["nonzero"]
        cons_outside += info["cons_outside"]
    if cons_outside:
        log.warning("%s: %d conservation values outside [0, 1] were clipped", cons, cons_outside)

    rows, dropped = _window_table(build, use, genome.chrom_sizes, valid, test, window_bp, step_bp, max_n_fraction, black)
    atomic_write_text(build / WINDOWS, "chrom\tstart\tend\tsplit\tn_fraction\n" + "".join(rows))
    per_split = {s: sum(1 for r in rows if r.split("\t")[3] == s) for s in ("train", "valid", "test")}
    if per_split["train"] == 0:
        raise InputFileError(
            f"{fasta}: no training windows of {window_bp} bp survive (chromosomes too short, too many N, or "
            "blacklisted): use a smaller --window, a larger --max-n-fraction, or more chromosomes"
        )
    manifest = {
        "format_version": STORE_FORMAT,
        "tool": f"epiformer {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fingerprint": key,
        "inputs": fingerprint,
        "chroms": use,
        "chrom_sizes": {c: genome.chrom_sizes[c] for c in use},
        "bin_bp": BIN_BP,
        "window_bp": window_bp,
        "step_bp": step_bp,
        "splits": {"valid": valid, "test": test, "train": [c for c in use if c not in valid and c not in test]},
        "windows_per_split": per_split,
        "windows_dropped": dropped,
        "conservation": {"levels": 255, "missing": 0.0, "source": str(cons) if cons else None},
        "tracks": [
            dict(t.to_dict(), mean=stats[t.name]["sum"] / max(stats[t.name]["bins"], 1), max=stats[t.name]["max"],
                 nonzero_fraction=stats[t.name]["nonzero"] / max(stats[t.name]["bins"], 1))
            for t in tracks
        ],
        "normalization": {
            "formula": "min(bin_stat(bigwig) * scale, clip), per 128 bp bin",
            "tracks": {t.name: {"scale": t.scale, "clip": t.clip, "stat": t.stat} for t in tracks},
        },
    }
    atomic_write_text(build / MANIFEST, json.dumps(manifest, indent=2))
    shutil.rmtree(build / "done")
    build_key.unlink()
    if out.exists():
        trash = out.parent / f".{out.name}.old{os.getpid()}"
        os.replace(out, trash)
        os.replace(build, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(build, out)
    return PrepareSummary(out, [t.name for t in tracks], use, per_split, seconds=time.perf_counter() - started,
                          dropped=dropped)


def _write_chromosome(genome: Genome, cons_file: Optional[BigWig], tracks: List[TargetTrack],
                      track_files: Dict[str, BigWig], build: Path, index: int, chrom: str,
                      progress: Optional[Callable[..., None]]) -> dict:
    """Stream one chromosome into the store's files; returns its per-bin N counts and track stats."""
    length = genome.chrom_sizes[chrom]
    n_bins = -(-length // BIN_BP)
    n_per_bin = np.zeros(n_bins, dtype=np.int32)
    track_stats = {t.name: {"sum": 0.0, "max": 0.0, "bins": 0, "nonzero": 0} for t in tracks}
    cons_outside = 0
    tmp = {kind: path.with_name(path.name + ".tmp") for kind, path in
           (("seq", seq_path(build, index)), ("cons", cons_path(build, index)), ("targets", targets_path(build, index)))}
    with open(tmp["seq"], "wb") as f_seq, open(tmp["cons"], "wb") as f_cons, open(tmp["targets"], "wb") as f_tgt:
        for start in range(0, length, CHUNK_BP):
            end = min(start + CHUNK_BP, length)
            codes = genome.fetch(chrom, start, end)
            f_seq.write(codes.tobytes())
            padded_end = start + -(-(end - start) // BIN_BP) * BIN_BP
            is_n = np.zeros(padded_end - start, dtype=bool)
            is_n[: end - start] = codes == N
            is_n[end - start :] = True  # past the chromosome end counts as N
            n_per_bin[start // BIN_BP : padded_end // BIN_BP] = is_n.reshape(-1, BIN_BP).sum(axis=1)
            if cons_file is not None:
                values = cons_file.values(chrom, start, end, missing=0.0)
                cons_outside += int(np.count_nonzero((values < 0) | (values > 1)))
                f_cons.write(quantise_conservation(values).tobytes())
            else:
                f_cons.write(np.zeros(end - start, dtype=np.uint8).tobytes())
            block = np.empty(((padded_end - start) // BIN_BP, len(tracks)), dtype=np.float16)
            for j, t in enumerate(tracks):
                values = track_files[t.name].values(chrom, start, padded_end, missing=0.0)
                binned = bin_values(values, BIN_BP, t.stat).astype(np.float64) * t.scale
                if t.clip is not None:
                    binned = np.minimum(binned, t.clip)
                if binned.max(initial=0.0) > FLOAT16_MAX:
                    raise InputFileError(
                        f"{t.path}: values reach {binned.max():.3g} after scaling, more than float16 holds: "
                        "set a smaller scale or a clip in the targets sheet"
                    )
                binned = np.maximum(binned, 0.0)  # accessibility is a count: negatives are noise
                block[:, j] = binned
                s = track_stats[t.name]
                s["sum"] += float(binned.sum())
                s["max"] = max(s["max"], float(binned.max(initial=0.0)))
                s["bins"] += len(binned)
                s["nonzero"] += int(np.count_nonzero(binned))
            f_tgt.write(block.tobytes())
            if progress:
                progress(end - start)
    for kind, path in (("seq", seq_path(build, index)), ("cons", cons_path(build, index)),
                       ("targets", targets_path(build, index))):
        os.replace(tmp[kind], path)
    np.save(build / "done" / f"{index}.nbins.npy", n_per_bin)
    return {"chrom": chrom, "track_stats": track_stats, "cons_outside": cons_outside}


def _window_table(build: Path, chroms: List[str], sizes: Dict[str, int], valid: List[str], test: List[str],
                  window_bp: int, step_bp: int, max_n_fraction: float, black: IntervalIndex):
    rows: List[str] = []
    dropped = {"n_fraction": 0, "blacklist": 0}
    for index, chrom in enumerate(chroms):
        split = "valid" if chrom in valid else "test" if chrom in test else "train"
        length = sizes[chrom]
        if length < window_bp:
            continue
        n_per_bin = np.load(build / "done" / f"{index}.nbins.npy")
        cum = np.concatenate([[0], np.cumsum(n_per_bin, dtype=np.int64)])
        starts = np.arange(0, length - window_bp + 1, step_bp, dtype=np.int64)
        ends = starts + window_bp
        n_frac = (cum[ends // BIN_BP] - cum[starts // BIN_BP]) / window_bp
        bad_n = n_frac > max_n_fraction
        bad_black = black.overlaps_many(chrom, starts, ends) & ~bad_n
        dropped["n_fraction"] += int(bad_n.sum())
        dropped["blacklist"] += int(bad_black.sum())
        keep = ~(bad_n | bad_black)
        for s, e, f in zip(starts[keep], ends[keep], n_frac[keep]):
            rows.append(f"{chrom}\t{s}\t{e}\t{split}\t{f:.4f}\n")
    return rows, dropped
