"""The prepared training store: per-base genome data on disk, read a window at a time.

Layout of a store folder (everything a training window needs, nothing per-augmentation)::

    manifest.json            inputs (sizes, mtimes), tracks, normalisation, chromosome sizes, windows
    windows.tsv              chrom, start, end, split, n_fraction: one row per usable window
    seq/<i>.u8               chromosome i's bases as uint8 codes (A=0 C=1 G=2 T=3 N=4), 1 byte/bp
    cons/<i>.u8              conservation quantised to 0..255 (value = q / 255), 1 byte/bp
    targets/<i>.f16          normalised targets, float16, shape (bins, tracks), 128 bp bins

The manifest's ``checksums`` hold the CRC-32 and size of every array and of windows.tsv, taken as
they were written; :meth:`TrainingStore.verify` (run at the start of training) checks them, and a
store that fails is refused naming the file and the fix (``epiformer prepare ... --force``).

The size grows with the genome (2 bytes/bp + 2 bytes per bin and track), not with the number of
windows or augmentations. Reading a window is three memory-mapped slices. Coordinates are 0-based,
half-open; ``<i>`` is the chromosome's index in ``manifest["chroms"]`` (names may hold any character).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from epiformer_cli.data.encoding import N
from epiformer_cli.errors import InputFileError

STORE_FORMAT = 1
MANIFEST = "manifest.json"
WINDOWS = "windows.tsv"
CONS_LEVELS = 255  # conservation q in 0..255 stands for q / 255
SPLITS = ("train", "valid", "test")


def seq_path(root: Path, index: int) -> Path:
    return root / "seq" / f"{index}.u8"


def cons_path(root: Path, index: int) -> Path:
    return root / "cons" / f"{index}.u8"


def targets_path(root: Path, index: int) -> Path:
    return root / "targets" / f"{index}.f16"


def quantise_conservation(values: np.ndarray) -> np.ndarray:
    """Conservation in [0, 1] (float) -> uint8 levels; values outside are clipped."""
    return np.rint(np.clip(values, 0.0, 1.0) * CONS_LEVELS).astype(np.uint8)


def dequantise_conservation(levels: np.ndarray) -> np.ndarray:
    """uint8 levels -> float32 conservation in [0, 1]."""
    return levels.astype(np.float32) * np.float32(1.0 / CONS_LEVELS)


@dataclass(frozen=True)
class StoreWindows:
    """The window table of one split: parallel arrays, coordinates 0-based half-open."""

    chrom_index: np.ndarray  # (n,) int32 index into TrainingStore.chroms
    start: np.ndarray  # (n,) int64
    end: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.start)


class TrainingStore:
    """Read access to a store made by ``epiformer prepare`` (safe to hand to worker processes).

    Args:
        root: the store folder.

    Attributes:
        manifest: the parsed manifest.json.
        chroms: chromosome names in store order; chrom_sizes: name -> bp.
        tracks: target track names, in the order of the targets' last axis.
        bin_bp, window_bp: bin size and window length (bp) the store was prepared for.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        manifest_file = self.root / MANIFEST
        if not manifest_file.exists():
            raise InputFileError(
                f"{self.root}: not a prepared store (no {MANIFEST}): make one with `epiformer prepare`"
            )
        try:
            self.manifest = json.loads(manifest_file.read_text())
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{manifest_file}: unreadable manifest ({exc}): re-run `epiformer prepare`") from exc
        if self.manifest.get("format_version") != STORE_FORMAT:
            raise InputFileError(
                f"{self.root}: store format {self.manifest.get('format_version')} is not the "
                f"supported {STORE_FORMAT}: re-run `epiformer prepare` with this version"
            )
        self.chroms: List[str] = list(self.manifest["chroms"])
        self.chrom_sizes: Dict[str, int] = {c: int(self.manifest["chrom_sizes"][c]) for c in self.chroms}
        self.tracks: List[str] = [t["name"] for t in self.manifest["tracks"]]
        self.bin_bp: int = int(self.manifest["bin_bp"])
        self.window_bp: int = int(self.manifest["window_bp"])
        self._maps: Dict[Tuple[str, int], np.memmap] = {}
        self._pid = os.getpid()
        self._windows = self._read_windows()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def _read_windows(self) -> Dict[str, StoreWindows]:
        import pandas as pd

        table = pd.read_csv(self.root / WINDOWS, sep="\t", dtype={"chrom": str})
        index = {c: i for i, c in enumerate(self.chroms)}
        out = {}
        for split in SPLITS:
            rows = table[table["split"] == split]
            out[split] = StoreWindows(
                chrom_index=rows["chrom"].map(index).to_numpy(np.int32),
                start=rows["start"].to_numpy(np.int64),
                end=rows["end"].to_numpy(np.int64),
            )
        return out

    def verify(self, progress=None) -> int:
        """Check every array and windows.tsv against the manifest's checksums; returns the bytes read.

        ``progress(n_bytes, total=...)`` is called as files are read. A store made before checksums
        existed is accepted with one warning.

        Raises:
            StorageError: a file is missing, of another size, or fails its checksum (naming it and
                the fix: rebuild the store with ``epiformer prepare ... --force``).
        """
        import logging

        from epiformer_cli.errors import StorageError
        from epiformer_cli.runs.checksums import Crc32

        sums = self.manifest.get("checksums")
        if not sums:
            logging.getLogger(__name__).warning("%s was prepared by an older epiformer (no checksums): its arrays "
                                                "are not checked; rebuild it with `epiformer prepare ... --force` "
                                                "to have them checked", self.root)
            return 0
        fix = "the store is damaged: rebuild it with `epiformer prepare ... --force` (same inputs)"
        total = sum(int(v["bytes"]) for v in sums.values())
        if progress:
            progress(0, total=total)
        done = 0
        for name, expected in sums.items():
            path = self.root / name
            try:
                found = Crc32.of_file(path, progress=progress)
            except OSError as exc:
                raise StorageError(f"{path}: cannot read it ({exc.strerror}): {fix}") from None
            wanted = Crc32.from_record(expected)
            if found.length != wanted.length:
                raise StorageError(f"{path} has {found.length:,} bytes, {wanted.length:,} were written "
                                   f"(truncated?): {fix}")
            if found != wanted:
                raise StorageError(f"{path} fails its checksum (a changed byte): {fix}")
            done += found.length
        return done

    def windows(self, split: str) -> StoreWindows:
        """The usable windows of ``split`` (train, valid or test)."""
        return self._windows[split]

    def _map(self, kind: str, index: int) -> np.memmap:
        if self._pid != os.getpid():  # a forked worker: open its own maps
            self._maps, self._pid = {}, os.getpid()
        key = (kind, index)
        if key not in self._maps:
            if kind == "seq":
                self._maps[key] = np.memmap(seq_path(self.root, index), dtype=np.uint8, mode="r")
            elif kind == "cons":
                self._maps[key] = np.memmap(cons_path(self.root, index), dtype=np.uint8, mode="r")
            else:
                self._maps[key] = np.memmap(targets_path(self.root, index), dtype=np.float16, mode="r").reshape(
                    -1, len(self.tracks)
                )
        return self._maps[key]

    def read_inputs(self, chrom_index: int, start: int, end: int) -> Tuple[np.ndarray, np.ndarray]:
        """Codes (uint8) and conservation (float32) of ``[start, end)``, shape (end - start,) each.

        Positions outside the chromosome are N with conservation 0.
        """
        size = self.chrom_sizes[self.chroms[chrom_index]]
        codes = np.full(end - start, N, dtype=np.uint8)
        cons = np.zeros(end - start, dtype=np.float32)
        lo, hi = max(start, 0), min(end, size)
        if hi > lo:
            codes[lo - start : hi - start] = self._map("seq", chrom_index)[lo:hi]
            cons[lo - start : hi - start] = dequantise_conservation(self._map("cons", chrom_index)[lo:hi])
        return codes, cons

    def read_targets(self, chrom_index: int, start: int, end: int) -> np.ndarray:
        """Normalised targets of the bins covering ``[start, end)``, float32 (tracks, bins).

        ``start`` and ``end`` must lie on the bin grid; bins outside the chromosome read as 0.
        """
        if start % self.bin_bp or end % self.bin_bp:
            raise ValueError("target reads must start and end on 128 bp bin edges")
        targets = self._map("targets", chrom_index)
        b0, b1 = start // self.bin_bp, end // self.bin_bp
        out = np.zeros((b1 - b0, len(self.tracks)), dtype=np.float32)
        lo, hi = max(b0, 0), min(b1, targets.shape[0])
        if hi > lo:
            out[lo - b0 : hi - b0] = targets[lo:hi]
        return out.T.copy()

    def read_window(self, chrom_index: int, start: int, end: int, shift: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One training example: inputs of ``[start + shift, end + shift)`` and targets of ``[start, end)``.

        A shift of a few bp moves the sequence and conservation together (never one without the
        other); the targets stay on the 128 bp grid, since a sub-bin shift moves no bin.

        Returns:
            codes (L,) uint8, conservation (L,) float32, targets (tracks, L // 128) float32.
        """
        codes, cons = self.read_inputs(chrom_index, start + shift, end + shift)
        return codes, cons, self.read_targets(chrom_index, start, end)
