"""Genome FASTA access: plain or bgzipped, indexed on demand, fetched as uint8 base codes.

Reads go through ``pysam.FastaFile`` (htslib), which reads bgzipped FASTA directly. Every fetch
returns exactly ``end - start`` codes: positions before 0 or past the chromosome end are N, never
silently clipped. Soft-masked (lower-case) bases are upper-cased; IUPAC ambiguity codes become N.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from epiformer_cli.bases import ASCII_TO_CODE, N
from epiformer_cli.errors import InputFileError
from epiformer_cli.io import hts

log = logging.getLogger(__name__)

#: bytes that are neither ACGT nor N in either case: IUPAC codes and anything else odd.
_UNEXPECTED = np.ones(256, dtype=bool)
for _b in b"ACGTNacgtn":
    _UNEXPECTED[_b] = False


def _cache_dir() -> Path:
    from epiformer_cli.io.identity import cache_dir

    return cache_dir() / "fasta-index"


def _count_headers(path: Path, compression: str) -> int:
    """Number of '>' header lines, read in 16 MB blocks (only when an index is built)."""
    import gzip

    opener = gzip.open if compression == "bgzf" else open
    count, previous = 0, b"\n"
    with opener(path, "rb") as handle:
        while True:
            block = handle.read(1 << 24)
            if not block:
                return count
            count += block.count(b"\n>") + (previous == b"\n" and block[:1] == b">")
            previous = block[-1:]


def _duplicate_names(path: Path, compression: str) -> List[str]:
    """Sequence names that head more than one record, in file order (a full read: error path only)."""
    import gzip

    opener = gzip.open if compression == "bgzf" else open
    seen, duplicates = set(), []
    with opener(path, "rb") as handle:
        for line in handle:
            if line.startswith(b">"):
                name = (line[1:].split() or [b""])[0].decode(errors="replace")
                if name in seen and name not in duplicates:
                    duplicates.append(name)
                seen.add(name)
    return duplicates


def _writable_dir(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


class Genome:
    """A reference genome FASTA, opened lazily (safe to hand to worker processes).

    Args:
        path: FASTA file, plain or bgzip-compressed (``.fa``, ``.fa.gz``/``.fa.bgz``). When its
            ``.fai`` (and ``.gzi`` for bgzip) index is missing it is built beside the file, or in
            the cache folder's ``fasta-index`` (``$EPIFORMER_CACHE_DIR``, else
            ``~/.cache/epiformer``) when that folder is not writable.

    Attributes:
        chrom_sizes: chromosome name -> length in bp, in the FASTA's order.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise InputFileError(f"{self.path}: FASTA file not found: check the path (or set EPIFORMER_FASTA)")
        if self.path.is_dir():
            raise InputFileError(f"{self.path}: is a folder, not a FASTA file")
        if not os.access(self.path, os.R_OK):
            raise InputFileError(f"{self.path}: FASTA file is not readable: check its permissions")
        self.compression = hts.compression(self.path)  # plain, bgzf, gzip, or stream (not a regular file)
        if self.compression == "stream":
            raise InputFileError(f"{self.path}: FASTA is not a regular file (a pipe?), which cannot be indexed: "
                                 "give the FASTA file itself")
        if self.path.stat().st_size == 0:
            raise InputFileError(f"{self.path}: FASTA file is empty: check the path or re-download it")
        if self.compression == "gzip":
            raise InputFileError(
                f"{self.path}: FASTA is gzip-compressed, which cannot be indexed: recompress it with "
                f"bgzip (gunzip -c {self.path.name} | bgzip > genome.fa.gz) or decompress it"
            )
        self._fai, self._gzi = self._find_or_build_index()
        self._handle = None
        self._pid: Optional[int] = None
        self._warned_iupac = False
        handle = self._open()
        if not handle.references:
            raise InputFileError(f"{self.path}: no sequences found: is this a FASTA file?")
        self.chrom_sizes: Dict[str, int] = dict(zip(handle.references, handle.lengths))

    # -- index -------------------------------------------------------------------------------
    def _index_paths(self, folder: Path, stem: str) -> tuple[Path, Optional[Path]]:
        fai = folder / f"{stem}.fai"
        gzi = folder / f"{stem}.gzi" if self.compression == "bgzf" else None
        return fai, gzi

    def _find_or_build_index(self) -> tuple[Path, Optional[Path]]:
        fai, gzi = self._index_paths(self.path.parent, self.path.name)
        if fai.exists() and (gzi is None or gzi.exists()) and fai.stat().st_mtime >= self.path.stat().st_mtime:
            return fai, gzi
        if not _writable_dir(self.path.parent):
            stat = self.path.stat()
            key = hashlib.sha1(f"{self.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
            cached = _cache_dir() / key
            fai, gzi = self._index_paths(cached, self.path.name)
            if fai.exists() and (gzi is None or gzi.exists()):
                return fai, gzi
            try:
                cached.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputFileError(
                    f"{self.path}: no .fai index and neither its folder nor {cached} is writable: "
                    f"index it with: samtools faidx {self.path}"
                ) from exc
            log.info("FASTA folder is read-only: indexing %s into %s", self.path, cached)
        else:
            log.info("indexing %s (once; the .fai is kept beside it)", self.path)
        self._build_index(fai, gzi)
        return fai, gzi

    def _build_index(self, fai: Path, gzi: Optional[Path]) -> None:
        """Index the FASTA into ``fai`` (and ``gzi`` for bgzip), each written under a temporary name
        and renamed into place, the .gzi first: a concurrent job (a SLURM array) never sees a
        half-written index, and a refused FASTA leaves none."""
        from contextlib import ExitStack

        from epiformer_cli.io.files import atomic_path

        pysam = hts.pysam()  # htslib would print to stderr; we raise one clear error instead
        with ExitStack() as stack:  # left in reverse: the .gzi appears before the .fai
            tmp_fai = stack.enter_context(atomic_path(fai))
            args = [str(self.path), "--fai-idx", str(tmp_fai)]
            if gzi is not None:
                args += ["--gzi-idx", str(stack.enter_context(atomic_path(gzi)))]
            try:
                pysam.faidx(*args)
            except pysam.SamtoolsError as exc:
                raise InputFileError(
                    f"{self.path}: could not index this FASTA: check that it is a valid (optionally bgzipped) "
                    "FASTA file with '>name' header lines"
                ) from exc
            # htslib keeps the first of two records with one name and drops the other with only a
            # warning; a genome with duplicate names is ambiguous, so refuse it.
            with open(tmp_fai) as handle:
                indexed = sum(1 for _ in handle)
            headers = _count_headers(self.path, self.compression)
            if headers != indexed:
                names = _duplicate_names(self.path, self.compression)
                shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                raise InputFileError(
                    f"{self.path}: {headers - indexed} duplicate sequence name(s) among {headers} records "
                    f"({shown}): give every sequence a unique name (e.g. seqkit rename)"
                )

    def _open(self):
        """The pysam handle for this process (htslib handles must not cross a fork)."""
        if self._handle is None or self._pid != os.getpid():
            pysam = hts.pysam()
            try:
                self._handle = pysam.FastaFile(
                    str(self.path),
                    filepath_index=str(self._fai),
                    filepath_index_compressed=str(self._gzi) if self._gzi else None,
                )
            except (OSError, ValueError) as exc:
                raise InputFileError(
                    f"{self.path}: cannot open as FASTA ({exc}): check that it is a valid FASTA file"
                ) from exc
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_pid"] = None
        return state

    # -- access ------------------------------------------------------------------------------
    @property
    def chroms(self) -> List[str]:
        """Chromosome names in FASTA order."""
        return list(self.chrom_sizes)

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Bases of ``chrom:[start, end)`` (0-based, half-open) as uint8 codes, shape (end - start,).

        Positions before 0 or at/after the chromosome's end are N (code 4): windows that run off
        a chromosome keep their length.
        """
        if chrom not in self.chrom_sizes:
            raise InputFileError(f"{self.path}: no chromosome {chrom!r} in this FASTA")
        if end < start:
            raise ValueError(f"interval end {end} is before start {start}")
        length = self.chrom_sizes[chrom]
        out = np.full(end - start, N, dtype=np.uint8)
        lo, hi = max(start, 0), min(end, length)
        if hi > lo:
            raw = self._open().fetch(chrom, lo, hi).encode("ascii", "replace")
            buf = np.frombuffer(raw, dtype=np.uint8)
            if len(buf) != hi - lo:  # a .fai that does not match the file (edited FASTA)
                raise InputFileError(
                    f"{self.path}: read {len(buf)} bases of {chrom}:{lo}-{hi} instead of {hi - lo}: "
                    f"the index is stale; delete {self._fai} and run again"
                )
            if not self._warned_iupac and _UNEXPECTED[buf].any():
                self._warned_iupac = True
                log.warning("%s: IUPAC ambiguity codes (e.g. R, Y) found; they are read as N", self.path)
            out[lo - start : hi - start] = ASCII_TO_CODE[buf]
        return out

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __enter__(self) -> "Genome":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Genome({str(self.path)!r}, {len(self.chrom_sizes)} chromosomes)"
