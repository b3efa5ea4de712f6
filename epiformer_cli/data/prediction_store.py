"""The prediction store: resumable, shardable genome-wide predictions on disk, one file per chunk.

Layout of a store folder::

    manifest.json                 kind, format_version, fingerprint (what the values depend on),
                                  layout (chromosome sizes in FASTA order, window geometry,
                                  chunk size, tracks, dtype) and the list of chunks to compute
    chunks/<c>/<k>.npy            chunk k of chromosome c (c = index in the manifest's chromosome
                                  order): predictions as a (tracks, bins) float32/float16 array,
                                  128 bp bins from the chunk's start; NaN = not requested (--regions);
                                  then the resumable layer's checksum line (``np.load`` ignores it)
    claims/                       one lock per chunk being computed (concurrent runs share chunks)
    shards/<i>-of-<n>.json        a record per shard run (started / done), for messages only

A chunk is ``chunk_windows`` consecutive windows of the model's exact tiling of a chromosome
(:class:`~epiformer_cli.data.tiling.WindowGrid`), so a chunk covers
``[k * chunk_windows * out_bp, (k + 1) * chunk_windows * out_bp)`` clipped to the chromosome.
Chunk files are written to a temporary name and renamed into place: a chunk file that exists is
complete, and is its own done-marker. Its checksum is verified whenever it is read (resume, export):
predict recomputes a damaged chunk with one warning, export refuses it naming the fix. All
coordinates are 0-based, half-open.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from epiformer_cli.runs import CorruptPiece, ResumableRun
from epiformer_cli.errors import InputFileError, UsageError

STORE_KIND = "epiformer-predictions"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OPTIONS_FILE = "predict-options.json"
DTYPES = ("float32", "float16")

T = TypeVar("T")


@dataclass(frozen=True)
class Chunk:
    """One unit of work and storage: consecutive windows of one chromosome.

    Attributes:
        chrom, chrom_index: chromosome name and its index in the store's chromosome order.
        index: chunk number within the chromosome.
        first_window, n_windows: the tiling windows it holds.
        start, end: the bases its bins cover, ``[start, end)``, end clipped to the chromosome.
        n_bins: bins stored (the last may run past ``end``, as the chromosome's last bin does).
    """

    chrom: str
    chrom_index: int
    index: int
    first_window: int
    n_windows: int
    start: int
    end: int
    n_bins: int

    def describe(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end} (chunk {self.index})"


@dataclass(frozen=True)
class StoreLayout:
    """How predictions are laid out: fixed when the store is created.

    Attributes:
        chrom_sizes: every FASTA chromosome -> bp, in FASTA order (the bigWig header).
        window_bp, crop_bp, bin_bp: the model's window geometry.
        chunk_windows: windows per chunk.
        tracks: stored track names, in array order.
        dtype: ``float32`` or ``float16``.
        chunks: ``(chrom, chunk index)`` of every chunk the store should hold.
    """

    chrom_sizes: Dict[str, int]
    window_bp: int
    crop_bp: int
    bin_bp: int
    chunk_windows: int
    tracks: List[str]
    dtype: str
    chunks: List[Tuple[str, int]]

    @property
    def out_bp(self) -> int:
        return self.window_bp - 2 * self.crop_bp

    @cached_property
    def _chrom_index(self) -> Dict[str, int]:
        return {c: i for i, c in enumerate(self.chrom_sizes)}

    def to_dict(self) -> Dict[str, Any]:
        return {
            "chrom_sizes": [[c, int(s)] for c, s in self.chrom_sizes.items()],
            "window_bp": self.window_bp, "crop_bp": self.crop_bp, "bin_bp": self.bin_bp,
            "chunk_windows": self.chunk_windows, "tracks": list(self.tracks), "dtype": self.dtype,
            "chunks": [[c, int(k)] for c, k in self.chunks],
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "StoreLayout":
        return cls(
            chrom_sizes={str(c): int(s) for c, s in data["chrom_sizes"]},
            window_bp=int(data["window_bp"]), crop_bp=int(data["crop_bp"]), bin_bp=int(data["bin_bp"]),
            chunk_windows=int(data["chunk_windows"]), tracks=[str(t) for t in data["tracks"]],
            dtype=str(data["dtype"]), chunks=[(str(c), int(k)) for c, k in data["chunks"]],
        )

    def chunk(self, chrom: str, index: int) -> Chunk:
        """The geometry of chunk ``index`` of ``chrom``."""
        size = self.chrom_sizes[chrom]
        out_bp = self.out_bp
        n_windows_chrom = -(-size // out_bp)
        first = index * self.chunk_windows
        n = min(self.chunk_windows, n_windows_chrom - first)
        if n <= 0:
            raise ValueError(f"{chrom} has no chunk {index}")
        start = first * out_bp
        end = min((first + n) * out_bp, size)
        n_bins = -(-(end - start) // self.bin_bp)
        return Chunk(chrom, self._chrom_index[chrom], index, first, n, start, end, n_bins)


def chunks_of(chrom_sizes: Dict[str, int], out_bp: int, chunk_windows: int, chroms: Sequence[str]) -> List[Tuple[str, int]]:
    """Every chunk of ``chroms`` (in ``chrom_sizes`` order): ``(chrom, index)`` pairs."""
    wanted = set(chroms)
    out = []
    for chrom, size in chrom_sizes.items():
        if chrom in wanted:
            n_windows = -(-size // out_bp)
            out += [(chrom, k) for k in range(-(-n_windows // chunk_windows))]
    return out


class PredictionStore:
    """A prediction store folder (see the module docstring for the layout), kept by the resumable
    run layer (:class:`~epiformer_cli.runs.ResumableRun`).

    Open an existing store with ``PredictionStore(root)``; create or reopen one for a run with
    :meth:`create`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        manifest_file = self.root / MANIFEST
        if not manifest_file.is_file():
            raise InputFileError(f"{self.root}: not a prediction store (no {MANIFEST}): "
                                 "make one with `epiformer predict`")
        try:
            self.manifest = json.loads(manifest_file.read_text())
        except (ValueError, OSError) as exc:  # ValueError: not JSON, or not UTF-8 text
            raise InputFileError(f"{manifest_file}: unreadable manifest ({type(exc).__name__}): "
                                 "re-run predict with --force") from None
        if not isinstance(self.manifest, dict):
            raise InputFileError(f"{manifest_file}: unreadable manifest (not a JSON object): re-run predict with --force")
        if self.manifest.get("kind") != STORE_KIND:
            raise InputFileError(f"{self.root}: not a prediction store (manifest kind {self.manifest.get('kind')!r})")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise InputFileError(
                f"{self.root}: prediction store format {self.manifest.get('format_version')!r} is not the "
                f"supported {FORMAT_VERSION}: re-run predict with --force"
            )
        try:
            self.layout = StoreLayout.from_dict(self.manifest["layout"])
            self.fingerprint: Dict[str, Any] = self.manifest["fingerprint"]
            self.chunks: List[Chunk] = [self.layout.chunk(c, k) for c, k in self.layout.chunks]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # an edited or damaged manifest
            raise InputFileError(f"{manifest_file}: damaged manifest ({type(exc).__name__}: {exc}): "
                                 "re-run predict with --force") from None
        self.run = ResumableRun.reopen(self.root, kind=STORE_KIND, format_version=FORMAT_VERSION,
                                       what="prediction store")

    # ---- creation ------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, layout: StoreLayout, fingerprint: Dict[str, Any],
               force: bool = False) -> "PredictionStore":
        """Create a store, or reopen one made with the same fingerprint and layout (to resume).

        Raises:
            UsageError: ``root`` holds a store of other inputs or options (naming the settings that
                differ; ``force`` discards it), or is a non-empty folder that is not a prediction store.
        """
        if layout.dtype not in DTYPES:
            raise UsageError(f"store dtype must be one of {', '.join(DTYPES)}, not {layout.dtype!r}")
        ResumableRun(root, kind=STORE_KIND, format_version=FORMAT_VERSION,
                     settings={"fingerprint": fingerprint, "layout": layout.to_dict()},
                     what="prediction store", owned=("chunks", OPTIONS_FILE), force=force,
                     fix="use another --store (or --out), or --force to discard it")
        return cls(root)

    # ---- chunks --------------------------------------------------------------------------------
    @property
    def tracks(self) -> List[str]:
        return list(self.layout.tracks)

    @property
    def chrom_sizes(self) -> Dict[str, int]:
        return dict(self.layout.chrom_sizes)

    @staticmethod
    def _piece(chunk: Chunk) -> str:
        return f"chunks/{chunk.chrom_index}/{chunk.index}.npy"

    def chunk_path(self, chunk: Chunk) -> Path:
        return self.run.path(self._piece(chunk))

    def is_done(self, chunk: Chunk) -> bool:
        return self.run.is_done(self._piece(chunk))

    def missing(self) -> List[Chunk]:
        """Chunks of the manifest without a (complete) chunk file."""
        return [c for c in self.chunks if not self.is_done(c)]

    def piece(self, chunk: Chunk) -> str:
        """The chunk's piece name in the run folder (its claim's name too)."""
        return self._piece(chunk)

    def drop_damaged(self, chunks: Sequence[Chunk]) -> List[Chunk]:
        """Check the stored chunks among ``chunks`` against their checksums; remove the damaged ones
        with one warning naming them (they are then computed again). Returns the chunks removed."""
        damaged = [c for c in chunks if self.run.is_done(self._piece(c)) and not self.run.verify(self._piece(c))]
        if len(damaged) == 1:
            self.run.drop_damaged(self._piece(damaged[0]), f"prediction chunk {damaged[0].describe()}")
        elif damaged:  # e.g. a store copied with errors, or made before chunks had checksums: one line
            import logging

            logging.getLogger(__name__).warning(
                "%d prediction chunks in %s failed their checksums (a damaged disk or copy?), e.g. %s: they are "
                "computed again", len(damaged), self.root, ", ".join(str(self.chunk_path(c)) for c in damaged[:3]))
            for chunk in damaged:
                self.chunk_path(chunk).unlink(missing_ok=True)
        return damaged

    def write(self, chunk: Chunk, values: np.ndarray) -> None:
        """Store chunk predictions, (tracks, chunk.n_bins), atomically (the file is its done-marker)."""
        values = np.asarray(values, dtype=self.layout.dtype)
        expected = (len(self.layout.tracks), chunk.n_bins)
        if values.shape != expected:
            raise ValueError(f"chunk {chunk.describe()} needs values {expected}, got {values.shape}")
        self.run.write(self._piece(chunk), lambda handle: np.save(handle, values, allow_pickle=False))

    def read(self, chunk: Chunk) -> np.ndarray:
        """A chunk's predictions, (tracks, n_bins) float32; NaN marks bins not requested."""
        path = self.chunk_path(chunk)
        try:
            values = np.load(io.BytesIO(self.run.read_bytes(self._piece(chunk))), allow_pickle=False)
        except CorruptPiece as exc:
            raise CorruptPiece(f"{exc}: run the same predict command again to recompute it") from None
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{path}: unreadable chunk ({exc}): delete it and re-run predict to recompute it") from None
        if values.shape != (len(self.layout.tracks), chunk.n_bins):
            raise InputFileError(f"{path}: chunk has shape {values.shape}, expected "
                                 f"{(len(self.layout.tracks), chunk.n_bins)}: delete it and re-run predict")
        return values.astype(np.float32, copy=False)

    def write_options(self, provenance: Dict[str, Any]) -> None:
        """The resolved options and inputs of the run, next to the predictions they made."""
        from epiformer_cli.io.files import atomic_write_text

        atomic_write_text(self.run.path(OPTIONS_FILE), json.dumps(provenance, indent=1) + "\n")  # for people: no checksum line

    # ---- shards (for messages) -----------------------------------------------------------------
    def describe_missing(self, missing: Optional[List[Chunk]] = None, limit: int = 8) -> str:
        """'3 of 12 chunks are missing: chr1:0-... (chunk 0), ...; they belong to shards 2/3'."""
        missing = self.missing() if missing is None else missing
        position = {(c.chrom, c.index): i for i, c in enumerate(self.chunks)}
        return self.run.describe_missing([position[(c.chrom, c.index)] for c in missing], len(self.chunks),
                                         [c.describe() for c in missing], "chunks", limit)
