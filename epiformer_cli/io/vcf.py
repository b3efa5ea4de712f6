"""VCF/BCF reading: the ONE place VCF's 1-based POS becomes epiformer's 0-based, half-open interval.

Reads plain VCF, bgzipped VCF (a tabix index beside it is opened by htslib when present; reading
is sequential either way), plain-gzip VCF (read as a stream, as htslib reads standard input), BCF,
or ``-`` for standard input, sorted or not, through ``pysam.VariantFile``; a VCF file whose text
starts with a UTF-8 byte-order mark (which htslib refuses) is passed to it without the mark.
Records are read once, from the start (a VCF without ##contig lines may be read twice to learn its
chromosome names: :attr:`VcfReader.contigs`): nothing here seeks or queries a region, so no input
needs an index. Records stream in file order; multi-allelic records are split into one
:class:`Allele` per ALT, each classified (``snv``, ``substitution``, ``indel``, ``symbolic``,
``invalid``, ``none``) so the scorer can give every one of them a status. Sample columns (FORMAT,
genotypes) are never used for scoring; a VCF output keeps them as they are.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import sys
import tempfile
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, Iterator, List, Optional, Tuple

from epiformer_cli.errors import InputFileError
from epiformer_cli.io import hts

log = logging.getLogger(__name__)

_BASES = re.compile(r"^[ACGTN]+$")

#: records of standard input or a pipe (which cannot be read twice) read ahead, and kept, to learn
#: the chromosome names of a VCF without ##contig lines; a longer stream's names are not learnt.
LOOKAHEAD_RECORDS = 50_000


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
        ref, alt: the alleles, upper-cased (``alt`` is ``.`` when the record has none; a symbolic
            ``alt`` is kept as written).
        kind: ``snv`` (1 bp to 1 bp), ``substitution`` (equal lengths > 1), ``indel``,
            ``symbolic`` (``<DEL>``, ``*``, breakends), ``invalid`` (letters other than ACGTN),
            ``none`` (no ALT). An ALT with N has the kind of its lengths; the scorer gives it the
            status ``n_allele``.
        flags: notes that do not stop scoring (``lowercase``: REF, or a base ALT, had lower-case
            letters, upper-cased here).
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


def _note_if_index_is_older(vcf: Path) -> None:
    """Say once, at debug level (-v), what htslib (silenced) would print: an index older than its
    VCF means the VCF changed after it was indexed (or the two were copied in the wrong order).
    epiformer reads the whole file and never the index, so its results are not affected: not a
    warning; other tools that use the index may read the wrong records."""
    data_time = int(vcf.stat().st_mtime)  # whole seconds, as htslib compares them
    indexes = ((Path(f"{vcf}.tbi"), f"tabix -f -p vcf {vcf}"), (Path(f"{vcf}.csi"), f"bcftools index -f {vcf}"))
    for index, fix in indexes:
        try:
            older = int(index.stat().st_mtime) < data_time
        except OSError:  # no such index
            continue
        if older:
            log.debug("%s: its index %s is older than the file (was the VCF changed after it was indexed?): "
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


def _starts_with_bom(path: str, compression: str) -> bool:
    """Whether the text of a plain, BGZF or gzip file starts with a UTF-8 byte-order mark."""
    import gzip

    try:
        with (open(path, "rb") if compression == "plain" else gzip.open(path, "rb")) as handle:
            return handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
    except (EOFError, OSError, zlib.error):
        return False  # damaged: htslib's own error names it


class _Feeder:
    """The text of a VCF file after its byte-order mark (decompressed), written into a pipe by a
    thread for htslib to read as a stream: htslib wants ``##fileformat`` at byte 0.

    ``fd`` is the pipe's read end. The thread stops when the text ends, or when the reader closes
    the pipe; :meth:`failure` is what stopped it early (damaged compressed data), or None.
    """

    def __init__(self, path: str, compression: str):
        self.fd, write_fd = os.pipe()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._feed, args=(path, compression, write_fd), daemon=True,
                                        name="epiformer-vcf-bom")
        self._thread.start()

    def _feed(self, path: str, compression: str, write_fd: int) -> None:
        import gzip

        try:
            # the pipe first: whatever fails after, its write end is closed and the reader sees the end
            with open(write_fd, "wb") as sink, (open(path, "rb") if compression == "plain"
                                                 else gzip.open(path, "rb")) as source:
                source.read(len(codecs.BOM_UTF8))
                # read1: what was decompressed before damaged data is written, not dropped with it
                for block in iter(lambda: source.read1(1 << 20), b""):
                    sink.write(block)
        except BrokenPipeError:
            pass  # the reader stopped first (closed, or an error of its own)
        except (EOFError, OSError, zlib.error) as exc:
            self._error = exc

    def failure(self) -> Optional[BaseException]:
        """Once the reader has seen the end of the text: what cut it short, if anything."""
        self._thread.join()
        return self._error


class _OpenError(Exception):
    """pysam could not open a VCF; ``args[0]``: its message, naming the file."""


def _open_variant_file(source: str, compression: str):
    """``(pysam.VariantFile, _Feeder or None)`` reading ``source`` (a path, or ``-``) from its start.

    Raises:
        _OpenError: pysam's message, naming ``source`` (not a descriptor).
    """
    pysam = hts.pysam()
    feeder, stream = None, None
    if compression in ("plain", "bgzf", "gzip") and _starts_with_bom(source, compression):
        feeder = _Feeder(source, compression)
        stream = feeder.fd
    elif compression == "gzip" or (compression == "stream" and source != "-"):
        # pysam asks a named file where its records start (a seek), which plain gzip (or a
        # pipe, <(zcat x.vcf.gz)) cannot answer; an open descriptor is read as a stream
        # instead, like standard input
        stream = os.open(source, os.O_RDONLY)
    try:
        return pysam.VariantFile(source if stream is None else stream), feeder
    except (ValueError, OSError, TypeError) as exc:
        # TypeError: pysam's own error path fails on some damaged input (a gzip of binary bytes)
        detail = "htslib could not read it" if isinstance(exc, TypeError) else (
            str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        if stream is not None:  # pysam names the descriptor: name the file
            detail = detail.replace(f"`{stream}`", f"`{source}`")
        raise _OpenError(detail) from None
    finally:
        if stream is not None:
            os.close(stream)  # htslib holds its own duplicate (a feeder then stops at its next write)


def _close_variant_file(vf) -> None:
    try:
        vf.close()
    except (OSError, TypeError):
        # htslib reports a stream left after a read error as a failed close (and pysam,
        # naming a descriptor, fails with TypeError): the read error is the one to tell
        pass


class VcfReader:
    """A VCF/BCF opened for streaming (``path`` may be ``-`` for standard input).

    Attributes:
        label: how to name the input in messages.
        header: the pysam header (use :meth:`header_text` for output).
        contigs: the VCF's chromosome names (see :attr:`contigs`).
    """

    def __init__(self, path: str | os.PathLike):
        self.label = "standard input" if str(path) == "-" else str(path)
        self._tmp: Optional[str] = None
        self._vf = None
        if str(path) == "-":
            source, self._tmp = _stdin_source()
        else:
            p = Path(path)
            if not p.exists():
                raise InputFileError(f"{p}: VCF file not found: check the path")
            if p.is_dir() or not os.access(p, os.R_OK):
                raise InputFileError(f"{p}: VCF is not a readable file: check the path and its permissions")
            source = str(p)
        compression = hts.compression(source) if source != "-" else "stream"
        self._source, self._compression = source, compression
        self._compressed = compression != "plain"  # as far as known: a pipe may be compressed
        try:
            self._vf, self._feeder = _open_variant_file(source, compression)
        except _OpenError as exc:
            self.close()
            detail = str(exc)
            if "truncated" in detail or (compression == "gzip" and _cut_short(source)):
                # htslib: "no BGZF EOF marker; file may be truncated"; plain gzip has no such marker
                fix = "the file is cut short: copy or download it again, or re-run bgzip on the whole VCF"
            else:
                fix = "a VCF needs its ##fileformat and #CHROM header lines (bcftools view -h shows them)"
            raise InputFileError(f"{self.label}: not a readable VCF/BCF ({detail}): {fix}") from None
        self.header = self._vf.header
        # what the header declares, now: htslib adds a contig to it when a record names one it lacks
        self._declared: List[str] = list(self.header.contigs)
        self._contigs: Optional[List[str]] = None
        self._records = iter(self._vf)
        self._read = 0  # records taken from htslib
        self._ahead: Deque[Record] = deque()  # records read ahead (from a stream), not yet given out
        self._ahead_error: Optional[InputFileError] = None
        if str(path) != "-":
            _note_if_index_is_older(Path(path))

    @property
    def contigs(self) -> List[str]:
        """The VCF's chromosome names: its ``##contig`` lines; without any, the CHROM of its
        records, in order of first appearance, learnt on first use (so names can be checked
        against a FASTA before any work).

        From a file (plain, BGZF, gzip) that is a second, names-only pass over it; from standard
        input or a pipe, which cannot be read twice, the records are read ahead and kept for
        :meth:`records`, up to :data:`LOOKAHEAD_RECORDS` of them: a longer stream, or records
        that cannot be read, give ``[]`` (names unknown; :meth:`records` reports a bad record).
        """
        if self._declared:
            return self._declared
        if self._contigs is None:
            self._contigs = self._chroms_of_a_file() if self._compression != "stream" else self._chroms_ahead()
        return self._contigs

    def _chroms_of_a_file(self) -> List[str]:
        try:
            vf, feeder = _open_variant_file(self._source, self._compression)
        except _OpenError:
            return []
        names: Dict[str, None] = {}
        try:
            for rec in vf:
                names[rec.chrom] = None
        except (OSError, ValueError):
            return []
        finally:
            _close_variant_file(vf)
        if feeder is not None and feeder.failure() is not None:
            return []
        return list(names)

    def _chroms_ahead(self) -> List[str]:
        if self._read:  # records already given out: the names of the rest would not be all of them
            return []
        # as declared, for header_text(): reading ahead makes htslib add the records' contigs
        self.header = self._vf.header.copy()
        names: Dict[str, None] = {}
        while len(self._ahead) < LOOKAHEAD_RECORDS:
            try:
                record = self._next()
            except InputFileError as exc:
                self._ahead_error = exc  # told by records() in its place
                return []
            if record is None:
                return list(names)
            self._ahead.append(record)
            names[record.alleles[0].chrom] = None
        return []

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
        while self._ahead:
            yield self._ahead.popleft()
        if self._ahead_error is not None:
            raise self._ahead_error
        while True:
            record = self._next()
            if record is None:
                return
            yield record

    def _next(self) -> Optional[Record]:
        """The next record from htslib, or None at the end.

        Raises:
            InputFileError: a malformed line or damaged compressed data, naming the last record read.
        """
        try:
            rec = next(self._records)
        except StopIteration:
            failure = self._feeder.failure() if self._feeder is not None else None
            if failure is not None:
                raise InputFileError(
                    f"{self.label}: the VCF is damaged or cut short after record {self._read} ({failure}): "
                    "copy or download it again"
                ) from None
            return None
        except (OSError, ValueError) as exc:
            if self._compressed:
                # htslib says "truncated file" for a bad line and for damaged data alike
                raise InputFileError(
                    f"{self.label}: malformed VCF line or damaged compressed data after record {self._read} "
                    f"({exc}): check it with bcftools view, then fix that line or copy the file again"
                ) from None
            raise InputFileError(
                f"{self.label}: malformed VCF line after record {self._read} ({exc}): "
                "check it with bcftools view, or fix or remove that line"
            ) from None
        self._read += 1
        try:
            return self._record(self._read - 1, rec)
        except UnicodeDecodeError as exc:
            raise InputFileError(
                f"{self.label}: record {self._read} holds the byte {exc.object[exc.start:exc.end]!r}, which is not "
                "UTF-8: convert the file (iconv -f latin1 -t utf-8) or fix that record"
            ) from None

    @staticmethod
    def _record(index: int, rec) -> Record:
        raw_ref = rec.ref or ""
        ref = raw_ref.upper()
        start = rec.pos - 1  # VCF POS is 1-based: the one conversion to 0-based, half-open
        ident = rec.id if rec.id else "."
        alts = rec.alts or ()
        alleles: List[Allele] = []
        if not alts:
            alleles.append(Allele(index, 0, rec.chrom, rec.pos, start, start + len(ref), ident, ref, ".", "none",
                                  ["lowercase"] if raw_ref != ref else []))
        for i, raw_alt in enumerate(alts, start=1):
            alt = raw_alt.upper()
            kind = classify(ref, alt)
            if kind == "symbolic":
                # kept as written: a symbolic ID (<DEL>) or a breakend's mate chromosome (A[chr2:5[)
                # is a name, not bases, and upper-casing would change it
                alt = raw_alt
            flags = ["lowercase"] if (raw_ref != ref or raw_alt != alt) else []
            alleles.append(Allele(index, i, rec.chrom, rec.pos, start, start + len(ref), ident, ref, alt, kind, flags))
        return Record(index, str(rec), alleles)

    def close(self) -> None:
        vf = getattr(self, "_vf", None)
        if vf is not None:
            self._vf = None
            _close_variant_file(vf)
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
