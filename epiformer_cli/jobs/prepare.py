"""``prepare``: genome FASTA + conservation bigWig + target bigWigs -> a training store.

Streams chromosome by chromosome in 1 Mb chunks, so memory stays bounded whatever the genome
size. The store is built in a hidden ``.<name>.partial`` folder beside the output (a run folder of the
resumable-run layer, :mod:`epiformer_cli.runs`), chromosome by chromosome with a
done-marker each: a killed run resumes where it stopped, and the output folder appears only when
complete. Re-running on the same inputs is a no-op; other inputs are refused naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

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
from epiformer_cli.inference.inputs import open_conservation
from epiformer_cli.io.bed import IntervalIndex, read_bed
from epiformer_cli.io.bigwig import BigWig, bin_values
from epiformer_cli.io.chroms import resolve_name, resolve_names
from epiformer_cli.io.files import atomic_output, atomic_path, atomic_write_text
from epiformer_cli.io.genome import Genome
from epiformer_cli.io.identity import file_identity
from epiformer_cli.io.targets import TargetTrack, read_targets
from epiformer_cli.options import PrepareOptions
from epiformer_cli.progress import Progress
from epiformer_cli.runs import FOREIGN, Crc32, ResumableRun, RunFinishedElsewhere, check_output_dir, read_settings
from epiformer_cli.runs import require_room, reuse_or_replace

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
    progress: Optional[Progress] = None,
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
    named = [("--fasta", fasta), ("--cons", cons), ("--targets", targets), ("--blacklist", blacklist)]
    named += [("the --fasta index", Path(f"{fasta}{suffix}")) for suffix in (".fai", ".gzi")]
    check_output_dir(out, inputs=named)
    genome = Genome(fasta)
    use, valid, test = _splits(options, genome.chroms, Path(fasta))
    tracks = read_targets(targets)
    check_output_dir(out, inputs=[(f"the targets' {t.name}", t.path) for t in tracks])
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
        checksums[WINDOWS] = Crc32.of(table.encode())
        per_split = {s: sum(1 for r in rows if r.split("\t")[3] == s) for s in ("train", "valid", "test")}
        if per_split["train"] == 0:
            raise InputFileError(
                f"{fasta}: no training windows of {options.window_bp} bp survive (chromosomes too short, too many N, "
                "or blacklisted): use a smaller --window, a larger --max-n-fraction, or more chromosomes"
            )
        manifest = _manifest(key, fingerprint, genome.chrom_sizes, cons, tracks, stats, per_split, dropped)
        manifest["checksums"] = {name: total.record() for name, total in sorted(checksums.items())}
        atomic_write_text(build.path(MANIFEST), json.dumps(manifest, indent=2))
        build.publish_as(out, drop=("done",), lock="publish.lock")
    return PrepareSummary(out, [t.name for t in tracks], use, per_split, seconds=time.perf_counter() - started,
                          dropped=dropped)


def _check_space(build: ResumableRun, use: List[str], sizes: Dict[str, int], n_tracks: int, out: Path) -> None:
    """Refuse before any work when the arrays still to write (their sizes are exact: 2 bytes a base,
    2 bytes a bin and track) cannot fit, or one is over the file-size limit."""
    todo = [c for i, c in enumerate(use) if not build.is_done(f"done/{i}.json")]
    # per chromosome: the bases and the conservation (1 byte a base each), the targets (float16 a bin and track)
    files = [size for c in todo for size in (sizes[c], sizes[c], 2 * n_tracks * -(-sizes[c] // BIN_BP))]
    require_room(build.root, files, f"the training store {out}")


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
    other inputs is refused (naming what differs) unless ``force``, which also rebuilds one of the
    same inputs."""
    manifest = read_settings(out / MANIFEST) if (out / MANIFEST).exists() else None
    if manifest is None:
        found = FOREIGN if out.exists() and any(out.iterdir()) else None
    else:
        found = manifest.get("inputs") or {"store format": manifest.get("format_version")}
    reuse = reuse_or_replace(out, what="prepared store", found=found, wanted=fingerprint, force=force,
                             fix="use --force to rebuild it", default="store format",
                             foreign=f"{out} exists and is not a prepared store: choose another --out")
    return manifest if reuse and manifest.get("fingerprint") == key else None


def _write_chromosomes(genome: Genome, cons_file: Optional[BigWig], tracks: List[TargetTrack],
                       track_files: Dict[str, BigWig], build: ResumableRun, use: List[str], progress):
    """Stream every chromosome not yet done into the build, one done-marker each; returns the
    per-track statistics summed over the chromosomes and the count of clipped conservation values."""
    total_bp = sum(genome.chrom_sizes[c] for c in use)
    if progress:
        progress(0, total=total_bp)
    stats = {t.name: {"sum": 0.0, "max": 0.0, "bins": 0, "nonzero": 0} for t in tracks}
    stats_checksums: Dict[str, Crc32] = {}
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
        claims.work_through(list(enumerate(use)), lambda item: take(*item), lambda item: f"done/{item[0]}.json",
                            build.is_done, what="chromosomes")
    for index in range(len(use)):
        info = infos[index]
        stats_checksums.update({name: Crc32.from_record(value) for name, value in info.get("checksums", {}).items()})
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


def _write_chromosome(genome: Genome, cons_file: Optional[BigWig], tracks: List[TargetTrack],
                      track_files: Dict[str, BigWig], build: Path, index: int, chrom: str,
                      progress: Optional[Progress]) -> dict:
    """Stream one chromosome into the store's files; returns its per-bin N counts and track stats."""
    length = genome.chrom_sizes[chrom]
    n_bins = -(-length // BIN_BP)
    n_per_bin = np.zeros(n_bins, dtype=np.int32)
    track_stats = {t.name: {"sum": 0.0, "max": 0.0, "bins": 0, "nonzero": 0} for t in tracks}
    cons_outside = 0
    paths = {"seq": seq_path(build, index), "cons": cons_path(build, index), "targets": targets_path(build, index)}
    sums = {kind: Crc32() for kind in paths}  # of each file, as written

    # each array appears complete or not at all (a killed or failed write leaves no partial array)
    with ExitStack() as stack:
        handles = {kind: stack.enter_context(open(stack.enter_context(atomic_path(path)), "wb"))
                   for kind, path in paths.items()}

        def put(kind: str, data: np.ndarray) -> None:
            sums[kind].update(data)
            handles[kind].write(memoryview(data).cast("B"))

        for start in range(0, length, CHUNK_BP):
            end = min(start + CHUNK_BP, length)
            codes = genome.fetch(chrom, start, end)
            put("seq", np.ascontiguousarray(codes))
            padded_end = start + -(-(end - start) // BIN_BP) * BIN_BP
            is_n = np.zeros(padded_end - start, dtype=bool)
            is_n[: end - start] = codes == N
            is_n[end - start :] = True  # past the chromosome end counts as N
            n_per_bin[start // BIN_BP : padded_end // BIN_BP] = is_n.reshape(-1, BIN_BP).sum(axis=1)
            if cons_file is not None:
                values = cons_file.values(chrom, start, end, missing=0.0)
                cons_outside += int(np.count_nonzero((values < 0) | (values > 1)))
                put("cons", quantise_conservation(values))
            else:
                put("cons", np.zeros(end - start, dtype=np.uint8))
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
            put("targets", block)
            if progress:
                progress(end - start)
    with atomic_output(build / "done" / f"{index}.nbins.npy") as handle:
        np.save(handle, n_per_bin)
    checksums = {path.relative_to(build).as_posix(): sums[kind].record() for kind, path in paths.items()}
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
