"""Base codes: the one table of ``A=0 C=1 G=2 T=3 N=4`` and the text <-> code conversions.

A leaf: it imports nothing from the package, so the formats (``io/``) and everything above them can
use it. Bases are stored and moved as these uint8 codes (1 byte a base); the one-hot expansion and
the reverse complement of windows live in :mod:`epiformer_cli.data.encoding`.
"""

from __future__ import annotations

import numpy as np

A, C, G, T, N = 0, 1, 2, 3, 4
ALPHABET = "ACGTN"

#: byte -> code for every ASCII byte: ACGT in either case map to 0..3, everything else (N, IUPAC
#: ambiguity codes such as R or Y, gaps) to N=4.
ASCII_TO_CODE = np.full(256, N, dtype=np.uint8)
for _code, _base in enumerate("ACGT"):
    ASCII_TO_CODE[ord(_base)] = _code
    ASCII_TO_CODE[ord(_base.lower())] = _code

#: code -> complementary code (N stays N).
COMPLEMENT = np.array([T, G, C, A, N], dtype=np.uint8)


def encode_sequence(sequence: str | bytes) -> np.ndarray:
    """DNA text -> uint8 codes, shape (length,). Case-insensitive; non-ACGT letters become N."""
    raw = sequence.encode("ascii", "replace") if isinstance(sequence, str) else sequence
    return ASCII_TO_CODE[np.frombuffer(raw, dtype=np.uint8)]


def decode_sequence(codes: np.ndarray) -> str:
    """uint8 codes, shape (length,) -> upper-case DNA text."""
    letters = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)
    return letters[np.asarray(codes, dtype=np.intp)].tobytes().decode("ascii")
