"""The targets sheet: which bigWig tracks a model learns, and how each is normalised.

A TSV with a header, the way Basenji/Borzoi users write ``targets.txt``::

    name    path            scale   clip    stat
    neuron  neuron.bw       1.0     128     mean

``name`` and ``path`` are required; ``scale`` (default 1), ``clip`` (default none) and ``stat``
(``mean`` or ``sum`` over each 128 bp bin, default mean) are optional. Relative paths are resolved
against the sheet's folder. A plain list of bigWig paths (one per line, no header) also works;
names then come from the file stems. The sheet may be plain, bgzipped or plain-gzip text, with LF
or CRLF line endings and with or without a final newline.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from epiformer_cli.errors import InputFileError
from epiformer_cli.io.bigwig import BIN_STATS
from epiformer_cli.io.files import check_input_file
from epiformer_cli.io.hts import text_lines
from epiformer_cli.names import check_name, check_names


@dataclass(frozen=True)
class TargetTrack:
    """One target track: its name, bigWig, and normalisation ``min(binned * scale, clip)``."""

    name: str
    path: Path
    scale: float = 1.0
    clip: Optional[float] = None
    stat: str = "mean"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _is_bigwig_path(text: str) -> bool:
    return text.lower().endswith((".bw", ".bigwig"))


def read_targets(path: str | os.PathLike) -> List[TargetTrack]:
    """Read a targets sheet (or a plain list of bigWig paths) into :class:`TargetTrack` entries."""
    path = check_input_file(path, "targets sheet")
    base = path.resolve().parent
    numbered = [(n, ln) for n, ln in text_lines(path, "targets sheet") if ln.strip() and not ln.startswith("#")]
    lines = [ln for _, ln in numbered]
    if not lines:
        raise InputFileError(f"{path}: targets sheet is empty: list one bigWig per line or a name/path table")

    def resolve(p: str) -> Path:
        if "\x00" in p:
            raise InputFileError(f"{path}: a path in the targets sheet holds a NUL byte: fix the sheet")
        q = Path(p).expanduser()
        return q if q.is_absolute() else (base / q).resolve()

    tracks: List[TargetTrack] = []
    first = lines[0].split("\t")
    if len(first) == 1 and _is_bigwig_path(first[0].strip()):
        for lineno, text in numbered:
            p = resolve(text.strip())
            name = check_name(p.name.rsplit(".", 1)[0], f"{path}:{lineno}", error=InputFileError,
                              fix=": rename the bigWig, or give a name/path table")
            tracks.append(TargetTrack(name=name, path=p))
    else:
        header = [h.strip().lower() for h in first]
        # Basenji sheets name the columns identifier/file and may lead with an unnamed index column.
        rename = {"identifier": "name", "file": "path", "sum_stat": "stat", "description": "description"}
        header = [rename.get(h, h) for h in header]
        missing = [c for c in ("name", "path") if c not in header]
        if missing:
            raise InputFileError(
                f"{path}: targets sheet lacks the column(s) {', '.join(missing)}: the header must name "
                "at least 'name' and 'path' (tab-separated), or list only bigWig paths"
            )
        col = {h: i for i, h in enumerate(header)}
        for lineno, line in numbered[1:]:  # the file's own line numbers, comments counted
            fields = line.split("\t")
            if len(fields) < len(header):
                fields += [""] * (len(header) - len(fields))

            def get(key: str) -> str:
                return fields[col[key]].strip() if key in col else ""

            try:
                scale = float(get("scale")) if get("scale") else 1.0
                clip = float(get("clip")) if get("clip") else None
            except ValueError:
                raise InputFileError(f"{path}:{lineno}: scale and clip must be numbers") from None
            stat = (get("stat") or "mean").lower()
            if stat not in BIN_STATS:
                raise InputFileError(f"{path}:{lineno}: stat must be one of {', '.join(BIN_STATS)}, not {stat!r}")
            if not get("name") or not get("path"):
                raise InputFileError(f"{path}:{lineno}: every row needs a name and a path")
            check_name(get("name"), f"{path}:{lineno}", error=InputFileError)
            if not math.isfinite(scale) or scale <= 0 or (clip is not None and clip <= 0):
                raise InputFileError(f"{path}:{lineno}: scale and clip must be positive")
            tracks.append(TargetTrack(name=get("name"), path=resolve(get("path")), scale=scale, clip=clip, stat=stat))
    names = [t.name for t in tracks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputFileError(f"{path}: duplicate track name(s) {', '.join(dupes)}: every track needs its own name")
    if not tracks:
        raise InputFileError(f"{path}: targets sheet lists no tracks")
    # names become the store's columns and file names (export-bigwig, explain): colliding ones too
    check_names(names, str(path), error=InputFileError)
    return tracks
