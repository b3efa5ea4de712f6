"""Where a variant is scored, and how its alternative window is built and mapped back.

All coordinates are 0-based, half-open, on the FASTA's chromosome names.

Window rules:

* ``grid`` (default): the window of the genome-wide tiling (:class:`WindowGrid`: window ``i``
  predicts ``[i * out_bp, (i + 1) * out_bp)``) whose CENTRE is nearest to the variant's first REF
  base. Window centres sit at ``(i + 1/2) * out_bp``, so this is the window whose output holds that
  base: ``i = start // out_bp``. A variant's window depends on nothing else in the file, and all
  variants of one window share its reference pass.
* ``centered``: the window puts the variant's first REF base in the middle of the central bin
  (window offset ``seq_len / 2 + 64``); one reference pass per distinct position.

Alternative windows keep the model's length and the reference window's start (left-anchored):
``alt = ref[w0, s) + ALT + ref[s + len(REF), ...)``, cut or extended on the right to ``seq_len``
bases. Conservation of the ALT bases is the reference's at the same offset in the REF allele;
inserted bases (past the REF allele's length) take the conservation of the REF allele's last base
(the flank they are inserted after). See :func:`realign` for how predictions come back.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from epiformer_cli.options import WINDOW_MODES

GRID, CENTERED = WINDOW_MODES


def window_start(mode: str, start: int, seq_len: int, crop_bp: int, bin_bp: int = 128) -> int:
    """Input start of the window that scores a variant whose REF begins at ``start`` (0-based)."""
    out_bp = seq_len - 2 * crop_bp
    if mode == GRID:
        return (start // out_bp) * out_bp - crop_bp
    if mode == CENTERED:
        return start - seq_len // 2 - bin_bp // 2
    raise ValueError(f"window mode must be one of {WINDOW_MODES}, not {mode!r}")


def score_bin_range(offset: int, n_bins: int, out_bins: int, crop_bp: int, bin_bp: int = 128) -> Tuple[int, int]:
    """The ``n_bins`` output bins centred on window offset ``offset``: [first, last) bin indices.

    Centred on the bin holding the variant (for an even count the extra bin is on the side of the
    variant's half of its bin); shifted, never shrunk, to stay inside the output.
    """
    rel = offset - crop_bp
    center = rel // bin_bp
    if n_bins % 2:
        first = center - n_bins // 2
    else:
        first = center - n_bins // 2 + (1 if rel % bin_bp >= bin_bp // 2 else 0)
    first = int(min(max(first, 0), out_bins - n_bins))
    return first, first + n_bins


def build_alt(ref_codes: np.ndarray, ref_cons: np.ndarray, offset: int, ref_len: int,
              alt_codes: np.ndarray, seq_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """The alternative window (codes, conservation), each of length ``seq_len``.

    Args:
        ref_codes, ref_cons: the reference from the window start, at least
            ``seq_len + max(0, ref_len - len(alt_codes))`` long (a deletion pulls in right flank).
        offset: window offset of the REF allele's first base.
        ref_len: length of the REF allele.
        alt_codes: uint8 codes of the ALT allele.
    """
    la = len(alt_codes)
    alt_cons = np.empty(la, dtype=np.float32)
    m = min(ref_len, la)
    alt_cons[:m] = ref_cons[offset:offset + m]
    if la > m:  # inserted bases: the flank's conservation (the REF allele's last base)
        alt_cons[m:] = ref_cons[offset + ref_len - 1]
    codes = np.concatenate([ref_codes[:offset], alt_codes, ref_codes[offset + ref_len:]])[:seq_len]
    cons = np.concatenate([ref_cons[:offset], alt_cons, ref_cons[offset + ref_len:]])[:seq_len]
    if len(codes) != seq_len:
        raise ValueError("reference slice too short for this deletion")
    return codes, cons.astype(np.float32, copy=False)


def alt_index_of_ref(offset: int, ref_len: int, alt_len: int, ref_positions: np.ndarray) -> np.ndarray:
    """For window offsets of REFERENCE bases, the offset of the matching base in the alt window.

    Bases before the REF allele and within its first ``min(len(REF), len(ALT))`` bases map to
    themselves; bases after the REF allele map to ``p - len(REF) + len(ALT)``; deleted bases map
    to the last ALT base (the junction). Inserted bases have no reference counterpart and drop out.
    """
    p = np.asarray(ref_positions, dtype=np.int64)
    m = min(ref_len, alt_len)
    out = p.copy()
    after = p >= offset + ref_len
    out[after] = p[after] - ref_len + alt_len
    deleted = (p >= offset + m) & ~after
    out[deleted] = offset + alt_len - 1
    return out


def realign(alt_pred: np.ndarray, offset: int, ref_len: int, alt_len: int, seq_len: int,
            crop_bp: int, bin_bp: int = 128) -> np.ndarray:
    """Map an indel's alternative prediction onto the reference window's bins.

    Each output bin's value is spread over its 128 bases; every reference base in the predicted
    span takes the value of its counterpart in the alternative window (:func:`alt_index_of_ref`;
    a counterpart that falls outside the alternative's predicted span takes the nearest predicted
    base's value); each reference bin is the mean of its bases. Same-length alleles are returned
    unchanged.

    alt_pred: (tracks, out_bins) -> (tracks, out_bins) float32 in reference coordinates.
    """
    if ref_len == alt_len:
        return alt_pred
    out_bins = alt_pred.shape[-1]
    ref_pos = np.arange(crop_bp, crop_bp + out_bins * bin_bp)
    j = alt_index_of_ref(offset, ref_len, alt_len, ref_pos)
    alt_bin = np.clip((j - crop_bp) // bin_bp, 0, out_bins - 1)
    per_base = alt_pred[:, alt_bin].astype(np.float64)
    return per_base.reshape(alt_pred.shape[0], out_bins, bin_bp).mean(-1).astype(np.float32)
