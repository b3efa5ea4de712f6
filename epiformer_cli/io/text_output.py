"""Text tables and VCFs written in the format their file name promises, atomically.

``scores.tsv`` is plain text, ``scores.tsv.gz`` (any ``.gz`` or ``.bgz``) BGZF, which bgzip, tabix,
gzip, zcat and pandas all read; ``scores.vcf.gz`` is BGZF with a tabix index (``.tbi``) beside it
when its records are sorted; ``scores.bcf`` is BCF, with a ``.csi`` index when sorted. Everything
goes through htslib (pysam), never an external bgzip. Like every output
(:mod:`epiformer_cli.io.files`), nothing appears under the final name, and no index beside it,
until the whole file is written; an index left by an earlier run of the same name is removed.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, TextIO

from epiformer_cli.errors import EpiformerError, UsageError
from epiformer_cli.io.files import atomic_output, discard, publish, temporary_name
from epiformer_cli.io.faults import diagnose_failed_write, is_storage_fault, storage_error
from epiformer_cli.io.hts import pysam as _pysam

log = logging.getLogger(__name__)

#: what a name can promise: plain text, BGZF text, BGZF VCF (tabix-indexed), BCF.
PLAIN, BGZF, VCF_GZ, BCF = "plain", "bgzf", "vcf.gz", "bcf"
_COMPRESSED = (".gz", ".bgz")
_TSV_NAMES = (".tsv", ".tab")
_INDEXES = (".tbi", ".csi")


def _uncompressed(name: str) -> str:
    """``x.vcf.gz`` -> ``x.vcf`` (lower case); a name without ``.gz``/``.bgz`` unchanged."""
    name = name.lower()
    for ending in _COMPRESSED:
        if name.endswith(ending):
            return name[:-len(ending)]
    return name


def _kind(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    if name.endswith(".bcf"):
        return BCF
    if name.endswith(_COMPRESSED):
        return VCF_GZ if _uncompressed(name).endswith(".vcf") else BGZF
    return PLAIN


def _promises(path: str | os.PathLike) -> Optional[str]:
    """``"vcf"`` or ``"tsv"`` when the name says which (``.vcf``, ``.vcf.gz``, ``.bcf``; ``.tsv``,
    ``.tsv.gz``, ``.tab``), else None."""
    name = _uncompressed(Path(path).name)
    if name.endswith(".bcf"):
        return "vcf"
    if name.endswith(".vcf"):
        return "vcf"
    return "tsv" if name.endswith(_TSV_NAMES) else None


def format_for(path: str | os.PathLike, requested: Optional[str]) -> str:
    """The format a table of variant results is written in: ``"tsv"`` or ``"vcf"``.

    ``requested`` None means "from the name": ``.vcf``, ``.vcf.gz`` and ``.bcf`` are VCF, anything
    else (and standard output, ``-``) TSV. A requested format the name contradicts
    (``--format tsv`` with ``x.vcf.gz``, ``--format vcf`` with ``x.tsv.gz``) is a UsageError naming both.
    """
    if requested not in (None, "tsv", "vcf"):
        raise UsageError(f"--format must be tsv or vcf, not {requested!r}")
    promised = None if str(path) == "-" else _promises(path)
    if requested is None:
        return promised or "tsv"
    if promised is not None and promised != requested:
        names = ".vcf, .vcf.gz or .bcf" if requested == "vcf" else ".tsv or .tsv.gz"
        raise UsageError(f"--format {requested} does not fit --out {path}, a {promised.upper()} name: drop --format "
                         f"(the name decides), or name the output {names}")
    return requested


def companions(path: str | os.PathLike) -> List[Path]:
    """The files :func:`text_output` writes or removes beside ``path``: the indexes of a bgzipped
    VCF or a BCF (a stale one is removed with the file it described)."""
    path = Path(path)
    return [path.with_name(path.name + suffix) for suffix in _INDEXES] if _kind(path) in (VCF_GZ, BCF) else []


@contextmanager
def text_output(path: str | os.PathLike) -> Iterator[TextIO]:
    """Open ``path`` for writing text in the format its name promises (see the module docstring).

    Yields a text handle. The file (and its index) appears under ``path`` only when the block
    finishes without error; on any exception the temporary files are removed. ``-`` yields
    standard output, plain. A ``.vcf.gz`` or ``.bcf`` whose records are not sorted (contiguous
    chromosome blocks, rising POS) is written without an index, said in one warning.

    Raises:
        EpiformerError: htslib cannot write the text as BCF (say ``.vcf.gz`` instead).
    """
    if str(path) == "-":
        yield sys.stdout
        return
    path = Path(path)
    kind = _kind(path)
    if kind == PLAIN:
        with atomic_output(path, "w") as handle:
            yield handle
        return
    temporaries = [temporary_name(path)]
    try:
        order = _SortCheck()
        if kind == BCF:
            with open(temporaries[0], "w", encoding="utf-8", newline="\n") as handle:
                yield handle
            temporaries.append(temporary_name(path))
            order = _to_bcf(temporaries[0], temporaries[1], path)
        else:
            with _bgzf_text(temporaries[0]) as handle:
                if kind == VCF_GZ:
                    watched = _WatchedText(handle, order.line)
                    yield watched
                    watched.finish()
                else:
                    yield handle
        data = temporaries[-1]
        index = _index(data, path, kind, order, temporaries) if kind in (VCF_GZ, BCF) else None
        for suffix in _INDEXES:
            discard(path.with_name(path.name + suffix))  # a stale index must not describe the new file
        publish(data, path)
        if index is not None:
            publish(index, path.with_name(path.name + (".tbi" if kind == VCF_GZ else ".csi")))
    except OSError as exc:
        # a full disk, a quota, a size limit: one line naming the output (htslib's BGZF writer
        # says only "Error closing BGZFile object", without an errno: found by a probe write)
        cause = exc if is_storage_fault(exc) else diagnose_failed_write(temporaries[-1]) if exc.errno is None else None
        if cause is not None:
            raise storage_error(cause, path) from None
        raise
    finally:
        for tmp in temporaries:
            discard(tmp)


@contextmanager
def _bgzf_text(tmp: Path) -> Iterator[TextIO]:
    raw = _pysam().BGZFile(str(tmp), "wb")
    handle = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
    try:
        yield handle
    finally:
        handle.close()  # writes the BGZF end-of-file block (also on error: the file is discarded then)


def _index(data: Path, path: Path, kind: str, order: "_SortCheck", temporaries: list) -> Optional[Path]:
    """Index the finished temporary ``data`` (tabix for VCF.gz, CSI for BCF) into a temporary
    name, or say in one warning why there is no index; returns the index's temporary name."""
    fix = "sort it with `bcftools sort` to get an index"
    if order.problem is not None:
        log.warning("%s is not indexed: its records are not sorted (%s); %s", path, order.problem, fix)
        return None
    index = temporary_name(path)
    temporaries.append(index)
    try:
        _pysam().tabix_index(str(data), preset="vcf", index=str(index), csi=kind == BCF, force=True)
    except (OSError, ValueError) as exc:
        log.warning("%s is not indexed: htslib could not index it (%s); %s", path, exc, fix)
        return None
    return index


class _SortCheck:
    """Watches records go by and keeps the first reason they are not sorted for an index:
    each chromosome one block, POS not falling within it."""

    def __init__(self) -> None:
        self.problem: Optional[str] = None
        self._last: Optional[tuple] = None
        self._done: set = set()

    def record(self, chrom: str, pos: int) -> None:
        if self.problem is not None:
            return
        last = self._last
        if last is None or chrom != last[0]:
            if chrom in self._done:
                self.problem = f"{chrom}:{pos} comes after {last[0]}:{last[1]}, below earlier {chrom} records"
                return
            if last is not None:
                self._done.add(last[0])
        elif pos < last[1]:
            self.problem = f"{chrom}:{pos} comes after {chrom}:{last[1]}"
            return
        self._last = (chrom, pos)

    def line(self, line: str) -> None:
        """One line of VCF text (header lines are skipped)."""
        if self.problem is not None or not line or line[0] == "#":
            return
        fields = line.split("\t", 2)
        try:
            self.record(fields[0], int(fields[1]))
        except (IndexError, ValueError):
            self.problem = f"a line without a numeric POS: {line[:40]!r}"


class _WatchedText(io.TextIOBase):
    """A text handle that passes every complete line written through it to ``watch``."""

    def __init__(self, inner: TextIO, watch: Callable[[str], None]) -> None:
        super().__init__()
        self._inner, self._watch, self._tail = inner, watch, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._inner.write(text)
        lines = (self._tail + text).split("\n")
        self._tail = lines.pop()
        for line in lines:
            self._watch(line)
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def finish(self) -> None:
        """Watch the last line too, when it has no newline."""
        if self._tail:
            self._watch(self._tail)
            self._tail = ""


def _to_bcf(text: Path, out: Path, path: Path) -> _SortCheck:
    """Convert the VCF text file ``text`` to BCF ``out``; returns the records' sort check.

    BCF needs every contig, INFO, FORMAT and FILTER in the header, which VCF text need not declare
    (score-variants passes input records through): a first pass lets htslib declare what is missing
    (as it does when reading), and the text is converted under that complete header. The conversion
    is htslib's own (pysam's bundled ``bcftools view``, in this process): pysam's
    ``VariantFile.write`` adds an INFO/END to records with a symbolic ALT such as ``<DEL>`` (and,
    when the header lacks END, declares it in the reader's header only, leaving a BCF htslib
    cannot read back).
    """
    pysam = _pysam()  # htslib silenced: it would warn once per undeclared name, declared here
    from pysam import bcftools
    from pysam.utils import SamtoolsError

    order = _SortCheck()
    full = None
    try:
        with pysam.VariantFile(str(text)) as src:
            declared = len(list(src.header.records))
            for record in src:
                order.record(record.chrom, record.pos)
            if len(list(src.header.records)) != declared:
                full = temporary_name(path)
                with open(full, "w", encoding="utf-8", newline="\n") as fixed, open(text, encoding="utf-8") as body:
                    fixed.write(str(src.header))
                    for line in body:
                        if not line.startswith("#"):
                            fixed.write(line)
        bcftools.view("--no-version", "--output-type", "b", "--output", str(out), str(full or text),
                            catch_stdout=False)
    except (OSError, ValueError, SamtoolsError) as exc:
        cause = diagnose_failed_write(out)  # bcftools says only that it failed
        if cause is not None:
            raise storage_error(cause, path) from None
        raise EpiformerError(f"cannot write {path} as BCF: htslib refused the records ({str(exc).strip()}); "
                             f"write {_uncompressed(path.name)[:-len('.bcf')]}.vcf.gz instead") from None
    finally:
        if full is not None:
            discard(full)
    return order
