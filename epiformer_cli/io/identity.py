"""Identities of input files: a SHA-256 of every byte, computed once per version of a file and kept
in a small on-disk cache, so a 3 GB genome is read in full once, not on every run.

An identity is ``{"size": N, "sha256": HEX}``: no name and no path, so the same content under
another name or in another folder (a copy on cluster scratch) is the same input, and any changed
byte makes another input. The resume keys of every command (prepared stores, run folders, the
score-variants null) hold these.

The cache: one small JSON file per input path of at least :data:`CACHED_FROM_BYTES` in
:func:`cache_dir`, holding the SHA-256 with the device, inode, size, mtime (ns) and resolved path it
was computed for; any of them changed is a miss. What a stat cannot see is not seen: a rewrite in
place that keeps the size and puts the old mtime back (``rsync --inplace --times``); remove the
cache folder to hash everything again. A cache that is missing, unwritable or damaged only means
hashing again, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, Optional

from epiformer_cli.errors import EpiformerError
from epiformer_cli.io.files import atomic_write_text

log = logging.getLogger(__name__)

#: bytes read per block: bounded memory, and few enough calls that hashing runs at the hash's rate
HASH_BLOCK = 8 << 20
#: files at least this big are cached. Below it hashing takes a few tens of ms (SHA-256 runs at
#: ~2 GB/s, benchmarks/README.md), which no run notices, and small inputs (a demo, tests, a VCF of a
#: few variants) leave nothing in the cache folder
CACHED_FROM_BYTES = 64 << 20
#: files at least this big get one INFO line when hashed (seconds of reading, worth a word)
ANNOUNCED_FROM_BYTES = 256 << 20
#: a file modified this recently (s) is hashed but not cached: a write later in the same tick of a
#: coarse filesystem clock (1-2 s on some network and FAT filesystems) would keep its mtime
SETTLED_AFTER_S = 2.0
_ENTRY_FORMAT = 1


def cache_dir() -> Path:
    """The cache folder: ``$EPIFORMER_CACHE_DIR`` (or ``$EPIFORMER_CACHE``), else
    ``$XDG_CACHE_HOME/epiformer``, else ``~/.cache/epiformer``. It holds file identities, FASTA
    indexes, numba's kernels and score-variants' nulls (``epiformer cache list``)."""
    own = os.environ.get("EPIFORMER_CACHE_DIR") or os.environ.get("EPIFORMER_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG rule: a relative value is ignored
        return Path(xdg) / "epiformer"
    return Path.home() / ".cache" / "epiformer"


def file_identity(path: str | os.PathLike) -> Dict[str, object]:
    """The identity of an input file: ``{"size": bytes, "sha256": hex of every byte}``.

    Hashed once per version of the file (see the module's cache); a file of several GB is read
    in full the first time only.
    """
    size, digest = _identify(Path(path))
    return {"size": size, "sha256": digest}


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a whole file, from the same cache as :func:`file_identity`."""
    return _identify(Path(path))[1]


def _identify(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of ``path``, from the cache when its stamp matches."""
    resolved = path.resolve()
    before = os.stat(resolved)
    stamp = _stamp(resolved, before)
    cached = before.st_size >= CACHED_FROM_BYTES
    entry = _entry_path(resolved) if cached else None
    if entry is not None:
        found = _read_entry(entry, stamp)
        if found is not None:
            return before.st_size, found
    if before.st_size >= ANNOUNCED_FROM_BYTES:
        log.info("hashing %s (%s) once to identify it; cached for next runs", path.name, _human(before.st_size))
    started = time.time_ns()
    size, digest = _hash(resolved)
    if entry is not None and size == before.st_size and _settled(before, started):
        # a file that changed while it was read has neither the old nor the new content's hash
        if _stamp(resolved, os.stat(resolved)) == stamp:
            _write_entry(entry, stamp, digest)
    return size, digest


def _hash(path: Path) -> tuple[int, str]:
    """(bytes read, SHA-256 hex) of the whole file, in :data:`HASH_BLOCK` blocks."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])  # hashlib releases the GIL for blocks this large
            total += n
    return total, digest.hexdigest()


def _stamp(resolved: Path, st: os.stat_result) -> Dict[str, object]:
    return {"path": str(resolved), "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns}


def _settled(st: os.stat_result, started_ns: int) -> bool:
    """Whether the file's mtime is far enough before the hash began that a later write would
    show as another mtime (a file with a future mtime, from a skewed clock, never is)."""
    return st.st_mtime_ns <= started_ns - int(SETTLED_AFTER_S * 1e9)


def _entry_path(resolved: Path) -> Path:
    """One entry per resolved path: a new version of a file replaces its old entry."""
    name = hashlib.sha256(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_dir() / "identity" / f"{name}.json"


def _read_entry(entry: Path, stamp: Dict[str, object]) -> Optional[str]:
    try:
        data = json.loads(entry.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.debug("identity cache entry %s unreadable (%s): hashing again", entry, exc)
        return None
    digest = data.get("sha256") if isinstance(data, dict) else None
    if not (isinstance(data, dict) and data.get("format") == _ENTRY_FORMAT and data.get("stamp") == stamp
            and isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        log.debug("identity cache entry %s is for another version of %s: hashing again", entry, stamp["path"])
        return None
    return digest


def _write_entry(entry: Path, stamp: Dict[str, object], digest: str) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        # atomic: concurrent jobs on one cache (SLURM arrays) each write a whole entry, last one wins
        atomic_write_text(entry, json.dumps({"format": _ENTRY_FORMAT, "stamp": stamp, "sha256": digest}) + "\n")
    except (OSError, EpiformerError) as exc:
        log.debug("identity cache %s not written (%s): the file will be hashed again next run", entry, exc)


def _human(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
