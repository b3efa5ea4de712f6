"""VCF/BCF reading: the ONE place VCF's 1-based POS becomes epiformer's 0-based, half-open interval.

Reads plain VCF, bgzipped VCF (a tabix index beside it is opened by htslib when present; reading
is sequential either way), plain-gzip VCF (read as a stream, as htslib reads standard input), BCF,
or ``-`` for standard input, sorted or not, through ``pysam.VariantFile``. Records are read once,
from the start: nothing here seeks or queries a region, so no input needs an index. Records stream
in file order; multi-allelic records are split into one :class:`Allele` per ALT, each classified
(``snv``, ``substitution``, ``indel``, ``symbolic``, ``invalid``, ``none``) so the scorer can give
every one of them a status. Sample columns (FORMAT, genotypes) are never used for scoring; a VCF
output keeps them as they are.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from epiformer_cli.errors import InputFileError
from epiformer_cli.io import hts

log = logging.getLogger(__name__)

_BASES = re.compile(r"^[ACGTN]+$")


@dataclass
class Allele:
    """One ALT allele of one VCF record, in epiformer's coordinates.

    Attributes:
        record: 0-based index of the record in the input (input order).
        allele: 1-based index of the ALT in the record (0 when the record has no ALT).
        chrom: chromosome as the VCF names it.
        pos: VCF POS (1-based), kept for output.
        start, end: the REF allele's interval, 0-based half-open: ``start = POS - 1``,
            ``end = start + len(REF)``.
        id: the ID column (``.`` when missing).
        ref, alt: upper-cased alleles (``alt`` is ``.`` when the record has none).
        kind: ``snv`` (1 bp to 1 bp), ``substitution`` (equal lengths > 1), ``indel``,
            ``symbolic`` (``<DEL>``, ``*``, breakends), ``invalid`` (letters other than ACGTN),
            ``none`` (no ALT).
        flags: notes that do not stop scoring (e.g. ``lowercase``).
    """

    record: int
    allele: int
    chrom: str
    pos: int
    start: int
    end: int
    id: str
    ref: str
    alt: str
    kind: str
    flags: List[str] = field(default_factory=list)


@dataclass
class Record:
    """One VCF record: its text line (as htslib writes it back) and its alleles."""

    index: int
    line: str
    alleles: List[Allele]


def classify(ref: str, alt: str) -> str:
    """The kind of a REF/ALT pair (both upper-case); see :class:`Allele`."""
    if alt in (".", ""):
        return "none"
    if alt.startswith("<") or alt == "*" or "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return "symbolic"
    if not _BASES.match(ref) or not _BASES.match(alt):
        return "invalid"
    if len(ref) == len(alt):
        return "snv" if len(ref) == 1 else "substitution"
    return "indel"


def _stdin_source() -> Tuple[str, Optional[str]]:
    """What pysam should open for ``-``: the real fd 0, or a spooled copy when stdin is not a file
    descriptor (an in-process test runner). Returns (path, temporary file to delete)."""
    stream = sys.stdin
    try:
        if stream is not None and stream.fileno() == 0:
            return "-", None
    except (AttributeError, OSError, ValueError):
        pass
    fd, tmp = tempfile.mkstemp(prefix="epiformer-stdin-", suffix=".vcf")
    with os.fdopen(fd, "wb") as handle:
        source = getattr(stream, "buffer", stream)
        data = source.read() if source is not None else b""
        handle.write(data.encode() if isinstance(data, str) else data)
    return tmp, tmp


def _warn_if_index_is_older(vcf: Path) -> None:
    """Say once what htslib (silenced) would print: an index older than its VCF means the VCF
    changed after it was indexed (or the two were copied in the wrong order). epiformer reads the
    whole file and never the index, but other tools that use the index may read the wrong records."""
    data_time = int(vcf.stat().st_mtime)  # whole seconds, as htslib compares them
    indexes = ((Path(f"{vcf}.tbi"), f"tabix -f -p vcf {vcf}"), (Path(f"{vcf}.csi"), f"bcftools index -f {vcf}"))
    for index, fix in indexes:
        try:
            older = int(index.stat().st_mtime) < data_time
        except OSError:  # no such index
            continue
        if older:
            log.warning("%s: its index %s is older than the file (was the VCF changed after it was indexed?): "
                        "epiformer does not use the index, but other tools do: re-index it with: %s",
                        vcf, index.name, fix)
            return


def _cut_short(path: str, probe: int = 1 << 22) -> bool:
    """Whether the first ``probe`` bytes of text of a gzip file fail to decompress (damaged or cut
    short: htslib then only says the header is not valid). Error path only."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as handle:
            handle.read(probe)
    except (EOFError, OSError, zlib.error):
        return True
    return False


class VcfReader:
    """A VCF/BCF opened for streaming (``path`` may be ``-`` for standard input).

    Attributes:
        label: how to name the input in messages.
        header: the pysam header (use :meth:`header_text` for output).
        contigs: chromosome names declared in the header (possibly none).
    """

    def __init__(self, path: str | os.PathLike):
        pysam = hts.pysam()
        self.label = "standard input" if str(path) == "-" else str(path)
        self._tmp: Optional[str] = None
        if str(path) == "-":
            source, self._tmp = _stdin_source()
        else:
            p = Path(path)
            if not p.exists():
                raise InputFileError(f"{p}: VCF file not found: check the path")
            if p.is_dir() or not os.access(p, os.R_OK):
                raise InputFileError(f"{p}: VCF is not a readable file: check the path and its permissions")
            source = str(p)
        stream = None
        compression = hts.compression(source) if source != "-" else "stream"
        self._compressed = compression != "plain"  # as far as known: a pipe may be compressed
        if compression == "gzip" or (compression == "stream" and source != "-"):
            # pysam asks a named file where its records start (a seek), which plain gzip (or a
            # pipe, <(zcat x.vcf.gz)) cannot answer; an open descriptor is read as a stream
            # instead, like standard input
            stream = os.open(source, os.O_RDONLY)
        try:
            self._vf = pysam.VariantFile(source if stream is None else stream)
        except (ValueError, OSError) as exc:
            self.close()
            detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            if stream is not None:  # pysam names the descriptor: name the file
                detail = detail.replace(f"`{stream}`", f"`{source}`")
            if "truncated" in detail or (compression == "gzip" and _cut_short(source)):
                # htslib: "no BGZF EOF marker; file may be truncated"; plain gzip has no such marker
                fix = "the file is cut short: copy or download it again, or re-run bgzip on the whole VCF"
            else:
                fix = "a VCF needs its ##fileformat and #CHROM header lines (bcftools view -h shows them)"
            raise InputFileError(f"{self.label}: not a readable VCF/BCF ({detail}): {fix}") from None
        finally:
            if stream is not None:
                os.close(stream)  # htslib holds its own duplicate
        self.header = self._vf.header
        self.contigs: List[str] = list(self.header.contigs)
        if str(path) != "-":
            _warn_if_index_is_older(Path(path))

    def header_text(self, extra_info: List[Tuple[str, str, str, str]] = (), meta: List[Tuple[str, str]] = ()) -> str:
        """The header as VCF text with ``meta`` (key, value) lines and ``extra_info``
        (id, number, type, description) INFO definitions added."""
        header = self.header.copy()
        for key, value in meta:
            header.add_meta(key, value)
        for ident, number, kind, description in extra_info:
            if ident not in header.info:
                header.info.add(ident, number, kind, description)
        return str(header)

    def records(self) -> Iterator[Record]:
        """Every record in file order, split into alleles (1-based POS -> 0-based start here)."""
        index = -1
        iterator = iter(self._vf)
        while True:
            try:
                rec = next(iterator)
            except StopIteration:
                return
            except (OSError, ValueError) as exc:
                if self._compressed:
                    # htslib says "truncated file" for a bad line and for damaged data alike
                    raise InputFileError(
                        f"{self.label}: malformed VCF line or damaged compressed data after record {index + 1} "
                        f"({exc}): check it with bcftools view, then fix that line or copy the file again"
                    ) from None
                raise InputFileError(
                    f"{self.label}: malformed VCF line after record {index + 1} ({exc}): "
                    "check it with bcftools view, or fix or remove that line"
                ) from None
            index += 1
            yield self._record(index, rec)

    @staticmethod
    def _record(index: int, rec) -> Record:
        raw_ref = rec.ref or ""
        ref = raw_ref.upper()
        start = rec.pos - 1  # VCF POS is 1-based: the one conversion to 0-based, half-open
        ident = rec.id if rec.id else "."
        alts = rec.alts or ()
        alleles: List[Allele] = []
        if not alts:
            alleles.append(Allele(index, 0, rec.chrom, rec.pos, start, start + len(ref), ident, ref, ".", "none"))
        for i, raw_alt in enumerate(alts, start=1):
            alt = raw_alt.upper()
            kind = classify(ref, alt)
            flags = ["lowercase"] if (raw_ref != ref or (raw_alt != alt and kind != "symbolic")) else []
            alleles.append(Allele(index, i, rec.chrom, rec.pos, start, start + len(ref), ident, ref, alt, kind, flags))
        return Record(index, str(rec), alleles)

    def close(self) -> None:
        vf = getattr(self, "_vf", None)
        if vf is not None:
            self._vf = None
            try:
                vf.close()
            except (OSError, TypeError):
                # htslib reports a stream left after a read error as a failed close (and pysam,
                # naming a descriptor, fails with TypeError): the read error is the one to tell
                pass
        if self._tmp:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None

    def __enter__(self) -> "VcfReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_vcf(path: str | os.PathLike) -> VcfReader:
    """Open a VCF (plain, bgzip or gzip), BCF or ``-`` (stdin) for streaming; see :class:`VcfReader`."""
    return VcfReader(path)
