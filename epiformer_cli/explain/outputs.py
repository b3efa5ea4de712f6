"""The files ``explain`` writes, from one piece per explained region.

A region's piece (``region-NNNNNNN-DIGEST.npz`` in the run folder) holds its reference (and, for a
variant, alternative) :class:`~epiformer_cli.explain.result.Explanation`. Once every region has its
piece, the outputs are assembled from them one piece at a time, so memory does not grow with the
number of regions:

* ``contrib.<track>.bw``: the reference bases' contributions at 1 bp on the FASTA's chromosomes
  (where regions overlap, each base takes the value of the region whose overlap half it is in);
* ``contrib.npz`` (plain arrays, ``np.load(..., allow_pickle=False)``; :func:`load_contributions`
  reads it back per region): one row per explained sequence (a region, or a variant's ref and alt);
  ``matrix`` (tracks, 4, bases) and ``contrib`` (tracks, bases) hold all rows' bases end to end,
  row ``i`` at ``offsets[i]:offsets[i + 1]``;
* ``regions.tsv``: one row per sequence and track.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.data.encoding import decode_sequence
from epiformer_cli.explain.regions import Region
from epiformer_cli.explain.result import Explanation
from epiformer_cli.io.files import atomic_output, atomic_path

log = logging.getLogger(__name__)

_FIELDS = ("codes", "matrix", "contrib", "pred", "total")

#: columns of regions.tsv
TSV_COLUMNS = ("index", "name", "chrom", "start", "end", "variant", "allele", "track", "method", "pred_sum",
               "contrib_sum", "top_pos", "top_base", "top_contrib")


@dataclass
class Piece:
    """A region's explanations as read back from its piece.

    Attributes:
        ref: the reference sequence's explanation; alt: the ALT allele's (variants only), with
            ``alt.pred`` mapped onto the reference window's bins (see :func:`~.windows.realign`).
        out_start: genome coordinate of the window's first output bin.
    """

    ref: Explanation
    alt: Optional[Explanation]
    out_start: int


def write_piece(handle, ref: Explanation, alt: Optional[Explanation], out_start: int) -> None:
    """Save one region's explanations into an open binary file (an .npz without pickles)."""
    arrays = {f"ref_{k}": getattr(ref, k) for k in _FIELDS}
    if alt is not None:
        arrays.update({f"alt_{k}": getattr(alt, k) for k in _FIELDS})
    np.savez(handle, out_start=np.int64(out_start), **arrays)


def _open_piece(path: Path):
    """A piece's arrays (``np.load`` of its bytes), after checking its checksum line.

    Raises:
        CorruptPiece: the piece is damaged (naming it and the fix).
    """
    import io

    from epiformer_cli.runs import CorruptPiece, checked_content

    try:
        body = checked_content(Path(path).read_bytes(), Path(path))
    except CorruptPiece as exc:
        raise CorruptPiece(f"{exc}: run the same explain command again to recompute it") from None
    return np.load(io.BytesIO(body), allow_pickle=False)


def read_piece(path: Path) -> Piece:
    """Load a piece written by :func:`write_piece`."""
    with _open_piece(path) as data:
        ref = Explanation(**{k: data[f"ref_{k}"] for k in _FIELDS})
        alt = Explanation(**{k: data[f"alt_{k}"] for k in _FIELDS}) if "alt_codes" in data else None
        return Piece(ref, alt, int(data["out_start"]))


def _piece_arrays(path: Path, field: str, region: Optional[Region] = None) -> List:
    """One field of a piece's sequences, reading only that field (npz members load on access):
    ``[(allele, array), ...]`` in :func:`sequences` order, or the bare arrays without ``region``."""
    with _open_piece(path) as data:
        arrays = [data[f"ref_{field}"]] + ([data[f"alt_{field}"]] if f"alt_{field}" in data else [])
    if region is None:
        return arrays
    alleles = ["."] if region.variant is None else ["ref", "alt"]
    return list(zip(alleles, arrays))


def sequences(region: Region, piece: Piece) -> Iterator[Tuple[str, Explanation]]:
    """``(allele, explanation)`` rows of a region: ``.`` for a BED region, ``ref`` and ``alt`` for a variant."""
    if region.variant is None:
        yield ".", piece.ref
    else:
        yield "ref", piece.ref
        if piece.alt is not None:
            yield "alt", piece.alt


def _variant_text(region: Region) -> str:
    v = region.variant
    return "." if v is None else f"{region.chrom}:{v.pos}:{v.ref}>{v.alt}"


def _fmt(value: float) -> str:
    return "NA" if not np.isfinite(value) else f"{value:.6g}"


def tsv_rows(region: Region, piece: Piece, tracks: Sequence[str], method: str) -> str:
    """regions.tsv rows of one region: per sequence and track, its predicted sum, the sum of its
    contributions, and its strongest base (largest |contribution|; ``top_pos`` is 0-based, counted
    from ``start`` along the sequence, so for an indel's alt row it is the position in the ALT
    sequence)."""
    lines = []
    for allele, ex in sequences(region, piece):
        for t, track in enumerate(tracks):
            contrib = ex.contrib[t].astype(np.float64)
            finite = np.isfinite(contrib)
            if finite.any():
                i = int(np.nanargmax(np.abs(np.where(finite, contrib, np.nan))))
                top = (str(region.start + i), "ACGTN"[int(ex.codes[i])], _fmt(contrib[i]))
                total = _fmt(float(contrib[finite].sum()))
            else:
                top, total = ("NA", "NA", "NA"), "NA"
            lines.append("\t".join((str(region.index), region.name, region.chrom, str(region.start), str(region.end),
                                    _variant_text(region), allele, track, method, _fmt(float(ex.total[t])), total)
                                   + top))
    return "".join(line + "\n" for line in lines)


# ---- contrib.npz ----------------------------------------------------------------------------------
def _member(name: str) -> zipfile.ZipInfo:
    """A zip member with a fixed date, so the same results give the same bytes (resumed or not)."""
    return zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))


def _write_member(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    zf.writestr(_member(name), buffer.getvalue())


def _stream_member(zf: zipfile.ZipFile, name: str, dtype, shape: Tuple[int, ...], blocks: Iterator[np.ndarray]) -> None:
    """A Fortran-ordered array written block by block along its LAST axis (each block
    ``(..., n)``), so a (tracks, 4, bases) array never has to be in memory at once."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": True, "shape": tuple(shape)}
    with zf.open(_member(name), "w", force_zip64=True) as handle:
        np.lib.format.write_array_header_2_0(handle, header)
        for block in blocks:
            handle.write(np.asarray(block, dtype=dtype).tobytes(order="F"))


def write_npz(path: Path, regions: Sequence[Region], pieces: Mapping[int, Path], tracks: Sequence[str],
              method: str) -> None:
    """Write ``contrib.npz`` atomically from the pieces (each read once per streamed array)."""
    rows: List[Tuple[Region, str, int]] = []  # (region, allele, length)
    sums: List[np.ndarray] = []
    for region in regions:
        totals = _piece_arrays(pieces[region.index], "total")
        for (allele, codes), total in zip(_piece_arrays(pieces[region.index], "codes", region), totals):
            rows.append((region, allele, len(codes)))
            sums.append(total)
    offsets = np.concatenate([[0], np.cumsum([n for _, _, n in rows])]).astype(np.int64)
    total = int(offsets[-1])
    n_tracks = len(tracks)

    def blocks(field: str) -> Iterator[np.ndarray]:
        for region in regions:
            for _, array in _piece_arrays(pieces[region.index], field, region):
                yield array

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        _write_member(zf, "tracks", np.array(list(tracks), dtype=str))
        _write_member(zf, "method", np.array(method))
        _write_member(zf, "offsets", offsets)
        _write_member(zf, "region_index", np.array([r.index for r, _, _ in rows], dtype=np.int64))
        _write_member(zf, "region_name", np.array([r.name for r, _, _ in rows], dtype=str))
        _write_member(zf, "chrom", np.array([r.chrom for r, _, _ in rows], dtype=str))
        _write_member(zf, "start", np.array([r.start for r, _, _ in rows], dtype=np.int64))
        _write_member(zf, "end", np.array([r.end for r, _, _ in rows], dtype=np.int64))
        _write_member(zf, "variant", np.array([_variant_text(r) for r, _, _ in rows], dtype=str))
        _write_member(zf, "allele", np.array([a for _, a, _ in rows], dtype=str))
        _write_member(zf, "pred_sum", np.array(sums, dtype=np.float64).reshape(len(rows), n_tracks))
        _stream_member(zf, "codes", np.uint8, (total,), blocks("codes"))
        _stream_member(zf, "matrix", np.float32, (n_tracks, 4, total), blocks("matrix"))
        _stream_member(zf, "contrib", np.float32, (n_tracks, total), blocks("contrib"))


@dataclass
class Contributions:
    """``contrib.npz`` read back: see :func:`load_contributions`."""

    tracks: List[str]
    method: str
    table: "object"  # pandas.DataFrame: one row per sequence (region_index, name, chrom, start, end, variant, allele)
    offsets: np.ndarray
    codes: np.ndarray
    matrix: np.ndarray
    contrib: np.ndarray

    def sequence(self, i: int) -> str:
        """Row ``i``'s bases as text."""
        return decode_sequence(self.codes[self.offsets[i]:self.offsets[i + 1]])

    def row(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Row ``i``'s (tracks, 4, L) matrix and (tracks, L) contributions."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.matrix[:, :, a:b], self.contrib[:, a:b]


def load_contributions(path: str | Path) -> Contributions:
    """Read a ``contrib.npz`` (no pickles) into arrays and a table."""
    import pandas as pd

    with np.load(path, allow_pickle=False) as data:
        table = pd.DataFrame({"region_index": data["region_index"], "name": data["region_name"],
                              "chrom": data["chrom"], "start": data["start"], "end": data["end"],
                              "variant": data["variant"], "allele": data["allele"]})
        sums = data["pred_sum"]
        tracks = [str(t) for t in data["tracks"]]
        for t, track in enumerate(tracks):
            table[f"pred_sum.{track}"] = sums[:, t]
        return Contributions(tracks, str(data["method"]), table, data["offsets"], data["codes"], data["matrix"],
                             data["contrib"])


# ---- contrib.<track>.bw ---------------------------------------------------------------------------
def kept_spans(regions: Sequence[Region], chrom_order: Mapping[str, int]) -> List[Tuple[Region, int, int]]:
    """Regions in genome order, each with the part of it its bigWig values come from: where two
    regions overlap, the overlap is split in the middle (a base takes the value of the region it
    lies nearer the middle of)."""
    ordered = sorted(regions, key=lambda r: (chrom_order[r.chrom], r.start, r.end, r.index))
    spans: List[List[object]] = [[r, r.start, r.end] for r in ordered]
    for prev, cur in zip(spans, spans[1:]):
        p, c = prev[0], cur[0]
        if p.chrom == c.chrom and c.start < prev[2]:
            cut = min(max((c.start + p.end + 1) // 2, c.start), c.end)
            prev[2] = min(prev[2], cut)
            cur[1] = max(cut, prev[2])
    out, last = [], {}
    for r, a, b in spans:
        a = max(a, last.get(r.chrom, 0))
        if b > a:
            out.append((r, a, b))
            last[r.chrom] = b
    return out


def write_bigwigs(paths: Mapping[str, Path], regions: Sequence[Region], pieces: Mapping[int, Path],
                  chrom_sizes: Mapping[str, int]) -> None:
    """One contribution bigWig per track (``paths``: track -> file, in the pieces' track order).

    Tracks are written in groups whose bigWigs fit the memory budget together
    (:func:`~epiformer_cli.io.bigwig.track_groups`), the pieces read once per group, and all the
    files appear together at the end, or none does (:class:`~epiformer_cli.io.bigwig.BigWigBatch`).
    """
    from contextlib import ExitStack

    from epiformer_cli.io.bigwig import BigWigBatch, track_groups

    order = {c: i for i, c in enumerate(chrom_sizes)}
    spans = kept_spans(regions, order)
    bases = sum(b - a for _, a, b in spans)
    column = {track: t for t, track in enumerate(paths)}
    # one entry a base; N bases have no value, so at least no entry is certain (for the space check)
    groups = track_groups(list(paths), next(iter(paths.values())), chrom_sizes, bases, bases, 0)
    with BigWigBatch() as batch:
        for group in groups:
            with ExitStack() as stack:
                writers = [(stack.enter_context(batch.writer(paths[track], chrom_sizes)), column[track])
                           for track in group]
                for region, a, b in spans:
                    piece = read_piece(pieces[region.index])
                    values = piece.ref.contrib[:, a - region.start:b - region.start]
                    for writer, t in writers:
                        writer.add_bins(region.chrom, a, values[t], span=1)


def write_tsv(path: Path, regions: Sequence[Region], pieces: Mapping[int, Path], tracks: Sequence[str],
              method: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write("\t".join(TSV_COLUMNS) + "\n")
        for region in regions:
            handle.write(tsv_rows(region, read_piece(pieces[region.index]), tracks, method))


def track_file_names(tracks: Sequence[str]) -> Dict[str, str]:
    """``contrib.<track>.bw`` per track (:func:`epiformer_cli.names.file_part`: characters a file
    name cannot hold become ``_``; a model's names are checked not to collide when it loads)."""
    from epiformer_cli.names import file_part

    return {t: f"contrib.{file_part(t)}.bw" for t in tracks}
