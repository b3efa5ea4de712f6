"""The one checksum of the run layer: a running CRC-32 and byte count, and the line that ends a piece.

Every stored piece ends with a checksum line (:func:`trailer`); a finished file that cannot carry
one (a training store's arrays) has its :class:`Crc32` recorded in a manifest as
``{"crc32": "cccccccc", "bytes": n}`` (:meth:`Crc32.record`). Both are the same sum, accumulated
by :class:`Crc32` wherever data is written or checked.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path
from typing import IO, Any, Mapping, Optional

from epiformer_cli.errors import StorageError
from epiformer_cli.progress import Progress

#: the last line of every piece: ``#epiformer-crc32 CCCCCCCC LLLLLLLLLLLLLLLL\n`` (CRC-32 and
#: byte length of everything before it). Fixed length, so a reader finds it without parsing; a
#: comment line, so a text piece stays text; after the data, so ``np.load`` of a piece still works.
_TRAILER_TAG = b"#epiformer-crc32 "
TRAILER_SIZE = len(_TRAILER_TAG) + 8 + 1 + 16 + 1
_BLOCK = 1 << 22


class CorruptPiece(StorageError):
    """A stored piece fails its checksum (a flipped byte, a truncated or partial copy)."""


class Crc32:
    """A running CRC-32 and byte count of the data passed to :meth:`update`.

    Attributes:
        crc: the CRC-32 so far (unsigned 32-bit); length: bytes so far.
    """

    __slots__ = ("crc", "length")

    def __init__(self) -> None:
        self.crc, self.length = 0, 0

    def update(self, data) -> "Crc32":
        """Add ``data`` (bytes, or any contiguous buffer such as a numpy array's memory)."""
        view = memoryview(data).cast("B")
        self.crc = zlib.crc32(view, self.crc)
        self.length += len(view)
        return self

    @classmethod
    def of(cls, data) -> "Crc32":
        return cls().update(data)

    @classmethod
    def of_file(cls, path: str | os.PathLike, limit: Optional[int] = None,
                progress: Optional[Progress] = None) -> "Crc32":
        """The sum of a file's first ``limit`` bytes (all of it by default), streamed in 4 MiB
        blocks; ``progress(n_bytes)`` after each block. Stops early at the end of a short file."""
        total = cls()
        with open(path, "rb") as handle:
            left = limit
            while left is None or left > 0:
                block = handle.read(_BLOCK if left is None else min(left, _BLOCK))
                if not block:
                    break
                total.update(block)
                if left is not None:
                    left -= len(block)
                if progress:
                    progress(len(block))
        return total

    def trailer(self) -> bytes:
        """The checksum line for what was summed."""
        return trailer(self.crc, self.length)

    def record(self) -> dict:
        """The sum as a manifest records it: ``{"crc32": "cccccccc", "bytes": n}``."""
        return {"crc32": f"{self.crc & 0xFFFFFFFF:08x}", "bytes": self.length}

    @classmethod
    def from_record(cls, value: Any) -> "Crc32":
        """A sum read back from :meth:`record` (or from a ``[crc, bytes]`` pair, as builds of
        epiformer 0.x kept in their done-markers)."""
        total = cls()
        if isinstance(value, Mapping):
            total.crc, total.length = int(value["crc32"], 16), int(value["bytes"])
        else:
            total.crc, total.length = int(value[0]) & 0xFFFFFFFF, int(value[1])
        return total

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Crc32) and (self.crc & 0xFFFFFFFF, self.length) == (other.crc & 0xFFFFFFFF,
                                                                                      other.length)

    def __repr__(self) -> str:
        return f"Crc32({self.crc & 0xFFFFFFFF:08x}, {self.length})"


def trailer(crc: int, length: int) -> bytes:
    """The checksum line for ``length`` bytes of content with CRC-32 ``crc``."""
    return _TRAILER_TAG + b"%08x %016d\n" % (crc & 0xFFFFFFFF, length)


def checked_content(data: bytes, path: Path) -> bytes:
    """``data`` (a whole piece file) without its checksum line, after checking it.

    Raises:
        CorruptPiece: the line is missing or malformed, or the length or CRC-32 differ.
    """
    body, tail = data[:-TRAILER_SIZE], data[-TRAILER_SIZE:]
    try:
        if len(data) < TRAILER_SIZE or not tail.startswith(_TRAILER_TAG) or not tail.endswith(b"\n"):
            raise ValueError("no checksum line (truncated, or written by another tool)")
        crc_text, length_text = tail[len(_TRAILER_TAG):-1].split(b" ")
        if int(length_text) != len(body):
            raise ValueError(f"{len(body)} bytes where {int(length_text)} were written (truncated or extended)")
        if int(crc_text, 16) != zlib.crc32(body):
            raise ValueError("checksum mismatch (a changed byte)")
    except ValueError as exc:
        raise CorruptPiece(f"{path} is damaged: {exc}") from None
    return body


def file_has_trailer(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` ends with the checksum line of what precedes it (streamed: any
    size). A missing or unreadable file is False."""
    try:
        size = os.stat(path).st_size
        if size < TRAILER_SIZE:
            return False
        body = Crc32.of_file(path, limit=size - TRAILER_SIZE)
        if body.length != size - TRAILER_SIZE:
            return False
        with open(path, "rb") as handle:
            handle.seek(size - TRAILER_SIZE)
            tail = handle.read()
    except OSError:
        return False
    return tail == body.trailer()


class ChecksumWriter(io.RawIOBase):
    """A binary handle that sums what passes through it (a file object, so ``np.save``,
    ``np.savez`` and a text wrapper can write to it); :attr:`sum` is the :class:`Crc32`."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle, self.sum = handle, Crc32()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sum.update(view)
        self._handle.write(view)
        return len(view)

    def flush(self) -> None:
        self._handle.flush()
