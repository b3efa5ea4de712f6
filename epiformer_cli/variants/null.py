"""The genome-wide null of variant scoring: random SNVs, their key, and the null file.

A null is ``size`` SNVs drawn uniformly (with replacement) from the FASTA's non-N positions on its
primary chromosomes, outside an optional blacklist, each with an ALT drawn uniformly from the three
other bases, all from one seed. It is scored exactly as the input (same model, conservation,
window mode, score bins, strand averaging) and kept as a **null file**: the score-variants TSV of
those SNVs under a first line ``##epiformer_null=<key as JSON>``. The key says what the scores
depend on, so a null file is reused by any run whose key matches (a second VCF costs nothing
extra) and refused, naming what differs, by any other.

Coordinates are 0-based internally; the null file carries VCF POS (1-based), like every TSV of
score-variants.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.io.vcf import Allele, Record

#: first-line prefix of a null file.
NULL_TAG = "##epiformer_null="
NULL_KIND = "epiformer-null"
NULL_FORMAT = 1
#: null SNVs per part: the resume, share and claim unit of a null's scoring.
NULL_CHUNK = 500
LETTERS = "ACGT"
#: names of chromosomes a null does not draw from (unplaced, alternative, patch, decoy, viral,
#: mitochondrial sequence), unless the FASTA has nothing else.
_NOT_PRIMARY = re.compile(r"(_|^chrUn|^Un|^chrM$|^MT?$|^chrEBV$|^EBV$|^HLA-)", re.IGNORECASE)


def null_chromosomes(chrom_sizes: Mapping[str, int]) -> List[str]:
    """The chromosomes a null draws from: the FASTA's primary-looking ones (``chr1``, ``2``,
    ``chrX``...; not ``chrUn_*``, ``*_alt``, ``*_random``, ``chrM``, ``chrEBV``), or all of them when
    no name looks primary."""
    primary = [name for name in chrom_sizes if not _NOT_PRIMARY.search(name)]
    return primary or list(chrom_sizes)


def draw_null_snvs(genome, size: int, seed: int, blacklist=None, per_window: int = 1,
                   window_bp: Optional[int] = None) -> List[Record]:
    """``size`` random SNVs as VCF-like records, sorted by (FASTA order, position).

    Positions are uniform over the non-N, non-blacklisted bases of :func:`null_chromosomes`
    (rejection sampling: a drawn N or blacklisted base is drawn again, so no base is favoured),
    ALTs uniform over the three other bases. The same genome, size and seed give the same SNVs.

    With ``per_window > 1`` the SNVs come in clusters: each first SNV is drawn as above, and
    ``per_window - 1`` more uniformly from the usable bases of its scoring window (the grid span
    ``[w * window_bp, (w + 1) * window_bp)`` holding it), so the cluster shares one reference pass.
    Every SNV is still uniform over the usable genome (a window is reached in proportion to its
    usable bases, then a base is uniform within it); SNVs of one window are not independent, which
    is the price of a null that costs a fraction as much (benchmarks/README.md measures both).

    Args:
        genome: an :class:`~epiformer_cli.io.genome.Genome`.
        blacklist: an :class:`~epiformer_cli.io.bed.IntervalIndex` of excluded regions, or None.
        per_window: SNVs per cluster (1: independent SNVs, the draw of earlier versions bit for bit).
        window_bp: the grid's output span in bp (needed when ``per_window > 1``).

    Raises:
        InputFileError: the genome has too few usable bases to draw from.
    """
    chroms = null_chromosomes(genome.chrom_sizes)
    sizes = np.array([genome.chrom_sizes[c] for c in chroms], dtype=np.int64)
    ends = np.cumsum(sizes)
    per_window = max(1, int(per_window))
    if per_window > 1 and not window_bp:
        raise ValueError("a clustered null needs the grid's window_bp")
    stream = [int(seed), 0x6E756C6C] + ([per_window] if per_window > 1 else [])
    rng = np.random.default_rng(stream)  # "null": not the training stream of the same seed
    anchors = -(-size // per_window)
    found: List[tuple] = []
    tries = 0

    def usable(chrom: str, pos: int, code: int) -> bool:
        return code <= 3 and not (blacklist is not None and blacklist.overlaps(chrom, pos, pos + 1))

    while len(found) < size:
        batch = max(64, 2 * (anchors - -(-len(found) // per_window)))
        tries += batch
        if tries > 200 * anchors + 10_000:
            raise InputFileError(f"{genome.path}: fewer than 1 in 200 positions is an A, C, G or T outside the null "
                                 "blacklist: cannot draw a null; check the FASTA and --null-blacklist, or use --null-size 0")
        flat = rng.integers(0, int(ends[-1]), size=batch)
        shifts = rng.integers(1, 4, size=batch)
        which = np.searchsorted(ends, flat, side="right")
        for g, k, shift in zip(flat, which, shifts):
            chrom = chroms[int(k)]
            pos = int(g - (ends[k - 1] if k else 0))
            ref = int(genome.fetch(chrom, pos, pos + 1)[0])
            if not usable(chrom, pos, ref):
                continue
            found.append((int(k), pos, ref, (ref + int(shift)) % 4))
            if per_window > 1:
                found.extend(_siblings(genome, chrom, int(k), pos, min(per_window - 1, size - len(found)),
                                       int(window_bp), rng, usable))
            if len(found) >= size:
                break
    found.sort()
    records = []
    for index, (k, pos, ref, alt) in enumerate(found):
        chrom, r, a, ident = chroms[k], LETTERS[ref], LETTERS[alt], f"null_{index + 1}"
        line = f"{chrom}\t{pos + 1}\t{ident}\t{r}\t{a}\t.\t.\t.\n"
        records.append(Record(index, line, [Allele(index, 1, chrom, pos + 1, pos, pos + 1, ident, r, a, "snv")]))
    return records


def _siblings(genome, chrom: str, k: int, pos: int, count: int, window_bp: int, rng, usable) -> List[tuple]:
    """``count`` SNVs uniform over the usable bases of the grid window holding ``pos`` (which has
    at least one: ``pos`` itself), as (chromosome index, position, ref code, alt code)."""
    if count <= 0:
        return []
    first = (pos // window_bp) * window_bp
    last = min(first + window_bp, genome.chrom_sizes[chrom])
    codes = np.asarray(genome.fetch(chrom, first, last))
    out: List[tuple] = []
    while len(out) < count:
        offsets = rng.integers(0, last - first, size=2 * (count - len(out)))
        shifts = rng.integers(1, 4, size=len(offsets))
        for offset, shift in zip(offsets, shifts):
            ref = int(codes[offset])
            if usable(chrom, first + int(offset), ref):
                out.append((k, first + int(offset), ref, (ref + int(shift)) % 4))
                if len(out) == count:
                    break
    return out


#: memory of a null, per SNV and per row (an SNV in one track), in bytes: what tracemalloc measured
#: (Python 3.11, numpy 2.4, pandas 3.1; tiny preset, 3 tracks, nulls of 250 and 500 SNVs: 780 per
#: drawn SNV, 1,750 per row kept in memory, 110 per row read back from a file), rounded up.
NULL_SNV_BYTES = 800
NULL_ROW_BYTES_IN_MEMORY = 1_800
NULL_ROW_BYTES_FROM_FILE = 150
#: a null file's checksum is verified in blocks of 4 MiB (:func:`verify_null`).
NULL_FILE_BYTES = 4 << 20


def null_memory_bytes(size: int, n_tracks: int, in_memory: bool = False) -> int:
    """Bytes the null of ``size`` SNVs over ``n_tracks`` tracks holds at its peak, for the memory
    pre-check of score-variants (:func:`~epiformer_cli.runs.space.require_memory`).

    The model (``size * (snv + n_tracks * row) [+ file]``), by what is alive at the peak, the end
    of scoring (``variants.null_run._score``):

    * every drawn SNV, kept from the draw to the end (:func:`draw_null_snvs`: its tuple while
      drawing, then its :class:`~epiformer_cli.io.vcf.Record`, :class:`~epiformer_cli.io.vcf.Allele`
      and VCF line): :data:`NULL_SNV_BYTES`;
    * one row per SNV and track: kept in memory (no null file: standard output without
      ``--null``), the rendered TSV text, its lines and a dict of strings per row
      (:func:`table_from_text`), :data:`NULL_ROW_BYTES_IN_MEMORY`; read back from the null file,
      the pandas frame, its ``ok`` rows and the per-track float64 arrays (:func:`read_null`),
      :data:`NULL_ROW_BYTES_FROM_FILE`, plus the :data:`NULL_FILE_BYTES` block of the checksum.

    The calibration's sorted copies (4 float64 a row) come after the drawn SNVs are freed, below
    this peak; the scoring's windows and model work are per chunk of :data:`NULL_CHUNK` SNVs, whatever
    ``size`` (the inference estimate counts them). tests/test_bounds.py holds these numbers
    within a factor of 2 of a tracemalloc peak.

    Args:
        size: SNVs in the null (``--null-size``).
        n_tracks: tracks scored.
        in_memory: True when no null file is written or read (the rows stay in memory).
    """
    size, n_tracks = max(0, int(size)), max(1, int(n_tracks))
    if not size:
        return 0
    if in_memory:
        return size * (NULL_SNV_BYTES + n_tracks * NULL_ROW_BYTES_IN_MEMORY)
    return size * (NULL_SNV_BYTES + n_tracks * NULL_ROW_BYTES_FROM_FILE) + NULL_FILE_BYTES


def null_key(identities: Mapping[str, Any], scoring: Mapping[str, Any], size: int, seed: int,
             blacklist: Optional[Mapping[str, Any]], per_window: int = 1) -> Dict[str, Any]:
    """What a null's scores depend on (tracks apart: a null of more tracks serves fewer).

    Args:
        identities: the model's SHA-256 and tracks, the FASTA's and conservation's identities
            (:meth:`~epiformer_cli.inference.inputs.ModelInputs.identities`).
        scoring: the scoring options that change values (window mode, score bins, strand
            averaging, precision, conservation policy).
        blacklist: the null blacklist's identity, or None.
        per_window: SNVs drawn per window (:func:`draw_null_snvs`); 1 leaves the key as earlier
            versions wrote it, so their null files keep serving.
    """
    key = {"kind": NULL_KIND, "format_version": NULL_FORMAT, "size": int(size), "seed": int(seed),
           "blacklist": dict(blacklist) if blacklist else None, "inputs": dict(identities), "scoring": dict(scoring)}
    if int(per_window) > 1:
        key["per_window"] = int(per_window)
    return key


@dataclass
class NullTable:
    """A scored null, per track: the values calibration compares against.

    Attributes:
        key: the null's key (:func:`null_key`); path: the file it came from (None: in memory).
        tracks: track name -> dict of float64 arrays ``ref_sum``, ``diff``, ``log2fc``, ``max_abs``
            over the null's ``ok`` SNVs, each (n,), as printed (6 significant digits).
    """

    key: Dict[str, Any]
    tracks: Dict[str, Dict[str, np.ndarray]]
    path: Optional[Path] = None

    @property
    def size(self) -> int:
        return int(self.key["size"])

    @property
    def seed(self) -> int:
        return int(self.key["seed"])

    def check_tracks(self, wanted: Sequence[str]) -> None:
        """Refuse a run whose tracks the null does not hold."""
        missing = [t for t in wanted if t not in self.tracks]
        if missing:
            raise UsageError(f"{self.path}: this null holds tracks {', '.join(self.tracks)}, not "
                             f"{', '.join(missing)}: give another --null FILE (a new one is scored for these tracks)")


NULL_COLUMNS = ("ref_sum", "diff", "log2fc", "max_abs")


def table_from_rows(key: Mapping[str, Any], rows: Sequence[Mapping[str, str]], path: Optional[Path] = None) -> NullTable:
    """A :class:`NullTable` from TSV rows (dicts of strings, as read or as rendered)."""
    by_track: Dict[str, Dict[str, list]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        values = by_track.setdefault(row["track"], {c: [] for c in NULL_COLUMNS})
        for c in NULL_COLUMNS:
            values[c].append(float(row[c]) if row[c] not in ("NA", ".") else np.nan)
    tracks = {t: {c: np.asarray(v, dtype=np.float64) for c, v in cols.items()} for t, cols in by_track.items()}
    return NullTable(dict(key), tracks, path)


def table_from_text(key: Mapping[str, Any], text: str, path: Optional[Path] = None) -> NullTable:
    """A :class:`NullTable` from rendered score-variants TSV text (header first)."""
    lines = text.splitlines()
    cols = lines[0].split("\t")
    return table_from_rows(key, [dict(zip(cols, line.split("\t"))) for line in lines[1:] if line], path)


def _open_text(path: Path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return io.TextIOWrapper(gzip.open(path), encoding="utf-8") if magic == b"\x1f\x8b" else open(path, encoding="utf-8")


def read_null_key(path: Path) -> Dict[str, Any]:
    """The key on a null file's first line.

    Raises:
        UsageError: the file is not a null file (naming it and the fix).
    """
    try:
        with _open_text(path) as handle:
            first = handle.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it as an epiformer null file ({exc}): give another --null FILE, "
                         "or --force to replace it") from None
    if not first.startswith(NULL_TAG):
        raise UsageError(f"{path} is not an epiformer null file (no {NULL_TAG} first line): give another --null "
                         "FILE, or --force to replace it")
    try:
        key = json.loads(first[len(NULL_TAG):])
    except ValueError:
        raise UsageError(f"{path}: its {NULL_TAG} line is not JSON: give another --null FILE, or --force to "
                         "replace it") from None
    return key


def verify_null(path: Path) -> None:
    """Check a null file against the checksum line that ends it (over the text before it).

    Raises:
        CorruptPiece: the line is missing (a truncated file) or the text changed.
    """
    from epiformer_cli.runs.checksums import TRAILER_SIZE, CorruptPiece, Crc32

    body, tail = Crc32(), b""
    try:
        with _open_text(path) as text:
            raw = text.buffer
            while True:
                block = raw.read(1 << 22)
                if not block:
                    break
                data = tail + block
                body.update(data[:-TRAILER_SIZE])
                tail = data[-TRAILER_SIZE:]
    except (OSError, EOFError) as exc:
        raise CorruptPiece(f"{path} is damaged ({exc})") from None
    if tail != body.trailer():
        raise CorruptPiece(f"{path} is damaged or incomplete (its checksum line is missing or differs)")


def read_null(path: Path) -> NullTable:
    """A null file's key and values, after checking its checksum (:func:`verify_null`)."""
    import pandas as pd

    key = read_null_key(path)
    verify_null(path)
    try:
        frame = pd.read_csv(path, sep="\t", skiprows=1, usecols=["track", "status", *NULL_COLUMNS],
                            dtype={"track": "category", "status": "category", **{c: np.float64 for c in NULL_COLUMNS}},
                            na_values=["NA", ""], keep_default_na=False)  # "": the checksum line's empty fields
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path}: cannot read the null's rows ({exc}): delete it, or --force to score it "
                         "again") from None
    ok = frame[frame["status"] == "ok"]
    tracks = {str(track): {c: group[c].to_numpy(np.float64) for c in NULL_COLUMNS}
              for track, group in ok.groupby("track", observed=True, sort=False)}
    return NullTable(dict(key), tracks, Path(path))


def header_line(key: Mapping[str, Any]) -> str:
    """A null file's first line."""
    return NULL_TAG + json.dumps(key, sort_keys=True, separators=(",", ":")) + "\n"
