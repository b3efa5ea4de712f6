"""``prepare``: genome FASTA + conservation bigWig + target bigWigs -> a training store.

Streams chromosome by chromosome in 1 Mb chunks, so memory stays bounded whatever the genome
size. The store is built in a hidden ``.<name>.partial`` folder beside the output (a run folder of the
resumable-run layer, :mod:`epiformer_cli.data.resumable`), chromosome by chromosome with a
done-marker each: a killed run resumes where it stopped, and the output folder appears only when
complete. Re-running on the same inputs is a no-op; other inputs are refused naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.data.encoding import N
from epiformer_cli.data.resumable import ResumableRun, RunFinishedElsewhere, differences, read_settings
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
from epiformer_cli.io.chroms import resolve_name, resolve_names
from epiformer_cli.io.faults import is_storage_fault, require_free_space, storage_error
from epiformer_cli.io.files import atomic_write_text, check_output_dir, file_identity
from epiformer_cli.io.genome import Genome
from epiformer_cli.io.targets import TargetTrack, read_targets
from epiformer_cli.jobs.inputs import open_conservation
from epiformer_cli.options import PrepareOptions

log = logging.getLogger(__name__)

CHUNK_BP = 1 << 20  # bases read per step: bounded memory, a multiple of the 128 bp bin
BUILD_KIND = "epiformer-prepare-build"
BUILD_SETTINGS = "build.json"
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


def prepare_store(
    fasta: str | Path,
    cons: Optional[str | Path],
    targets: str | Path,
    out: str | Path,
    *,
    blacklist: Optional[str | Path] = None,
    options: PrepareOptions = PrepareOptions(),
    progress: Optional[Callable[..., None]] = None,
) -> PrepareSummary:
    """Build a training store (see :mod:`epiformer_cli.data.training_store` for its layout).

    Args:
        fasta: genome FASTA (plain or bgzipped).
        cons: conservation bigWig (phastCons-like, 0..1; missing = 0), or None for all zero.
        targets: targets sheet (TSV with name, path[, scale, clip, stat]) or a list of bigWigs.
        out: the store folder to create.
        blacklist: BED of regions whose windows are dropped.
        options: :class:`~epiformer_cli.options.PrepareOptions` (window, step, chromosomes and
            held-out chromosomes, N filter, force).
        progress: called as ``progress(n_bp, total=...)`` as bases are processed.
    """
    started = time.perf_counter()
    out = Path(out)
    check_output_dir(out, inputs=[fasta, cons, targets, blacklist])
    genome = Genome(fasta)
    use, valid, test = _splits(options, genome.chroms, Path(fasta))
    tracks = read_targets(targets)
    track_files = _open_targets(tracks, use, genome, str(fasta))
    cons_file = open_conservation(Path(cons), genome, str(fasta), chroms=use, clip=False) if cons is not None else None
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
        "window_bp": options.window_bp,
        "step_bp": options.step_bp,
        "max_n_fraction": options.max_n_fraction,
    }
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    existing = _existing_store(out, key, fingerprint, options.force)
    if existing is not None:
        log.info("%s is up to date with its inputs: nothing to do", out)
        return PrepareSummary(out, [t.name for t in tracks], use, dict(existing["windows_per_split"]), reused=True)

    build = ResumableRun(out.parent / f".{out.name}.partial", kind=BUILD_KIND, format_version=STORE_FORMAT,
                         settings={"fingerprint": fingerprint}, what="interrupted prepare build",
                         settings_file=BUILD_SETTINGS, owned=("seq", "cons", "targets", "done", "publish.lock"), force=options.force,
                         fix="run the same command to resume it, or --force to start over")
    if build.resumed:
        log.info("resuming the interrupted build in %s", build.root)
    for sub in ("seq", "cons", "targets", "done"):
        build.path(sub).mkdir(exist_ok=True)
    _check_space(build, use, genome.chrom_sizes, len(tracks), out)

    try:
        stats, cons_outside, checksums = _write_chromosomes(genome, cons_file, tracks, track_files, build, use,
                                                            progress)
    except RunFinishedElsewhere:
        stats = None
    else:
        if cons_outside:
            log.warning("%s: %d conservation values outside [0, 1] were clipped", cons, cons_outside)
    # one run publishes; a concurrent run of the same command waits for it, then finds the store
    with build.lock("publish.lock", wait=True) as held:
        if stats is None or not held or not build.settings_path.exists():
            existing = _existing_store(out, key, fingerprint, False)
            if existing is None:
                raise InputFileError(f"{build.root} vanished while this run was building it (another run with "
                                     "--force?): run the same command again")
            log.info("%s was finished by another run of the same command", out)
            return PrepareSummary(out, [t.name for t in tracks], use, dict(existing["windows_per_split"]), reused=True)
        rows, dropped = _window_table(build.root, use, genome.chrom_sizes, valid, test, options.window_bp,
                                      options.step_bp, options.max_n_fraction, black)
        table = "chrom\tstart\tend\tsplit\tn_fraction\n" + "".join(rows)
        atomic_write_text(build.path(WINDOWS), table)
        checksums[WINDOWS] = [zlib.crc32(table.encode()), len(table.encode())]
        per_split = {s: sum(1 for r in rows if r.split("\t")[3] == s) for s in ("train", "valid", "test")}
        if per_split["train"] == 0:
            raise InputFileError(
                f"{fasta}: no training windows of {options.window_bp} bp survive (chromosomes too short, too many N, "
                "or blacklisted): use a smaller --window, a larger --max-n-fraction, or more chromosomes"
            )
        manifest = _manifest(key, fingerprint, genome.chrom_sizes, cons, tracks, stats, per_split, dropped)
        manifest["checksums"] = {name: {"crc32": f"{crc & 0xFFFFFFFF:08x}", "bytes": size}
                                 for name, (crc, size) in sorted(checksums.items())}
        atomic_write_text(build.path(MANIFEST), json.dumps(manifest, indent=2))
        _publish(build, out)
    return PrepareSummary(out, [t.name for t in tracks], use, per_split, seconds=time.perf_counter() - started,
                          dropped=dropped)


def _check_space(build: ResumableRun, use: List[str], sizes: Dict[str, int], n_tracks: int, out: Path) -> None:
    """Refuse before any work when the arrays still to write (their sizes are exact: 2 bytes a base,
    2 bytes a bin and track) cannot fit, or one is over the file-size limit."""
    todo = [c for i, c in enumerate(use) if not build.is_done(f"done/{i}.json")]
    needed = sum(2 * sizes[c] + 2 * n_tracks * -(-sizes[c] // BIN_BP) for c in todo)
    largest = max([max(sizes[c], 2 * n_tracks * -(-sizes[c] // BIN_BP)) for c in todo], default=0)
    require_free_space(build.root, needed, f"the training store {out}", largest)


def _splits(options: PrepareOptions, available: List[str], fasta: Path):
    """The chromosomes to use (FASTA order) and the validation and test chromosomes."""
    use = resolve_names(options.chroms, available, "--chroms", str(fasta)) if options.chroms else list(available)
    if options.valid_chroms:
        valid = resolve_names(options.valid_chroms, available, "--valid-chroms", str(fasta))
    else:
        valid = [c for c in (resolve_name(n, available) for n in DEFAULT_VALID) if c]
    if options.test_chroms:
        test = resolve_names(options.test_chroms, available, "--test-chroms", str(fasta))
    else:
        test = [c for c in (resolve_name(n, available) for n in DEFAULT_TEST) if c]
    if not valid or not test:
        raise UsageError(
            f"{fasta} has no chr8/chr9 (the default held-out chromosomes): choose them with "
            "--valid-chroms and --test-chroms"
        )
    if set(valid) & set(test):
        raise UsageError(f"a chromosome cannot be both validation and test: {', '.join(set(valid) & set(test))}")
    chosen = set(use) | set(valid) | set(test)
    return [c for c in available if c in chosen], valid, test


def _open_targets(tracks: List[TargetTrack], use: List[str], genome: Genome, fasta: str) -> Dict[str, BigWig]:
    """Every target bigWig, bound to the FASTA's names; one lacking a used chromosome is an error
    (its windows would train on zeros)."""
    track_files = {t.name: BigWig(t.path, f"target {t.name!r}") for t in tracks}
    for t in tracks:
        cmap = track_files[t.name].bind(use, fasta, genome.chrom_sizes)
        lacking = [c for c in use if c not in cmap]
        if lacking:
            raise InputFileError(
                f"{t.path}: target {t.name!r} has no data for chromosome(s) {', '.join(lacking[:5])}: "
                "exclude them with --chroms, or use a bigWig covering the whole genome"
            )
    return track_files


def _existing_store(out: Path, key: str, fingerprint: Dict, force: bool) -> Optional[Dict]:
    """The manifest of an up-to-date store at ``out``, or None when one must be built. A store of
    other inputs is refused (naming what differs) unless ``force``."""
    if not (out / MANIFEST).exists():
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"{out} exists and is not a prepared store: choose another --out")
        return None
    existing = read_settings(out / MANIFEST) or {}
    if existing.get("fingerprint") == key and not force:
        return existing
    if not force:
        differ = differences(existing.get("inputs") or {}, fingerprint) or ["store format"]
        raise UsageError(f"{out} already holds a store made from other inputs or options ({', '.join(differ)} "
                         f"differ{'s' if len(differ) == 1 else ''}): use --force to rebuild it")
    return None


def _write_chromosomes(genome: Genome, cons_file: Optional[BigWig], tracks: List[TargetTrack],
                       track_files: Dict[str, BigWig], build: ResumableRun, use: List[str], progress):
    """Stream every chromosome not yet done into the build, one done-marker each; returns the
    per-track statistics summed over the chromosomes and the count of clipped conservation values."""
    total_bp = sum(genome.chrom_sizes[c] for c in use)
    if progress:
        progress(0, total=total_bp)
    stats = {t.name: {"sum": 0.0, "max": 0.0, "bins": 0, "nonzero": 0} for t in tracks}
    stats_checksums: Dict[str, List[int]] = {}
    cons_outside = 0
    infos: Dict[int, dict] = {}

    def take(index: int, chrom: str) -> bool:
        """This chromosome's done-marker info, read (checked) or written under its claim; False
        while another run (the same command started twice) is writing it."""
        marker = f"done/{index}.json"
        if not build.settings_path.exists():
            raise RunFinishedElsewhere(str(build.root))
        if build.is_done(marker) and not build.verify(marker):
            build.drop_damaged(marker, f"the done-marker of {chrom}")
        if not build.is_done(marker):
            if not claims.take(marker):
                return False
            try:
                if not build.is_done(marker):
                    info = _write_chromosome(genome, cons_file, tracks, track_files, build.root, index, chrom, progress)
                    build.write_text(marker, json.dumps(info))
                    infos[index] = info
                    return True
            finally:
                claims.release(marker)
        try:
            infos[index] = json.loads(build.read_text(marker))
        except FileNotFoundError:  # the build was published by another run meanwhile
            raise RunFinishedElsewhere(str(build.root)) from None
        if progress:
            progress(genome.chrom_sizes[chrom])
        return True

    with build.claims() as claims:
        pending = [(i, c) for i, c in enumerate(use) if not take(i, c)]
        while pending:
            claims.wait([f"done/{i}.json" for i, _ in pending], build.is_done, what="chromosomes")
            pending = [(i, c) for i, c in pending if not take(i, c)]
    for index in range(len(use)):
        info = infos[index]
        stats_checksums.update(info.get("checksums", {}))
        for name, s in info["track_stats"].items():
            agg = stats[name]
            agg["sum"] += s["sum"]
            agg["max"] = max(agg["max"], s["max"])
            agg["bins"] += s["bins"]
            agg["nonzero"] += s["nonzero"]
        cons_outside += info["cons_outside"]
    return stats, cons_outside, stats_checksums


def _manifest(key: str, fingerprint: Dict, chrom_sizes: Dict[str, int], cons, tracks: List[TargetTrack],
              stats: Dict, per_split: Dict[str, int], dropped: Dict[str, int]) -> Dict:
    """The finished store's manifest.json: inputs, layout, splits, track statistics, normalisation.
    The chromosomes, held-out sets and window geometry are the fingerprint's (what was built)."""
    use, valid, test = fingerprint["chroms"], fingerprint["valid_chroms"], fingerprint["test_chroms"]
    return {
        "format_version": STORE_FORMAT,
        "tool": f"epiformer {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fingerprint": key,
        "inputs": fingerprint,
        "chroms": use,
        "chrom_sizes": {c: chrom_sizes[c] for c in use},
        "bin_bp": BIN_BP,
        "window_bp": fingerprint["window_bp"],
        "step_bp": fingerprint["step_bp"],
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


def _publish(build: ResumableRun, out: Path) -> None:
    """Turn the finished build into the store: drop the build's own files, rename it into place."""
    shutil.rmtree(build.path("done"))
    shutil.rmtree(build.path("shards"), ignore_errors=True)
    shutil.rmtree(build.path("claims"), ignore_errors=True)
    build.path("publish.lock").unlink(missing_ok=True)  # held by this run until it returns: a waiting run then finds the store
    build.settings_path.unlink()
    if out.exists():
        trash = out.parent / f".{out.name}.old{os.getpid()}"
        os.replace(out, trash)
        os.replace(build.root, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(build.root, out)


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
    crcs = {kind: [0, 0] for kind in tmp}  # CRC-32 and bytes of each file, as written

    def put(handle, kind: str, data: bytes) -> None:
        crcs[kind][0] = zlib.crc32(data, crcs[kind][0])
        crcs[kind][1] += len(data)
        handle.write(data)

    try:
        with open(tmp["seq"], "wb") as f_seq, open(tmp["cons"], "wb") as f_cons, open(tmp["targets"], "wb") as f_tgt:
            for start in range(0, length, CHUNK_BP):
                end = min(start + CHUNK_BP, length)
                codes = genome.fetch(chrom, start, end)
                put(f_seq, "seq", codes.tobytes())
                padded_end = start + -(-(end - start) // BIN_BP) * BIN_BP
                is_n = np.zeros(padded_end - start, dtype=bool)
                is_n[: end - start] = codes == N
                is_n[end - start :] = True  # past the chromosome end counts as N
                n_per_bin[start // BIN_BP : padded_end // BIN_BP] = is_n.reshape(-1, BIN_BP).sum(axis=1)
                if cons_file is not None:
                    values = cons_file.values(chrom, start, end, missing=0.0)
                    cons_outside += int(np.count_nonzero((values < 0) | (values > 1)))
                    put(f_cons, "cons", quantise_conservation(values).tobytes())
                else:
                    put(f_cons, "cons", np.zeros(end - start, dtype=np.uint8).tobytes())
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
                put(f_tgt, "targets", block.tobytes())
                if progress:
                    progress(end - start)
    except BaseException as exc:
        for path in tmp.values():  # a killed or failed write leaves no partial array behind
            path.unlink(missing_ok=True)
        if is_storage_fault(exc):
            raise storage_error(exc, f"the training store {build} ({chrom})") from None
        raise
    for kind, path in (("seq", seq_path(build, index)), ("cons", cons_path(build, index)),
                       ("targets", targets_path(build, index))):
        os.replace(tmp[kind], path)
    np.save(build / "done" / f"{index}.nbins.npy", n_per_bin)
    checksums = {path.relative_to(build).as_posix(): crcs[kind] for kind, path in
                 (("seq", seq_path(build, index)), ("cons", cons_path(build, index)),
                  ("targets", targets_path(build, index)))}
    return {"chrom": chrom, "track_stats": track_stats, "cons_outside": cons_outside, "checksums": checksums}


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
