"""htslib, through pysam, with htslib's own stderr messages off; and the compression of inputs
(VCF, BED, targets sheets, FASTA) as htslib sees it: plain, BGZF or plain gzip (text inputs read
all three sequentially; a FASTA must be plain or BGZF, which can be indexed).

htslib prints warnings and errors straight to the C stderr (``[W::hts_idx_load3] The index file is
older than the data file``, ``[W::vcf_parse] Contig 'chrX' is not defined in the header``,
``[E::hts_open_format] ...``). The readers here raise one clear error instead, or log what a user
needs to know themselves, so every module that uses pysam imports it through :func:`pysam`.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Iterator, Tuple

from epiformer_cli.errors import InputFileError


def pysam():
    """The ``pysam`` module, with htslib's verbosity set to 0 (its ``hts_verbose``: nothing
    printed). The setting is process-wide and survives a fork; setting it again costs nothing."""
    import pysam as module

    module.set_verbosity(0)
    return module


def _kind(head: bytes) -> str:
    """``plain``, ``bgzf`` or ``gzip`` from a file's first 18 bytes (fewer: as far as they tell)."""
    if head[:2] != b"\x1f\x8b":
        return "plain"
    # BGZF is gzip with an extra field "BC" (RFC 1952 FEXTRA): flag bit 2, subfield at bytes 12-13.
    if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC":
        return "bgzf"
    return "gzip"


def compression(path: str | os.PathLike) -> str:
    """``plain``, ``bgzf`` or ``gzip`` (plain gzip, which cannot seek), from the first bytes of
    the file, whatever its name says; ``stream`` for a pipe or other non-regular file (such as
    ``<(zcat x.vcf.gz)``), whose bytes cannot be looked at without taking them from the reader."""
    if not os.path.isfile(path):
        return "stream"
    with open(path, "rb") as handle:
        return _kind(handle.read(18))


def text_lines(path: str | os.PathLike, what: str) -> Iterator[Tuple[int, str]]:
    """The lines of a plain, BGZF or gzip text file (or pipe) as ``(line number, text)``, read once
    from the start (no seek), without their line ending: LF, CRLF or CR, and a last line without
    one, all read the same. A UTF-8 byte-order mark is dropped; bytes that are not UTF-8 are kept
    (as surrogates, so a path round-trips) for the caller to refuse or use.

    Raises:
        InputFileError: compressed data that is damaged or cut short, naming the file and the
            last line read.
    """
    path = Path(path)
    raw = open(path, "rb")
    # peek, not read: a pipe's bytes are not read twice
    binary = gzip.GzipFile(fileobj=raw, mode="rb") if _kind(raw.peek(18)[:18]) != "plain" else raw
    lineno = 0
    # newline=None: universal newlines, so no "\r" reaches a chromosome name, a track or a path
    with raw, io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=None) as handle:
        try:
            for lineno, line in enumerate(handle, 1):
                yield lineno, line.rstrip("\n")
        except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise InputFileError(
                f"{path}: the {what}'s compressed data is damaged or cut short after line {lineno} ({exc}): "
                "copy or download it again"
            ) from None
