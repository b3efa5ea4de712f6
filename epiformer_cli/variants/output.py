"""Output formats of variant scoring: tidy TSV (one row per allele x track) and annotated VCF.

Both are written chunk by chunk, in input order. Missing values are ``NA`` in the TSV and ``.`` in
the VCF. Positions are printed as the VCF has them (1-based POS). With a null
(:mod:`.calibration`), the calibrated columns follow the effects: ``calibrated`` maps each allele
(record, allele) to its (tracks, len(CALIBRATED)) values. With a motif database (``--motif-db``),
the :data:`MOTIF_COLUMNS` come last: ``motifs`` maps each allele to its strongest overlapping motif
instance (:class:`~epiformer_cli.motifs.scan.MotifHit`) or None; in the VCF, as the
:data:`MOTIF_INFO` fields, the label percent-encoded (:func:`info_text`).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.io.vcf import Record
from epiformer_cli.variants.calibration import CALIBRATED
from epiformer_cli.variants.effects import EFFECTS
from epiformer_cli.variants.scoring import FLAGS, STATUSES

FORMATS = ("tsv", "vcf")
TSV_COLUMNS = ("chrom", "pos", "id", "ref", "alt", "track", "status", "flags") + EFFECTS
#: the strongest motif instance an allele overlaps (``--motif-db``): its label (``ID (NAME)``), its
#: strand, and its log2-odds score in the reference and in the alternative sequence.
MOTIF_COLUMNS = ("motif", "motif_strand", "motif_ref_score", "motif_alt_score")


def _num(value: float, missing: str) -> str:
    return missing if not np.isfinite(value) else f"{value:.6g}"


def tsv_header(calibrated: bool = False, motifs: bool = False) -> str:
    return "\t".join(TSV_COLUMNS + (CALIBRATED if calibrated else ()) + (MOTIF_COLUMNS if motifs else ())) + "\n"


def _motif_cells(hit, missing_text: str, missing_number: str, text=lambda label: label) -> List[str]:
    """The motif columns of one allele: label, strand, ref and alt scores (or the missing values)."""
    if hit is None:
        return [missing_text, missing_text, missing_number, missing_number]
    return [text(hit.label), hit.strand, _num(hit.ref_score, missing_number), _num(hit.alt_score, missing_number)]


def tsv_rows(records: Sequence[Record], tasks: Dict[Tuple[int, int], object], tracks: Sequence[str],
             calibrated: Optional[Dict[Tuple[int, int], np.ndarray]] = None,
             motifs: Optional[Dict[Tuple[int, int], object]] = None) -> str:
    """TSV text for ``records`` (their alleles' tasks keyed by (record, allele)); with ``motifs``
    the motif columns (``.`` and ``NA`` for an allele without an instance, or not scored)."""
    out: List[str] = []
    na = "\t".join(["NA"] * len(EFFECTS))
    na_cal = "\t" + "\t".join(["NA"] * len(CALIBRATED))
    for record in records:
        for allele in record.alleles:
            task = tasks[(allele.record, allele.allele)]
            flags = ",".join(task.flags) if task.flags else "."
            stem = f"{allele.chrom}\t{allele.pos}\t{allele.id}\t{allele.ref}\t{allele.alt}\t"
            cal = None if calibrated is None else calibrated.get((allele.record, allele.allele))
            motif = "" if motifs is None else "\t" + "\t".join(
                _motif_cells(motifs.get((allele.record, allele.allele)), ".", "NA", _tsv_text))
            for t, track in enumerate(tracks):
                values = na if task.result is None else "\t".join(_num(v, "NA") for v in task.result[t])
                if calibrated is not None:
                    values += na_cal if cal is None else "\t" + "\t".join(_num(v, "NA") for v in cal[t])
                out.append(f"{stem}{track}\t{task.status}\t{flags}\t{values}{motif}\n")
    return "".join(out)


def _tsv_text(label: str) -> str:
    """A name from a motif file as one TSV cell (MEME names hold no tabs, but a cell must not)."""
    return " ".join(label.split()) or "."


#: the characters VCF 4.3 (section 1.2, "percent-encoding") gives a meaning in INFO values, with
#: whitespace, which VCF 4.2 does not allow there: written as %XX.
_INFO_SPECIAL = {c: f"%{ord(c):02X}" for c in "%;=, \t\r\n"}


def info_text(value: str) -> str:
    """``value`` as one INFO value: ``%``, ``;``, ``=``, ``,`` and whitespace percent-encoded
    (``microglia_pos_0 (SPI1)`` -> ``microglia_pos_0%20(SPI1)``; ``urllib.parse.unquote`` reads
    it back); ``.`` when empty."""
    return "".join(_INFO_SPECIAL.get(c, c) for c in value) or "."


def info_keys(tracks: Sequence[str]) -> Dict[str, str]:
    """Track name -> the INFO-safe key suffix (``[A-Za-z0-9_.]``; made unique)."""
    keys: Dict[str, str] = {}
    used = set()
    for track in tracks:
        key = re.sub(r"[^0-9A-Za-z_.]", "_", track) or "track"
        base, n = key, 2
        while key in used:
            key, n = f"{base}_{n}", n + 1
        used.add(key)
        keys[track] = key
    return keys


#: what each calibrated INFO field says.
_CALIBRATED_TEXT = {
    "diff_p": "two-sided empirical p-value of diff against the genome-wide null",
    "log2fc_p": "two-sided empirical p-value of log2fc against the genome-wide null",
    "max_abs_p": "one-sided empirical p-value of max_abs against the genome-wide null",
    "ref_quantile": "fraction of the null's reference sums at or below ref_sum",
    "alt_quantile": "fraction of the null's reference sums at or below alt_sum",
}


#: the INFO fields of ``--motif-db`` (id, type, description), one value per ALT like the rest.
MOTIF_INFO = (
    ("EPI_MOTIF", "String", "epiformer strongest motif instance overlapping the variant per ALT (ID (NAME) from "
                            "--motif-db; percent-encoded: %20 is a space)"),
    ("EPI_MOTIF_STRAND", "String", "epiformer strand of EPI_MOTIF per ALT (+ the motif as given, - its reverse "
                                   "complement)"),
    ("EPI_MOTIF_REF", "Float", "epiformer log2-odds score of EPI_MOTIF in the reference sequence per ALT"),
    ("EPI_MOTIF_ALT", "Float", "epiformer log2-odds score of EPI_MOTIF in the alternative sequence per ALT"),
)


def vcf_info_definitions(tracks: Sequence[str], calibrated: bool = False,
                         motifs: bool = False) -> List[Tuple[str, str, str, str]]:
    """INFO header definitions (id, number, type, description) written by ``--format vcf``."""
    defs = [
        # no_alt is not listed: a record without ALT gets no EPI_ fields (Number=A has no value to hold)
        ("EPI_STATUS", "A", "String", "epiformer score-variants status per ALT ("
                                      + ", ".join(s for s in STATUSES if s != "no_alt") + ")"),
        ("EPI_FLAGS", "A", "String", "epiformer flags per ALT, joined by | (" + ", ".join(FLAGS) + ")"),
    ]
    for track, key in info_keys(tracks).items():
        for effect in EFFECTS:
            defs.append((f"EPI_{effect.upper()}_{key}", "A", "Float",
                         f"epiformer {effect} of track {track} per ALT"))
        for column in CALIBRATED if calibrated else ():
            defs.append((f"EPI_{column.upper()}_{key}", "A", "Float",
                         f"epiformer {column} of track {track} per ALT: {_CALIBRATED_TEXT[column]}"))
    if motifs:
        defs += [(ident, "A", kind, description) for ident, kind, description in MOTIF_INFO]
    return defs


def vcf_rows(records: Sequence[Record], tasks: Dict[Tuple[int, int], object], tracks: Sequence[str],
             calibrated: Optional[Dict[Tuple[int, int], np.ndarray]] = None,
             motifs: Optional[Dict[Tuple[int, int], object]] = None) -> str:
    """The input records with per-ALT INFO fields added (with ``motifs``, the :data:`MOTIF_INFO`
    fields last)."""
    keys = info_keys(tracks)
    out: List[str] = []
    for record in records:
        alleles = [a for a in record.alleles if a.allele > 0]
        line = record.line.rstrip("\n")
        if not alleles:
            out.append(line + "\n")
            continue
        ts = [tasks[(a.record, a.allele)] for a in alleles]
        fields = [
            "EPI_STATUS=" + ",".join(t.status for t in ts),
            "EPI_FLAGS=" + ",".join("|".join(t.flags) if t.flags else "." for t in ts),
        ]
        for ti, track in enumerate(tracks):
            for ei, effect in enumerate(EFFECTS):
                vals = ",".join("." if t.result is None else _num(t.result[ti, ei], ".") for t in ts)
                fields.append(f"EPI_{effect.upper()}_{keys[track]}={vals}")
            if calibrated is not None:
                cals = [calibrated.get((a.record, a.allele)) for a in alleles]
                for ci, column in enumerate(CALIBRATED):
                    vals = ",".join("." if c is None else _num(c[ti, ci], ".") for c in cals)
                    fields.append(f"EPI_{column.upper()}_{keys[track]}={vals}")
        if motifs is not None:
            cells = [_motif_cells(motifs.get((a.record, a.allele)), ".", ".", info_text) for a in alleles]
            for k, (ident, _, _) in enumerate(MOTIF_INFO):
                fields.append(f"{ident}=" + ",".join(c[k] for c in cells))
        cols = line.split("\t")
        extra = ";".join(fields)
        cols[7] = extra if cols[7] in (".", "") else cols[7] + ";" + extra
        out.append("\t".join(cols) + "\n")
    return "".join(out)
