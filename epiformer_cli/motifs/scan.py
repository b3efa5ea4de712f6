"""Log-odds scans of many motifs over short sequences, as FIMO (memelite) scores them: the motif a
variant sits in.

Scores. A motif's (4, L) probabilities become log-odds against a uniform background exactly as
``memelite.fimo`` makes them, ``log2(p + eps) - log2(0.25)`` per base with its pseudocount
``eps = 1e-4`` (memelite does not renormalise the columns by ``1 + 4 eps``: neither does this, so
its scores are memelite's). An instance's score is the sum of its L bases' entries, added left to
right in float64 as memelite adds them; an N base adds 0. The reverse strand is the motif's
reverse complement (``pwm[::-1, ::-1]``) scanned along the forward sequence, so an instance is
(motif, strand, start) with start on the forward strand whatever the strand.

Thresholds. An instance is a hit when its score is above the motif's threshold, FIMO's p-value
(default 1e-4) under a uniform background turned into a score exactly as memelite does it: the
entries are rounded to bins of 0.1, the distribution of the binned sum is computed exactly by
dynamic programming (:func:`score_threshold`), and the threshold is the first bin whose survival
``P(binned score >= bin)`` is below the p-value (as a float32, as memelite keeps it; a hit is a
score strictly above it). Both strands share the threshold (their columns are the same
distributions in another order).

Speed. Candidates are found in float32 by matrix products (BLAS): every window around a variant
against every motif of one length at once (:class:`MotifScanner`), and kept when within
:attr:`MotifScanner.margin` of their threshold, a bound on the float32 rounding of the products;
each candidate is then scored again exactly (float64, left to right) and only that decides. So the
results are the float64 ones whatever the batch, the BLAS or the machine.

Coordinates: 0-based. Sequences are uint8 base codes (A=0 C=1 G=2 T=3 N=4, :mod:`epiformer_cli.bases`).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.bases import N

#: memelite.fimo's pseudocount, p-value threshold and score bin (its defaults, which FIMO's are too).
FIMO_EPS = 1e-4
FIMO_PVALUE = 1e-4
FIMO_BIN = 0.1
STRANDS = ("+", "-")

#: float32 work per block of a scan (bytes): bounds the memory of the matrix products.
_BLOCK_BYTES = 64 << 20


def log_odds(pwm: np.ndarray, eps: float = FIMO_EPS) -> np.ndarray:
    """(4, L) probabilities -> (4, L) float64 log2-odds against a uniform background, exactly as
    memelite.fimo computes them: ``log2(p + eps) - log2(0.25)``."""
    return np.log2(np.asarray(pwm, dtype=np.float64) + eps) - math.log2(0.25)


def score_threshold(scores: np.ndarray, pvalue: float = FIMO_PVALUE, bin_size: float = FIMO_BIN) -> float:
    """The score an instance must exceed to have a p-value below ``pvalue`` under a uniform
    background, as memelite.fimo computes it.

    The (4, L) log-odds ``scores`` are rounded to integer multiples of ``bin_size``; the exact
    distribution of their sum over the 4^L equally likely sequences is built column by column
    (each column: four shifts of a quarter of the distribution so far); the threshold is
    ``k * bin_size`` for the smallest bin ``k`` with ``P(binned sum >= k) < pvalue`` (one past the
    largest sum when none is), rounded to float32 as memelite stores it.

    Returns:
        the threshold as a float64 (holding a float32 value).
    """
    ints = np.round(np.asarray(scores, dtype=np.float64) / bin_size).astype(np.int64)
    lows, highs = ints.min(axis=0), ints.max(axis=0)
    size = int(highs.sum() - lows.sum()) + 1
    pmf = np.zeros(size)
    pmf[0] = 1.0
    width = 1  # bins in use, from the sum of the lows so far
    for j in range(ints.shape[1]):
        step = np.zeros(size)
        for b in range(4):
            shift = int(ints[b, j] - lows[j])
            step[shift:shift + width] += 0.25 * pmf[:width]
        width += int(highs[j] - lows[j])
        pmf = step
    survival = np.cumsum(pmf[::-1])[::-1]  # P(sum >= low + i), summed from the top
    passing = np.flatnonzero(survival < pvalue)
    first = int(passing[0]) if passing.size else size  # past the largest sum: nothing reaches it
    k = int(lows.sum()) + first
    return float(np.float32(k * bin_size))


@dataclass
class MotifHit:
    """The strongest motif instance overlapping one variant.

    Attributes:
        motif: index of the motif in the scanner's list; label: ``ID (NAME)``.
        strand: ``+`` (the motif as stored) or ``-`` (its reverse complement) on the forward strand.
        offset: the instance's first base relative to the variant's first changed base (bp;
            negative: it starts before the variant).
        ref_score, alt_score: log2-odds scores of the same instance in the reference and the
            alternative sequence (float64, memelite's scores).
    """

    motif: int
    label: str
    strand: str
    offset: int
    ref_score: float
    alt_score: float


#: the 12 single-base substitutions (ref, alt), both in ACGT: ``_PAIRS[ref, alt]`` is the one-hot
#: channel of the pair (-1 for ref == alt or an N, which take the general path).
_PAIRS = np.full((5, 5), -1, dtype=np.int64)
_PAIRS[[r for r in range(4) for a in range(4) if r != a],
       [a for r in range(4) for a in range(4) if r != a]] = np.arange(12)


@dataclass
class _Bucket:
    """The motif-strands of one length L and their float32 matrices.

    Attributes:
        strands: (S,) motif-strand indices (``2 * motif + strand``), ascending.
        columns: (4 L, S) log-odds, row ``base * L + j``: one window's one-hot (as :func:`_windows`
            lays it out) -> its scores.
        snv: per window position p (0 .. L-1: the window starts L - 1 - p bases before a
            substituted base, which is its column L - 1 - p), (4 (L - 1) + 12, S): rows for the
            one-hot of the window's L - 1 - p bases left of the substitution, 12 for its (ref, alt)
            pair (:data:`_PAIRS`), then its p bases right of it; it gives ``max(ref score, alt
            score) - threshold`` in one product.
        thresholds: (S,) float64.
    """

    length: int
    strands: np.ndarray
    columns: np.ndarray
    snv: List[np.ndarray]
    thresholds: np.ndarray


class MotifScanner:
    """Motifs ready to scan: log-odds, thresholds and the float32 matrices of every length.

    Args:
        motifs: :class:`~epiformer_cli.motifs.database.Motif` objects ((4, L) probabilities).
        pvalue: FIMO's p-value threshold of an instance; eps, bin_size: memelite's pseudocount
            and score bin (their defaults make memelite.fimo's hits).
        batch: variants per block of :meth:`strongest`: a block holds (batch, 8 F + 12) float32
            inputs and (batch, motif-strands of one length) scores at a time, a few MB for JASPAR's
            vertebrates (an indel block holds its windows: (batch x offsets, 4 L)).
        threads: blocks scanned at once (default: the CPUs this process may use, at most 4), each
            with a single-threaded BLAS: OpenBLAS's own threads cost 4-10 times the CPU time on
            these narrow products, and far more on a busy machine (measured in
            benchmarks/bench_motif_scan.py).
    """

    def __init__(self, motifs: Sequence, pvalue: float = FIMO_PVALUE, eps: float = FIMO_EPS,
                 bin_size: float = FIMO_BIN, batch: int = 2048, threads: Optional[int] = None) -> None:
        if not motifs:
            raise ValueError("no motifs to scan")
        self.motifs = list(motifs)
        self.labels = [m.label for m in self.motifs]
        self.pvalue, self.eps, self.bin_size, self.batch = pvalue, eps, bin_size, int(batch)
        self.threads = int(threads) if threads else min(4, _cpus())
        scores = [log_odds(m.pwm, eps) for m in self.motifs]
        self.lengths = np.array([s.shape[1] for s in scores], dtype=np.int64)
        self.max_length = int(self.lengths.max())
        #: bases either side of a variant that every instance overlapping it can reach.
        self.flank = self.max_length - 1
        self.thresholds = np.array([score_threshold(s, pvalue, bin_size) for s in scores])
        # motif-strand k = 2 m + s: forward, then the reverse complement as memelite makes it
        strand_scores = [x for s in scores for x in (s, s[::-1, ::-1])]
        self._strand_lengths = np.repeat(self.lengths, 2)
        self._strand_thresholds = np.repeat(self.thresholds, 2)
        # exact tables: (motif-strands, max L, 5) with N (and columns past L) adding +0.0
        self._exact = np.zeros((len(strand_scores), self.max_length, 5))
        for k, s in enumerate(strand_scores):
            self._exact[k, :s.shape[1], :4] = s.T
        self._buckets = [self._bucket(L, strand_scores) for L in sorted(set(self.lengths.tolist()))]
        self.margin = self._rounding_margin(strand_scores)

    def _bucket(self, L: int, strand_scores: List[np.ndarray]) -> _Bucket:
        strands = np.flatnonzero(self._strand_lengths == L)
        S = len(strands)
        w = np.stack([strand_scores[k] for k in strands])  # (S, 4, L)
        thresholds = self._strand_thresholds[strands]
        columns = np.ascontiguousarray(w.transpose(1, 2, 0).reshape(4 * L, S), dtype=np.float32)
        rows = w.transpose(2, 1, 0)  # (L, 4, S): column j's four rows
        pair_r, pair_a = np.nonzero(_PAIRS >= 0)
        snv = []
        for p in range(L):
            j = L - 1 - p
            centre = np.maximum(w[:, pair_r, j], w[:, pair_a, j]).T - thresholds  # (12, S), rows by _PAIRS
            centre = centre[np.argsort(_PAIRS[pair_r, pair_a])]
            snv.append(np.ascontiguousarray(np.concatenate([rows[:j].reshape(-1, S), centre,
                                                            rows[j + 1:].reshape(-1, S)]), dtype=np.float32))
        return _Bucket(L, strands, columns, snv, thresholds)

    def _rounding_margin(self, strand_scores: List[np.ndarray]) -> float:
        """How far below its threshold a float32 candidate is still kept: twice the bound on the
        rounding of a float32 sum of an instance's terms (each entry rounded to float32, then its
        L terms and the threshold added in any order: within ``(L + 3) * 2^-24 * sum |terms|``),
        so no instance whose float64 score passes is dropped. 0.0008 for JASPAR's vertebrates."""
        worst = 0.0
        for k, s in enumerate(strand_scores):
            largest = float(np.abs(s).max(axis=0).sum()) + abs(self._strand_thresholds[k]) + float(np.abs(s).max())
            worst = max(worst, (s.shape[1] + 3) * 2.0 ** -24 * largest)
        return 2 * worst + 1e-6

    # ---- exact scores ------------------------------------------------------------------------
    def exact_scores(self, codes: np.ndarray, rows: np.ndarray, strands: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Float64 scores of instances, added left to right as memelite adds them.

        Args:
            codes: (n, W) uint8 sequences; rows, strands, starts: (k,) each instance's sequence,
                motif-strand (``2 * motif + strand``) and first base (0-based, in its sequence).
        Returns (k,) float64.
        """
        total = np.zeros(len(rows))
        last = codes.shape[1] - 1
        lengths = self._strand_lengths[strands]
        for j in range(self.max_length):
            inside = j < lengths
            if not inside.any():
                break
            bases = codes[rows, np.minimum(starts + j, last)]
            total += np.where(inside, self._exact[strands, j, bases], 0.0)
        return total

    # ---- variants ---------------------------------------------------------------------------
    def strongest(self, ref: np.ndarray, alt: np.ndarray, span: np.ndarray) -> List[Optional[MotifHit]]:
        """The strongest instance overlapping each variant, in its reference or its alternative.

        The convention: a variant's changed bases (REF and ALT without the bases they share)
        start at column F = :attr:`flank` of both sequences and take ``span = max(len REF,
        len ALT)`` columns of the longer allele; the shorter allele reads on into its right flank,
        so both sequences have ``2 F + span`` meaningful columns (pad with N past them). An
        instance is (motif, strand, offset) with offset its first base relative to column F,
        ``-L + 1 <= offset <= span - 1`` (it overlaps the changed columns); it is scored at that
        offset in both sequences (for an indel the same offset is the same position before the
        variant and the same distance into the other allele's sequence after it). It counts when
        its score passes the motif's threshold in either allele; the strongest is the one of
        largest ``max(ref score, alt score)``, ties to the earlier motif, then ``+``, then the
        smaller offset.

        Args:
            ref, alt: (n, W) uint8 codes, W >= 2 F + max(span).
            span: (n,) changed columns per variant (0: nothing changes, no instance).
        Returns one :class:`MotifHit` or None per variant.
        """
        ref, alt = np.asarray(ref, dtype=np.uint8), np.asarray(alt, dtype=np.uint8)
        span = np.asarray(span, dtype=np.int64)
        n = len(span)
        if ref.shape != alt.shape or len(ref) != n:
            raise ValueError(f"ref {ref.shape}, alt {alt.shape} and span ({n},) disagree")
        if n and ref.shape[1] < 2 * self.flank + int(span.max()):
            raise ValueError(f"sequences of {ref.shape[1]} bases are shorter than 2 x {self.flank} + the "
                             f"longest span ({int(span.max())})")
        out: List[Optional[MotifHit]] = [None] * n
        size = max(1, min(self.batch, -(-n // self.threads)))
        firsts = list(range(0, n, size))

        def block(first: int) -> Dict[int, MotifHit]:
            rows = slice(first, first + size)
            return self._strongest_block(ref[rows], alt[rows], span[rows])

        with _one_blas_thread():
            if self.threads > 1 and len(firsts) > 1:
                with ThreadPoolExecutor(min(self.threads, len(firsts))) as pool:
                    found = list(pool.map(block, firsts))
            else:
                found = [block(first) for first in firsts]
        for first, hits in zip(firsts, found):
            for i, hit in hits.items():
                out[first + i] = hit
        return out

    def _strongest_block(self, ref: np.ndarray, alt: np.ndarray, span: np.ndarray) -> Dict[int, MotifHit]:
        F = self.flank
        differs = ref[:, :2 * F + 1] != alt[:, :2 * F + 1]
        snv = ((span == 1) & ~differs[:, :F].any(axis=1) & ~differs[:, F + 1:].any(axis=1)
               & (_PAIRS[np.minimum(ref[:, F], N), np.minimum(alt[:, F], N)] >= 0))
        found: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, motif-strands, offsets)
        rows = np.flatnonzero(snv)
        if rows.size:
            found.append(self._snv_candidates(ref[rows], alt[rows, F], rows))
        rest = np.flatnonzero(~snv & (span > 0))
        # the rest in groups of spans up to a power of two (a few products per offset, never more
        # than twice the offsets a variant needs)
        bands = np.ceil(np.log2(span[rest])).astype(np.int64) if rest.size else rest
        for band in np.unique(bands):
            group = rest[bands == band]
            longest = int(span[group].max())
            step = max(1, _BLOCK_BYTES // (32 * (2 * F + longest)))  # two float32 one-hot copies of a row
            for first in range(0, len(group), step):
                rows = group[first:first + step]
                found.append(self._window_candidates(ref[rows], alt[rows], span[rows], rows))
        if not found:
            return {}
        rows = np.concatenate([f[0] for f in found])
        strands = np.concatenate([f[1] for f in found])
        offsets = np.concatenate([f[2] for f in found])
        if not rows.size:
            return {}
        starts = F + offsets
        ref_scores = self.exact_scores(ref, rows, strands, starts)
        alt_scores = self.exact_scores(alt, rows, strands, starts)
        threshold = self._strand_thresholds[strands]
        passing = (ref_scores > threshold) | (alt_scores > threshold)
        rows, strands, offsets = rows[passing], strands[passing], offsets[passing]
        ref_scores, alt_scores = ref_scores[passing], alt_scores[passing]
        strength = np.maximum(ref_scores, alt_scores)
        order = np.lexsort((offsets, strands, -strength, rows))  # per row: strongest, then the tie rules
        best = order[np.r_[True, rows[order][1:] != rows[order][:-1]]] if order.size else order
        return {int(rows[k]): MotifHit(int(strands[k]) // 2, self.labels[int(strands[k]) // 2],
                                       STRANDS[int(strands[k]) % 2], int(offsets[k]),
                                       float(ref_scores[k]), float(alt_scores[k])) for k in best}

    def _snv_candidates(self, ref: np.ndarray, alt_base: np.ndarray, rows: np.ndarray):
        """Single-base substitutions of one ACGT base by another: per length and window position,
        one product gives ``max(ref, alt) - threshold`` of every motif-strand (see :class:`_Bucket`);
        those above ``-margin`` are candidates. The windows are column ranges of one (n, 8 F + 12)
        one-hot matrix, so nothing is copied per window."""
        F = self.flank
        n = len(ref)
        eye = _one_hot_table()
        pairs = np.zeros((n, 12), dtype=np.float32)
        pairs[np.arange(n), _PAIRS[ref[:, F], alt_base]] = 1.0
        x = np.concatenate([eye[ref[:, :F]].reshape(n, 4 * F), pairs,
                            eye[ref[:, F + 1:2 * F + 1]].reshape(n, 4 * F)], axis=1)
        out_rows, out_strands, out_offsets = [], [], []
        for b in self._buckets:
            L = b.length
            for p, weights in enumerate(b.snv):
                margin = x[:, 4 * (F - L + 1 + p):4 * F + 12 + 4 * p] @ weights  # (n, S)
                r, c = np.divmod(np.flatnonzero(margin > -self.margin), len(b.strands))  # flat: 2-D is 8x slower
                out_rows.append(rows[r])
                out_strands.append(b.strands[c])
                out_offsets.append(np.full(len(r), p - (L - 1)))
        return _joined(out_rows, out_strands, out_offsets)

    def _window_candidates(self, ref: np.ndarray, alt: np.ndarray, spans: np.ndarray, rows: np.ndarray):
        """Everything else (indels, longer substitutions, N), ``spans`` changed columns each: per
        length, every overlapping window of both sequences (copied side by side, one product for
        all of them) through the (4 L, S) weights; offsets past a variant's own span are dropped."""
        F = self.flank
        longest = int(spans.max())
        out_rows, out_strands, out_offsets = [], [], []
        for b in self._buckets:
            L, S = b.length, len(b.strands)
            P = L + longest - 1  # offsets -L+1 .. longest-1
            margin = None
            for seq in (ref, alt):
                windows = _windows(seq[:, F - L + 1:F + longest + L - 1], L)  # (n P, 4 L)
                scores = windows @ b.columns
                margin = scores if margin is None else np.maximum(margin, scores, out=margin)
            margin -= b.thresholds.astype(np.float32)
            r, c = np.divmod(np.flatnonzero(margin > -self.margin), S)
            variant, offset = np.divmod(r, P)
            offset -= L - 1
            keep = offset < spans[variant]
            out_rows.append(rows[variant[keep]])
            out_strands.append(b.strands[c[keep]])
            out_offsets.append(offset[keep])
        return _joined(out_rows, out_strands, out_offsets)

    # ---- whole sequences (FIMO) -----------------------------------------------------------------
    def scan(self, codes: np.ndarray) -> Dict[str, np.ndarray]:
        """Every hit of every motif on both strands of one sequence, as memelite.fimo finds them.

        Args:
            codes: (length,) uint8 bases.
        Returns arrays ``motif``, ``strand`` (0 ``+``, 1 ``-``), ``start`` (0-based, forward
        strand; the instance is ``[start, start + L)``) and ``score`` (float64), ordered by
        motif, strand, start.
        """
        codes = np.asarray(codes, dtype=np.uint8)
        found_rows, found_strands = [], []
        for b in self._buckets:
            L, S = b.length, len(b.strands)
            if len(codes) < L:
                continue
            step = max(1, _BLOCK_BYTES // (4 * max(4 * L, S)))
            for first in range(0, len(codes) - L + 1, step):
                part = codes[first:min(len(codes), first + step + L - 1)]
                scores = _windows(part[None], L) @ b.columns
                r, c = np.divmod(np.flatnonzero(scores - b.thresholds.astype(np.float32) > -self.margin), S)
                found_rows.append(first + r)
                found_strands.append(b.strands[c])
        starts = np.concatenate(found_rows) if found_rows else np.zeros(0, dtype=np.int64)
        strands = np.concatenate(found_strands) if found_strands else np.zeros(0, dtype=np.int64)
        scores = self.exact_scores(codes[None], np.zeros(len(starts), dtype=np.int64), strands, starts)
        keep = scores > self._strand_thresholds[strands]
        starts, strands, scores = starts[keep], strands[keep], scores[keep]
        order = np.lexsort((starts, strands))
        return {"motif": strands[order] // 2, "strand": strands[order] % 2, "start": starts[order],
                "score": scores[order]}


def _cpus() -> int:
    """The CPUs this process may use (affinity and cgroup quota)."""
    from epiformer_cli.threads import usable_cpus

    return usable_cpus().cpus


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread (threadpoolctl, when installed; else as it is): the scan runs
    its blocks in threads of its own."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _one_hot_table() -> np.ndarray:
    """(5, 4) float32: base code -> one-hot; N (4) -> all zero, so it adds nothing."""
    table = np.zeros((5, 4), dtype=np.float32)
    table[np.arange(4), np.arange(4)] = 1.0
    return table


def _windows(codes: np.ndarray, L: int) -> np.ndarray:
    """Every window of L bases of each row, one-hot, side by side: (n, W) codes -> (n (W - L + 1),
    4 L) float32, column ``base * L + j`` (N: all zero)."""
    one_hot = np.stack([codes == base for base in range(4)], axis=1).astype(np.float32)  # (n, 4, W)
    windows = np.lib.stride_tricks.sliding_window_view(one_hot, L, axis=2)  # (n, 4, P, L)
    return np.ascontiguousarray(windows.transpose(0, 2, 1, 3)).reshape(-1, 4 * L)


def _joined(rows: List[np.ndarray], strands: List[np.ndarray], offsets: List[np.ndarray]):
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(rows).astype(np.int64) if rows else empty,
            np.concatenate(strands).astype(np.int64) if strands else empty,
            np.concatenate(offsets).astype(np.int64) if offsets else empty)


def strand_index(motif: int, strand: str) -> int:
    """``2 * motif + (0 for + , 1 for -)``: the motif-strand numbering of :class:`MotifScanner`."""
    return 2 * motif + STRANDS.index(strand)
