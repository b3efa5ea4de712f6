"""``epiformer cache``: what epiformer keeps in its cache folder, and clearing it.

The cache folder (:func:`~epiformer_cli.io.identity.cache_dir`: ``$EPIFORMER_CACHE_DIR``, else
``$XDG_CACHE_HOME/epiformer``, else ``~/.cache/epiformer``) holds four kinds of entries, each
safe to delete (each is made again when next needed):

* ``nulls``: score-variants' genome-wide nulls (``nulls/null-<key digest>.tsv.gz``), and the parts
  folders of nulls being scored (``*.parts``);
* ``identities``: SHA-256 of large input files, keyed by path and stamp (``identity/``);
* ``fasta-index``: ``.fai`` indexes of FASTA files in folders that cannot be written;
* ``numba``: the compiled kernels of modisco-lite and memelite.

A null whose parts folder a live process holds a claim in is being scored now: it is listed as
such and never removed (its run would lose its work); a killed run's folder holds no claim.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

log = logging.getLogger(__name__)

#: the kinds of entries, in the order they are listed, and their folder in the cache
KINDS: Dict[str, str] = {"nulls": "nulls", "identities": "identity", "fasta-index": "fasta-index", "numba": "numba"}


@dataclass
class CacheEntry:
    """One entry of the cache folder.

    Attributes:
        kind: one of :data:`KINDS`; path: its file or folder; bytes: its size on disk (a folder:
        every file in it); modified: its last change (s since the epoch); state: ``ready``,
        ``being scored`` (a live process holds it) or ``interrupted`` (parts of a killed run,
        resumed by the next run that needs it); detail: what it is (a null's key, in short).
    """

    kind: str
    path: Path
    bytes: int
    modified: float
    state: str = "ready"
    detail: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "bytes": self.bytes, "modified": self.modified,
                "state": self.state, **self.detail}


def cache_entries(kinds: Optional[Sequence[str]] = None, folder: Optional[Path] = None) -> List[CacheEntry]:
    """Every entry of the cache folder of ``kinds`` (None: all), nulls first, then by path."""
    from epiformer_cli.io.identity import cache_dir

    root = Path(folder) if folder is not None else cache_dir()
    entries: List[CacheEntry] = []
    for kind in _kinds(kinds):
        where = root / KINDS[kind]
        if not where.is_dir():
            continue
        if kind == "nulls":
            entries.extend(_null_entries(where))
        elif kind == "numba":
            entries.append(CacheEntry(kind, where, _bytes(where), where.stat().st_mtime))
        else:
            for path in sorted(where.iterdir()):
                entries.append(CacheEntry(kind, path, _bytes(path), _mtime(path)))
    return entries


def clear_cache(kinds: Optional[Sequence[str]] = None, folder: Optional[Path] = None) -> Dict[str, Any]:
    """Remove the entries of ``kinds`` (None: all), except nulls being scored by a live process.

    Returns:
        ``{"removed": entries removed, "bytes": their size, "kept": entries in use (kept)}``.
    """
    removed, freed, kept = 0, 0, []
    for entry in cache_entries(kinds, folder):
        if entry.state == "being scored":
            kept.append(entry)
            continue
        try:
            if entry.path.is_dir() and not entry.path.is_symlink():
                shutil.rmtree(entry.path)
            else:
                entry.path.unlink()
        except FileNotFoundError:  # removed meanwhile (another clear, or a run finishing)
            continue
        removed += 1
        freed += entry.bytes
    return {"removed": removed, "bytes": freed, "kept": kept}


def _kinds(kinds: Optional[Iterable[str]]) -> List[str]:
    from epiformer_cli.errors import UsageError

    wanted = list(kinds) if kinds else list(KINDS)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise UsageError(f"unknown cache kind {', '.join(unknown)}: use {', '.join(KINDS)}")
    return wanted


def _null_entries(where: Path) -> List[CacheEntry]:
    from epiformer_cli.errors import UsageError
    from epiformer_cli.variants.null import read_null_key

    entries = []
    for path in sorted(where.iterdir()):
        if path.name.endswith(".tsv.gz") and path.is_file():
            try:
                detail = null_summary(read_null_key(path))
            except UsageError:
                detail = {"note": "not a null file (removed when next needed)"}
            entries.append(CacheEntry("nulls", path, _bytes(path), _mtime(path), "ready", detail))
        elif path.name.endswith(".tsv.gz.parts") and path.is_dir():
            parts = len(list(path.glob("chunk-*.part")))
            state = "being scored" if _held(path) else "interrupted"
            entries.append(CacheEntry("nulls", path, _bytes(path), _mtime(path), state, {"parts_done": parts}))
    return entries


def null_summary(key: Dict[str, Any]) -> Dict[str, Any]:
    """The few fields of a null's key a person tells nulls apart by."""
    inputs, scoring = key.get("inputs") or {}, key.get("scoring") or {}
    inference = scoring.get("inference") or {}

    def short(identity) -> Optional[str]:
        if not isinstance(identity, dict):
            return None
        return f"{identity.get('size', '?')} B, sha256 {str(identity.get('sha256', ''))[:12]}"

    return {"snvs": key.get("size"), "seed": key.get("seed"), "per_window": key.get("per_window", 1),
            "model_sha256": str(inputs.get("model_sha256", ""))[:12], "fasta": short(inputs.get("fasta")),
            "cons": short(inputs.get("cons")), "window_mode": scoring.get("window_mode"),
            "score_bins": scoring.get("score_bins"), "rc_average": inference.get("rc_average"),
            "precision": inference.get("precision")}


def _held(folder: Path) -> bool:
    """Whether a live process holds a claim or lock in a parts folder (a flock on one of its
    ``.lock`` files: a flock dies with its holder, so a killed run's folder holds none)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: say "in use" rather than remove a run's work
        return True
    for lock in folder.rglob("*.lock"):
        try:
            with open(lock, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                except OSError:
                    continue
        except OSError:
            continue
    return False


def _bytes(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.stat().st_size
    except OSError:  # removed while being measured
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def describe_entries(root: Path, entries: List[CacheEntry]) -> List[str]:
    """The lines ``epiformer cache list`` prints: the folder, one line per kind, one per null."""
    lines = [f"cache folder  {root}  (EPIFORMER_CACHE_DIR to move it; `epiformer cache clear` to empty it)"]
    for kind in KINDS:
        mine = [e for e in entries if e.kind == kind]
        count = len(mine) if kind != "numba" else len(list(mine[0].path.rglob("*.nbi"))) if mine else 0
        lines.append(f"{kind:<13} {count:>6} entr{'y' if count == 1 else 'ies'}  {human_bytes(sum(e.bytes for e in mine))}")
    for entry in (e for e in entries if e.kind == "nulls"):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified))
        d = entry.detail
        if "snvs" in d:
            what = (f"{d['snvs']:,} SNVs (seed {d['seed']}, {d['per_window']} a window), model {d['model_sha256']}, "
                    f"FASTA {d['fasta']}, {d['window_mode']} windows, {d['score_bins']} bins, {d['precision']}")
        elif "parts_done" in d:
            what = f"{d['parts_done']} part(s) scored"
        else:
            what = d.get("note", "")
        lines.append(f"  {entry.path.name}  {entry.state}  {human_bytes(entry.bytes)}  {when}  {what}")
    return lines


def human_bytes(size: int) -> str:
    """``size`` in B, KB, MB or GB (powers of 1024), 3 significant digits."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TB"  # pragma: no cover - the loop returns
