"""``explain`` output folders read as TF-MoDISco's inputs.

An explain folder's ``contrib.npz`` holds, per explained sequence, the (tracks, 4, L) ISM effects or
hypothetical contributions and the bases. TF-MoDISco wants, per track, fixed-length examples:
one-hot (N, W, 4) and hypothetical contributions (N, W, 4). Each example here is the ``window`` bp at
the centre of one explained region (zero-padded when the region is shorter), taken from every
folder given, each region once (shards or runs that explained the same region are not counted twice).

The matrices are memory-mapped from the (uncompressed) npz, so a folder of 100,000 regions is read
one track and one region at a time, never whole.

Hypothetical contributions are the matrix with its mean over the four bases removed at each
position: for ``--method gradient`` that is what explain stores already; for ISM (mutant minus
reference, 0 at the reference base) it turns the effects into the contribution each base would
make there, the reference base's being minus the mean effect of mutating it (times 3/4).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError, UsageError

#: the explain files a motifs run reads
PROVENANCE = "explain.json"
CONTRIB = "contrib.npz"


@dataclass
class ExplainFolder:
    """One explain output folder.

    Attributes:
        path: the folder; tracks: the tracks it explained; method: ism or gradient.
        model, genome: what its results depend on (the model's SHA-256; the FASTA's identity), or the
            paths when an older explain did not record identities.
    """

    path: Path
    tracks: List[str]
    method: str
    model: Any
    genome: Any


@dataclass
class Examples:
    """One track's TF-MoDISco inputs over every region.

    Attributes:
        one_hot: (N, W, 4) float32; hypothetical: (N, W, 4) float32 (0 at padding and N bases).
        chrom: (N,) chromosome of each example; start: (N,) int64 genome position of column 0 (may lie
            before the region when it is padded); first, last: (N,) int64 the columns holding bases
            of the region (first <= column < last).
        names: (N,) region names.
    """

    one_hot: np.ndarray
    hypothetical: np.ndarray
    chrom: np.ndarray
    start: np.ndarray
    first: np.ndarray
    last: np.ndarray
    names: np.ndarray

    def genome_span(self, example: int, a: int, b: int) -> Tuple[str, int, int]:
        """Columns ``a:b`` of an example as (chrom, start, end) on the genome, clipped to its bases."""
        a, b = max(int(a), int(self.first[example])), min(int(b), int(self.last[example]))
        base = int(self.start[example])
        return str(self.chrom[example]), base + a, base + max(a, b)


def open_folder(path: str | Path) -> ExplainFolder:
    """Check that ``path`` is a finished explain folder and read what it was made from.

    Raises:
        UsageError: not a folder, an unfinished or foreign folder (one line naming the fix).
    """
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise UsageError(f"--contrib {path} {what}: give the --out folder of epiformer explain")
    provenance = path / PROVENANCE
    if not provenance.is_file() or not (path / CONTRIB).is_file():
        fix = ("its explain run is unfinished: run the same explain command (or its remaining shards) to finish it"
               if (path / "explain.parts").is_dir() else "give the --out folder of a finished epiformer explain")
        raise UsageError(f"--contrib {path} holds no {PROVENANCE} and {CONTRIB}: {fix}")
    try:
        record = json.loads(provenance.read_text(encoding="utf-8"))
        tracks = [str(t) for t in record["tracks"]]
        method = str(record["options"]["method"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(f"{provenance} cannot be read ({exc}): run the explain command again") from None
    identities = record.get("identities") or {}
    inputs = record.get("inputs") or {}
    model = identities.get("model_sha256") or inputs.get("model")
    genome = (identities.get("fasta") or {}).get("sha256") or inputs.get("fasta")
    return ExplainFolder(path, tracks, method, model, genome)


def check_compatible(folders: Sequence[ExplainFolder]) -> None:
    """Refuse folders explained with different models or genomes (their patterns would mix)."""
    first = folders[0]
    for other in folders[1:]:
        for what, a, b in (("model", first.model, other.model), ("genome (FASTA)", first.genome, other.genome)):
            if a != b:
                raise UsageError(f"--contrib {other.path} was explained with another {what} than {first.path}: "
                                 f"give explain folders of one model and one genome (run motifs once per model)")


def check_tracks(folders: Sequence[ExplainFolder], wanted: Optional[Sequence[str]]) -> List[str]:
    """The tracks to analyse: ``wanted`` (``--tracks``), else those every folder explained."""
    common = [t for t in folders[0].tracks if all(t in f.tracks for f in folders[1:])]
    if not wanted:
        if not common:
            raise UsageError("the --contrib folders explained no track in common: explain the same --tracks "
                             "in each")
        return common
    for track in wanted:
        lacking = [f for f in folders if track not in f.tracks]
        if lacking:
            raise UsageError(f"--tracks {track!r} is not in the contributions of {lacking[0].path} "
                             f"(it has {', '.join(lacking[0].tracks)}): choose among them, or explain that track")
    return list(wanted)


def _member(npz: zipfile.ZipFile, path: Path, name: str) -> np.ndarray:
    """A stored (uncompressed) npz member as a read-only memory map, or read when compressed."""
    info = npz.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        with npz.open(info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)
        if local[:4] != b"PK\x03\x04":
            raise InputFileError(f"{path} is damaged (a bad zip member header): run the explain command again")
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        raw.seek(start)
        version = np.lib.format.read_magic(raw)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(raw) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(raw))
        offset = raw.tell()
    if dtype.hasobject:
        raise InputFileError(f"{path} holds objects, not numbers: it is not an explain output")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


class ContribFile:
    """A ``contrib.npz`` opened for reading by region and track (see :mod:`~epiformer_cli.explain.outputs`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with zipfile.ZipFile(path) as npz:
                small = {k: np.lib.format.read_array(npz.open(k + ".npy"), allow_pickle=False)
                         for k in ("tracks", "offsets", "chrom", "start", "end", "allele", "region_name")}
                self.codes = _member(npz, path, "codes")
                self.matrix = _member(npz, path, "matrix")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise InputFileError(f"{path} cannot be read as explain contributions ({exc}): run the explain "
                                 f"command again") from None
        self.tracks = [str(t) for t in small["tracks"]]
        self.offsets = small["offsets"].astype(np.int64)
        self.chrom = small["chrom"].astype(str)
        self.start = small["start"].astype(np.int64)
        self.end = small["end"].astype(np.int64)
        self.allele = small["allele"].astype(str)
        self.names = small["region_name"].astype(str)

    def reference_rows(self) -> List[int]:
        """Rows of reference sequences: BED regions (allele ``.``) and variants' ``ref`` rows (their
        ``alt`` rows would count the same site twice)."""
        return [i for i, allele in enumerate(self.allele) if allele in (".", "ref")]


def load_examples(folders: Sequence[ExplainFolder], track: str, window: int) -> Examples:
    """TF-MoDISco's inputs for one track: the central ``window`` bp of every distinct region of the
    folders (in folder order, then row order).

    Raises:
        UsageError: no region at all.
    """
    files = [ContribFile(f.path / CONTRIB) for f in folders]
    chosen: List[Tuple[ContribFile, int]] = []
    seen = set()
    for contrib in files:
        for i in contrib.reference_rows():
            key = (contrib.chrom[i], int(contrib.start[i]), int(contrib.end[i]))
            if key not in seen:
                seen.add(key)
                chosen.append((contrib, i))
    n = len(chosen)
    if n == 0:
        raise UsageError("the --contrib folders hold no explained region")
    one_hot = np.zeros((n, window, 4), dtype=np.float32)
    hypothetical = np.zeros((n, window, 4), dtype=np.float32)
    chrom = np.empty(n, dtype=object)
    start = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    names = np.empty(n, dtype=object)
    for k, (contrib, i) in enumerate(chosen):
        t = contrib.tracks.index(track)
        a, b = int(contrib.offsets[i]), int(contrib.offsets[i + 1])
        length = b - a
        # the window's bases: the region's central `window` bp, or all of it, centred in the window
        lo = max(0, (length - window) // 2)
        hi = min(length, lo + window)
        pad = (window - (hi - lo)) // 2
        codes = np.asarray(contrib.codes[a + lo:a + hi])
        matrix = np.asarray(contrib.matrix[t, :, a + lo:a + hi], dtype=np.float64).T  # (bases, 4)
        with np.errstate(invalid="ignore"):
            centred = matrix - matrix.mean(axis=1, keepdims=True)
        known = codes < 4
        centred[~known] = 0.0
        centred[~np.isfinite(centred)] = 0.0
        columns = pad + np.flatnonzero(known)
        one_hot[k, columns, codes[known]] = 1.0
        hypothetical[k, pad:pad + hi - lo] = centred
        chrom[k] = contrib.chrom[i]
        start[k] = int(contrib.start[i]) + lo - pad
        first[k], last[k] = pad, pad + hi - lo
        names[k] = contrib.names[i]
    return Examples(one_hot, hypothetical, chrom, start, first, last, names)


def describe(folders: Sequence[ExplainFolder]) -> Dict[str, Any]:
    """What the run read, for its record: each folder, its method and tracks."""
    return {"folders": [str(f.path) for f in folders], "methods": sorted({f.method for f in folders}),
            "model": folders[0].model, "genome": folders[0].genome}
