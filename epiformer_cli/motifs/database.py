"""Motif databases: MEME motif files (read strictly, written for MEME, FIMO and TOMTOM), the JASPAR
CORE vertebrates matrices pyjaspar ships (no network), and a ``motifs`` output folder's patterns.

A motif is kept as (4, L) probabilities, rows A, C, G, T, columns the motif's L positions
(5' to 3'), each column summing to 1: the way memelite takes motifs.
"""

from __future__ import annotations

import functools
import gzip
import logging
import math
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.errors import InputFileError

log = logging.getLogger(__name__)

#: the format's description, named by every refusal of a MEME file.
MEME_FORMAT_URL = "https://meme-suite.org/meme/doc/meme-format.html"
_FIX = f"a MEME motif file: see {MEME_FORMAT_URL}"
#: a row of probabilities summing within this of 1 is divided by its sum (counts divided by a
#: rounded total), one summing further from 1 refused.
ROW_SUM_TOLERANCE = 1e-2
#: a row summing within this of 1 sums to 1 to the digits written (6 significant digits round each
#: value by at most 5e-7) and is kept as written: so a file :func:`write_meme` wrote reads back as
#: the 6-digit values themselves, and a MEME file scores exactly as memelite (which never
#: normalises) scores it.
ROW_SUM_WRITTEN = 1e-5
#: what a ``motifs --out`` folder holds that score-variants reads (``MOTIF <pattern> <factor>``).
PATTERNS_FILE = "patterns.meme"


@dataclass
class Motif:
    """One motif.

    Attributes:
        motif_id: the identifier (``MA0139.2``, ``microglia_pos_0``): unique within a database.
        name: the alternate name (``CTCF``, ``FOS::JUN``, ``SPI1``), or ``""``.
        pwm: (4, L) float64 probabilities, rows A, C, G, T; every column sums to 1 (to the 6
            digits of a MEME file).
        nsites: the sites the matrix was built from, when known (MEME's ``nsites=``, JASPAR's
            column total); MEME files record it, nothing here depends on it.
    """

    motif_id: str
    name: str
    pwm: np.ndarray
    nsites: Optional[float] = None

    def __post_init__(self) -> None:
        self.name = self.name or ""
        self.pwm = np.asarray(self.pwm, dtype=np.float64)

    @property
    def label(self) -> str:
        """``ID (NAME)``, or the bare id when the motif has no alternate name."""
        return f"{self.motif_id} ({self.name})" if self.name else self.motif_id

    @property
    def length(self) -> int:
        return int(self.pwm.shape[1])


@dataclass
class MotifDatabase:
    """Motifs and where they came from.

    Attributes:
        motifs: in the database's order (the order ties are broken in).
        source: one line for logs and provenance (``JASPAR2026 CORE vertebrates, 1019 motifs``,
            ``x.meme, 12 motifs``).
        path: the file read (a folder's ``patterns.meme``; pyjaspar's sqlite file for JASPAR).
    """

    motifs: List[Motif]
    source: str
    path: Optional[Path] = None


# ---- reading MEME -----------------------------------------------------------------------------------
def _refuse(path, line: Optional[int], what: str, fix: str = _FIX) -> InputFileError:
    where = f"{path} line {line}" if line is not None else str(path)
    return InputFileError(f"{where}: {what} ({fix})")


def _text(path: Path) -> str:
    """The file's text: plain or gzip, UTF-8; binary and other encodings refused in one line."""
    from epiformer_cli.io.files import check_input_file

    check_input_file(path, "motif file")
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _refuse(path, None, f"not a readable gzip file ({exc})",
                          "the file is cut short or damaged: copy or make it again") from None
    if b"\x00" in raw:
        raise _refuse(path, None, "a binary file, not MEME motif text", _FIX)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise _refuse(path, line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                      "save it as UTF-8 or ASCII, " + _FIX) from None


def _settings(line: str) -> Dict[str, str]:
    """``letter-probability matrix: alength= 4 w= 6 nsites= 20 E= 0`` -> {alength: 4, w: 6, ...}."""
    rest = line.split(":", 1)[1] if ":" in line else ""
    return {key: value for key, value in re.findall(r"(\w+)\s*=\s*(\S+)", rest)}


def _alphabet_block(lines: List[str], at: int, path) -> int:
    """A MEME 5 custom alphabet (``ALPHABET "DNA" DNA-LIKE`` ... ``END ALPHABET``): accepted when its
    core letters are A, C, G, T. Returns the index of the ``END ALPHABET`` line."""
    letters = set()
    for k in range(at + 1, len(lines)):
        text = lines[k].strip()
        if text.upper().startswith("END ALPHABET"):
            if letters != set("ACGT"):
                raise _refuse(path, at + 1, f"alphabet of {''.join(sorted(letters)) or 'no letters'} is not DNA (ACGT)",
                              "epiformer scans DNA motifs")
            return k
        if not text or text.startswith("#") or "=" in text:
            continue  # comments and ambiguity codes (N = ACGT)
        tokens = text.split()
        letters.add(tokens[0].upper())
        if "~" in tokens:  # a complementary pair: A "Adenine" CC0000 ~ T "Thymine" 008000
            after = tokens.index("~") + 1
            if after < len(tokens):
                letters.add(tokens[after].upper())
    raise _refuse(path, at + 1, "ALPHABET block without END ALPHABET")


def _numbers(text: str) -> Optional[List[str]]:
    """The tokens of a matrix row, or None when the line is not one (a word, a URL, a blank)."""
    tokens = text.split()
    if not tokens:
        return None
    try:
        float(tokens[0])
    except ValueError:
        return None
    return tokens


def read_meme(path: str | os.PathLike) -> List[Motif]:
    """Read a MEME motif file (minimal or full MEME output, plain or gzip) strictly.

    Each motif is ``MOTIF id [alternate_name]`` (further words ignored), then
    ``letter-probability matrix: alength= 4 w= N`` and N rows of 4 probabilities (A C G T);
    ``log-odds matrix`` sections, URLs and comments are skipped. ``ALPHABET=`` must be ACGT when
    given. A row summing within :data:`ROW_SUM_TOLERANCE` of 1 is divided by its sum, unless it
    sums to 1 to the digits written (:data:`ROW_SUM_WRITTEN`).

    Raises:
        InputFileError: one line naming the file, the line and what to fix: a file with no
            ``MEME version`` line or no motif, a row of other than 4 numbers, a negative or
            non-numeric probability, a row that does not sum to 1, a matrix shorter than its
            ``w=``, another alphabet, a repeated motif id; binary, non-UTF-8 or damaged gzip.
    """
    path = Path(path)
    lines = _text(path).splitlines()
    motifs: List[Motif] = []
    seen: Dict[str, int] = {}
    version = False
    current: Optional[Tuple[str, str, int]] = None  # (id, name, line) of the motif being read
    has_matrix = False
    k = 0

    def finish(at: int) -> None:
        if current is not None and not has_matrix:
            raise _refuse(path, current[2], f"motif {current[0]} has no letter-probability matrix before "
                                            f"{'the end of the file' if at >= len(lines) else f'line {at + 1}'}")

    while k < len(lines):
        text = lines[k].strip()
        number = k + 1
        if not text or text.startswith("#"):
            k += 1
            continue
        if text.startswith("MEME version"):
            version = True
        elif text.startswith("ALPHABET"):
            if text.startswith("ALPHABET="):
                letters = text.split("=", 1)[1].strip().upper()
                if letters != "ACGT":
                    raise _refuse(path, number, f"alphabet {letters or '(empty)'} is not DNA (ACGT)",
                                  "epiformer scans DNA motifs")
            else:
                k = _alphabet_block(lines, k, path)
        elif text.startswith("MOTIF"):
            if not version:
                raise _refuse(path, number, "MOTIF before the MEME version line",
                              "a MEME motif file starts with `MEME version 4`: see " + MEME_FORMAT_URL)
            finish(k)
            tokens = text.split()
            if tokens[0] != "MOTIF" or len(tokens) < 2:
                raise _refuse(path, number, "MOTIF without an identifier")
            # MEME's own text output goes on with "width = 8 sites = 20 ...": not part of the name
            motif_id, name = tokens[1], tokens[2] if len(tokens) > 2 else ""
            if motif_id in seen:
                raise _refuse(path, number, f"motif id {motif_id} repeats the one of line {seen[motif_id]}",
                              "give every motif its own id")
            seen[motif_id] = number
            current, has_matrix = (motif_id, name, number), False
        elif text.startswith("letter-probability matrix") or text.startswith("log-odds matrix"):
            probabilities = text.startswith("letter")
            if current is None:
                raise _refuse(path, number, f"{text.split(':')[0]} before any MOTIF line")
            settings = _settings(text)
            alength = settings.get("alength", "4")
            if alength != "4":
                raise _refuse(path, number, f"alength= {alength}: a DNA motif has 4 letters",
                              "epiformer scans DNA motifs")
            width = settings.get("w")
            if width is not None and not (width.isdigit() and int(width) > 0):
                raise _refuse(path, number, f"w= {width} is not a positive number of positions")
            rows, k = _rows(lines, k + 1, int(width) if width is not None else None, path, probabilities)
            if probabilities:
                if has_matrix:
                    raise _refuse(path, number, f"motif {current[0]} has a second letter-probability matrix",
                                  "give each matrix its own MOTIF line")
                nsites = settings.get("nsites")
                try:
                    sites = float(nsites) if nsites is not None else None
                except ValueError:
                    sites = None
                motifs.append(Motif(current[0], current[1], np.array(rows).T, nsites=sites))
                has_matrix = True
            continue
        k += 1
    finish(len(lines))
    if not motifs:
        if not version:
            raise _refuse(path, None, "no MEME version line and no motif: not a MEME motif file", _FIX)
        raise _refuse(path, None, "no motif in the file (no MOTIF with a letter-probability matrix)", _FIX)
    return motifs


def _rows(lines: List[str], k: int, width: Optional[int], path, probabilities: bool) -> Tuple[List[List[float]], int]:
    """The rows of a matrix starting at line index ``k``: exactly ``width`` of them when given (the
    rows may not be interrupted), else every row up to the first line that is not one. Returns the
    rows (normalised probabilities; log-odds rows are only checked for their count) and the index of
    the line after them."""
    rows: List[List[float]] = []
    while k < len(lines) and (width is None or len(rows) < width):
        text = lines[k].strip()
        tokens = _numbers(text)
        number = k + 1
        if tokens is None:
            if width is None and rows:
                break
            if not text and not rows:
                k += 1  # blank lines before the first row
                continue
            found = "the end of the motif" if not text or text.startswith(("MOTIF", "URL")) else repr(text[:30])
            raise _refuse(path, number, f"expected {width if width is not None else 'the'} rows of the matrix, "
                                        f"found {len(rows)} and then {found}")
        if len(tokens) != 4:
            raise _refuse(path, number, f"expected 4 {'probabilities' if probabilities else 'scores'}, "
                                        f"found {len(tokens)}")
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise _refuse(path, number, f"{bad!r} is not a number") from None
        if probabilities:
            if not all(math.isfinite(v) and v >= 0 for v in values):
                raise _refuse(path, number, f"probabilities must be finite and >= 0, found {' '.join(tokens)}")
            total = sum(values)
            if abs(total - 1.0) > ROW_SUM_TOLERANCE:
                raise _refuse(path, number, f"probabilities sum to {total:.4g}, not 1",
                              "a row holds the A, C, G, T frequencies of one position; " + _FIX)
            if abs(total - 1.0) > ROW_SUM_WRITTEN:
                values = [v / total for v in values]
        rows.append(values)
        k += 1
    if width is not None and len(rows) < width:
        raise _refuse(path, len(lines), f"expected {width} rows of the matrix, found {len(rows)} before the end "
                                        "of the file")
    return rows, k


def _is_float(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


# ---- writing MEME -----------------------------------------------------------------------------------
def meme_text(motifs: Sequence[Motif]) -> str:
    """MEME minimal format (version 4): ACGT, both strands, a uniform background, then per motif
    ``MOTIF id name`` (spaces in a name written as ``_``: MEME's alternate name is one word) and
    ``letter-probability matrix: alength= 4 w= L nsites= N E= 0`` with one row of 4 probabilities
    (6 significant digits) per position. ``nsites`` is 20 (MEME's assumption) when unknown."""
    out = ["MEME version 4", "", "ALPHABET= ACGT", "", "strands: + -", "",
           "Background letter frequencies", "A 0.25 C 0.25 G 0.25 T 0.25", ""]
    for motif in motifs:
        if not motif.motif_id or any(c.isspace() for c in motif.motif_id):
            raise ValueError(f"motif id {motif.motif_id!r} must be one word")
        pwm = np.asarray(motif.pwm, dtype=np.float64)
        if pwm.ndim != 2 or pwm.shape[0] != 4 or pwm.shape[1] == 0:
            raise ValueError(f"motif {motif.motif_id}: pwm must be (4, L) with L > 0, not {pwm.shape}")
        name = "_".join(motif.name.split())  # the alternate name is one word in MEME
        nsites = motif.nsites if motif.nsites is not None and motif.nsites > 0 else 20
        out.append(f"MOTIF {motif.motif_id} {name}".rstrip())
        out.append(f"letter-probability matrix: alength= 4 w= {pwm.shape[1]} nsites= {nsites:.6g} E= 0")
        out.extend(" ".join(f"{v:.6g}" for v in column) for column in pwm.T)
        out.append("")
    return "\n".join(out)


def write_meme(destination: str | os.PathLike | IO[str], motifs: Sequence[Motif]) -> None:
    """Write ``motifs`` as a MEME file (see :func:`meme_text`), which :func:`read_meme` reads back
    with the same ids, names and widths and every probability exactly its value rounded to 6
    significant digits (so writing what was read gives the same text). A path is written
    atomically (gzip when it ends in ``.gz``); a text handle is written to as it is."""
    text = meme_text(motifs)
    if hasattr(destination, "write"):
        destination.write(text)
        return
    from epiformer_cli.io.files import atomic_output

    path = Path(destination)
    if path.suffix == ".gz":
        with atomic_output(path, "wb") as handle:
            handle.write(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        with atomic_output(path, "w") as handle:
            handle.write(text)


# ---- JASPAR -----------------------------------------------------------------------------------------
#: the collection and taxonomic group read from pyjaspar's newest release.
JASPAR_COLLECTION = "CORE vertebrates"


@functools.lru_cache(maxsize=1)
def _jaspar() -> Tuple[str, Tuple[Motif, ...]]:
    try:
        from pyjaspar import JASPAR_LATEST_RELEASE, jaspardb
    except ImportError:
        raise InputFileError("the default motif database (JASPAR) needs pyjaspar (pip install pyjaspar), "
                             "or give a MEME file") from None
    started = time.perf_counter()
    jdb = jaspardb(release=JASPAR_LATEST_RELEASE)  # the sqlite file pyjaspar ships: no network
    try:
        found = jdb.fetch_motifs(collection="CORE", tax_group=["vertebrates"], all_versions=False)
    finally:
        jdb.conn.close()
    motifs = []
    for m in found:
        counts = np.array([[float(v) for v in m.counts[base]] for base in "ACGT"], dtype=np.float64)
        totals = counts.sum(axis=0)
        # no pseudocount: the scan adds its own (memelite's eps), as FIMO does to a MEME file
        motifs.append(Motif(m.matrix_id, m.name or "", counts / totals, nsites=float(np.round(totals.max(), 6))))
    log.debug("read %d JASPAR motifs from %s in %.2f s", len(motifs), JASPAR_LATEST_RELEASE,
              time.perf_counter() - started)
    return JASPAR_LATEST_RELEASE, tuple(motifs)


def jaspar_vertebrates() -> List[Motif]:
    """JASPAR CORE vertebrates as pyjaspar's newest release ships it (its sqlite file, never the
    network): the latest version of each matrix ID, counts divided by their column totals (no
    pseudocount), names as JASPAR gives them (``CTCF``, ``FOS::JUN``), in JASPAR's order.

    Read once per process (about 2 s: pyjaspar queries the sqlite file motif by motif); a new list
    of the same :class:`Motif` objects each call (do not change their matrices).
    """
    return list(_jaspar()[1])


def jaspar_release() -> str:
    """Provenance of :func:`jaspar_vertebrates`: ``JASPAR2026 CORE vertebrates, 1019 motifs``."""
    release, motifs = _jaspar()
    return f"{release} {JASPAR_COLLECTION}, {len(motifs)} motifs"


def __getattr__(name: str):
    # JASPAR_RELEASE reads the database, so only when asked for (importing this module stays fast)
    if name == "JASPAR_RELEASE":
        return jaspar_release()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def jaspar_file() -> Path:
    """The sqlite file of pyjaspar's newest release: what ``--motif-db jaspar`` reads (and the
    file a run's identity records for it)."""
    try:
        import pyjaspar
        from pyjaspar import JASPAR_LATEST_RELEASE
    except ImportError:
        raise InputFileError("the default motif database (JASPAR) needs pyjaspar (pip install pyjaspar), "
                             "or give a MEME file") from None
    return Path(pyjaspar.__file__).parent / "data" / f"{JASPAR_LATEST_RELEASE}.sqlite"


# ---- one entry point --------------------------------------------------------------------------------
#: the ``--motif-db`` value naming the shipped JASPAR CORE vertebrates (a file of that name: ``./jaspar``)
BUILTIN = "jaspar"


def is_builtin(spec: Optional[str | os.PathLike]) -> bool:
    """Whether ``spec`` names the shipped JASPAR (``jaspar``, any case), not a file."""
    return spec is not None and str(spec).lower() == BUILTIN


def motif_file(spec: str | os.PathLike) -> Path:
    """The file :func:`load_motif_db` reads for ``spec``: the file itself, a ``motifs`` output
    folder's ``patterns.meme``, or for ``jaspar`` pyjaspar's sqlite file.

    Raises:
        InputFileError: missing path; a folder without ``patterns.meme``.
    """
    if is_builtin(spec):
        return jaspar_file()
    path = Path(spec)
    if path.is_dir():
        inner = path / PATTERNS_FILE
        if not inner.is_file():
            raise InputFileError(f"{path} is not a motifs output folder (no {PATTERNS_FILE}): give a MEME file or "
                                 "the --out folder of epiformer motifs")
        return inner
    if not path.exists():
        raise InputFileError(f"{path}: motif file not found: give a MEME file or the --out folder of "
                             "epiformer motifs")
    return path


def load_motif_db(spec: Optional[str | os.PathLike] = None) -> MotifDatabase:
    """A motif database: None or ``jaspar`` -> JASPAR CORE vertebrates (:func:`jaspar_vertebrates`); a file -> a
    MEME file (:func:`read_meme`); a folder -> the patterns of an ``epiformer motifs --out`` folder
    (its ``patterns.meme``, ``MOTIF microglia_pos_0 SPI1``: labels read ``microglia_pos_0 (SPI1)``).

    Raises:
        InputFileError: one line (missing file, a folder that is not a motifs output, a bad MEME
            file: see :func:`read_meme`).
    """
    if spec is None or is_builtin(spec):
        return MotifDatabase(jaspar_vertebrates(), jaspar_release(), jaspar_file())
    path = motif_file(spec)
    motifs = read_meme(path)
    what = "TF-MoDISco patterns" if path.name == PATTERNS_FILE and path.parent == Path(spec) else "motifs"
    return MotifDatabase(motifs, f"{path}, {len(motifs)} {what if len(motifs) != 1 else what[:-1]}", path)
