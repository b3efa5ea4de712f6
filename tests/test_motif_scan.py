"""Motif scans: memelite.fimo's thresholds and hits exactly, and the strongest instance a variant
overlaps against a brute-force enumeration (SNVs, indels, N bases), at any batch or thread count."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from epiformer_cli.bases import COMPLEMENT
from epiformer_cli.motifs.database import Motif
from epiformer_cli.motifs.scan import MotifScanner, log_odds, score_threshold


def random_motifs(seed: int, n: int, lengths=(4, 18), alpha=0.4):
    rng = np.random.default_rng(seed)
    return [Motif(f"m{i}", f"TF{i}" if i % 2 else "", rng.dirichlet([alpha] * 4, size=int(rng.integers(*lengths))).T)
            for i in range(n)]


# ---- thresholds -----------------------------------------------------------------------------------
def test_threshold_of_hand_made_motifs():
    # one column A: bins 20 (A, 1/4) and -113 (C, G, T): P(score >= 2.0) = 1/4 is never below 1e-4,
    # so the threshold is one bin past the best score and nothing hits
    assert score_threshold(log_odds(np.array([[1.0], [0], [0], [0]]))) == float(np.float32(2.1))
    # two columns of 0.97 A: bins 20 and -46 each; sums 40 (1/16), -26 (6/16), -92 (9/16);
    # P(sum >= k) = 1/16 < 0.1 from k = -25 on
    pwm = np.array([[0.97, 0.97], [0.01, 0.01], [0.01, 0.01], [0.01, 0.01]])
    assert np.round(log_odds(pwm) / 0.1)[:, 0].tolist() == [20, -46, -46, -46]
    assert score_threshold(log_odds(pwm), pvalue=0.1) == float(np.float32(-2.5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_equals_an_enumeration_of_every_sequence(seed):
    for motif in random_motifs(seed, 4, lengths=(3, 8)):
        scores = log_odds(motif.pwm)
        ints = np.round(scores / 0.1).astype(int)
        L = ints.shape[1]
        sums = np.array([sum(ints[b, j] for j, b in enumerate(seq)) for seq in itertools.product(range(4), repeat=L)])
        for pvalue in (1e-4, 1e-3, 0.05):
            passing = [k for k in range(sums.min(), sums.max() + 2) if np.mean(sums >= k) < pvalue]
            assert score_threshold(scores, pvalue) == float(np.float32(passing[0] * 0.1))


# ---- whole sequences against memelite.fimo ---------------------------------------------------------
@pytest.mark.parametrize("pvalue, at_least", [(1e-4, 80), (1e-3, 800)])
def test_hits_on_20kb_are_memelites(pvalue, at_least):
    fimo = pytest.importorskip("memelite.fimo")
    motifs = random_motifs(3, 40, lengths=(5, 22))
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 4, 20_000).astype(np.uint8)
    codes[1000:1030] = 4  # an N run: it adds 0, as in memelite
    codes[5000:5012] = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]
    scanner = MotifScanner(motifs, pvalue=pvalue)
    ours = scanner.scan(codes)
    one_hot = np.zeros((1, 4, len(codes)), dtype=np.float32)
    known = codes < 4
    one_hot[0, codes[known], np.flatnonzero(known)] = 1
    frames = fimo.fimo({m.motif_id: m.pwm for m in motifs}, one_hot, threshold=pvalue)
    theirs = {(i, "+-".index(row.strand), int(row.start)): row.score for i, frame in enumerate(frames)
              for row in frame.itertuples()}
    mine = {(int(m), int(s), int(t)): v
            for m, s, t, v in zip(ours["motif"], ours["strand"], ours["start"], ours["score"])}
    assert len(theirs) > at_least
    # memelite adds with fastmath (any order): a hit within rounding of its threshold may go either way
    on_edge = {k for k in set(mine) ^ set(theirs)
               if abs((mine.get(k) or theirs.get(k)) - scanner.thresholds[k[0]]) < 1e-9}
    assert set(mine) ^ set(theirs) == on_edge
    assert max(abs(mine[k] - theirs[k]) for k in set(mine) & set(theirs)) < 1e-9
    # the threshold is memelite's too: just below it nothing is reported, just above it is
    for m in range(len(motifs)):
        scores = [v for (i, _, _), v in theirs.items() if i == m]
        if scores:
            assert min(scores) > scanner.thresholds[m]


def test_reverse_complement_of_a_sequence_mirrors_its_hits():
    motifs = random_motifs(4, 12)
    scanner = MotifScanner(motifs, pvalue=1e-3)
    codes = np.random.default_rng(6).integers(0, 4, 3000).astype(np.uint8)
    forward = scanner.scan(codes)
    backward = scanner.scan(COMPLEMENT[codes[::-1]])
    lengths = scanner.lengths
    a = {(int(m), int(s), int(t)): v for m, s, t, v in zip(*forward.values())}
    b = {(int(m), 1 - int(s), len(codes) - int(t) - int(lengths[m])): v for m, s, t, v in zip(*backward.values())}
    assert len(a) > 20 and set(a) == set(b)
    assert all(a[k] == pytest.approx(b[k], abs=1e-9) for k in a)


# ---- variants ------------------------------------------------------------------------------------
def brute_force(motifs, thresholds, flank, ref, alt, span):
    """Every instance overlapping the variant, scored base by base: the strongest passing one."""
    best = None
    for m, motif in enumerate(motifs):
        scores = log_odds(motif.pwm)
        L = scores.shape[1]
        for strand, matrix in enumerate((scores, scores[::-1, ::-1])):
            for offset in range(-L + 1, span):
                def score(seq):
                    return sum(matrix[seq[flank + offset + j], j] if seq[flank + offset + j] < 4 else 0.0
                               for j in range(L))
                r, a = score(ref), score(alt)
                if r > thresholds[m] or a > thresholds[m]:
                    key = (-max(r, a), m, strand, offset)
                    if best is None or key < best[0]:
                        best = (key, (m, "+-"[strand], offset, r, a))
    return None if best is None else best[1]


def random_variants(flank, n, seed):
    """(ref, alt, span) of SNVs, deletions and insertions of 1-4 bases, some with N."""
    rng = np.random.default_rng(seed)
    width = 2 * flank + 4
    refs, alts, spans = [], [], []
    for _ in range(n):
        seq = rng.integers(0, 4, width + 8).astype(np.uint8)
        if rng.random() < 0.1:
            seq[rng.integers(0, width)] = 4
        kind = rng.integers(0, 4)
        if kind < 2:
            ref, alt, span = seq.copy(), seq.copy(), 1
            alt[flank] = (seq[flank] + rng.integers(1, 4)) % 4 if seq[flank] < 4 else 2
        elif kind == 2:
            span = int(rng.integers(1, 5))
            ref, alt = seq, np.concatenate([seq[:flank], seq[flank + span:]])
        else:
            span = int(rng.integers(1, 5))
            ref, alt = seq, np.concatenate([seq[:flank], rng.integers(0, 4, span).astype(np.uint8), seq[flank:]])
        refs.append(ref[:width])
        alts.append(alt[:width])
        spans.append(span)
    return np.array(refs), np.array(alts), np.array(spans)


def test_strongest_instance_equals_brute_force_on_snvs_indels_and_n():
    motifs = random_motifs(7, 16)
    scanner = MotifScanner(motifs, pvalue=2e-3)
    ref, alt, span = random_variants(scanner.flank, 160, seed=8)
    got = scanner.strongest(ref, alt, span)
    expected = [brute_force(motifs, scanner.thresholds, scanner.flank, r, a, s) for r, a, s in zip(ref, alt, span)]
    assert 20 < sum(e is None for e in expected) < 140  # both kinds of answer are tested
    for hit, want in zip(got, expected):
        if want is None:
            assert hit is None
            continue
        m, strand, offset, r, a = want
        assert (hit.motif, hit.label, hit.strand, hit.offset) == (m, motifs[m].label, strand, offset)
        assert hit.ref_score == pytest.approx(r, abs=1e-12) and hit.alt_score == pytest.approx(a, abs=1e-12)


def test_strongest_is_the_same_at_any_batch_and_thread_count_and_symmetric_in_the_alleles():
    motifs = random_motifs(9, 30)
    ref, alt, span = random_variants(MotifScanner(motifs).flank, 400, seed=10)
    whole = MotifScanner(motifs, batch=4096, threads=1).strongest(ref, alt, span)
    pieces = MotifScanner(motifs, batch=7, threads=3).strongest(ref, alt, span)
    assert whole == pieces and sum(h is not None for h in whole) > 30
    swapped = MotifScanner(motifs).strongest(alt, ref, span)
    for a, b in zip(whole, swapped):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a.motif, a.strand, a.offset) == (b.motif, b.strand, b.offset)
            assert (a.ref_score, a.alt_score) == (b.alt_score, b.ref_score)


def test_a_planted_site_and_its_substitution_score_as_the_hand_sums():
    pwm = np.full((4, 8), 0.1)
    consensus = [2, 0, 3, 3, 0, 1, 0, 2]  # GATTACAG: P(site) = 4^-8 < 1e-4 < P(7 of its bases) = 25 / 4^8
    pwm[consensus, range(8)] = 0.7
    scanner = MotifScanner([Motif("M1", "TF", pwm)])
    F = scanner.flank
    assert F == 7
    ref = np.full(2 * F + 1, 4, dtype=np.uint8)  # N around: only the site scores
    ref[F - 2:F + 6] = consensus  # the variant is the site's third base (offset -2)
    alt = ref.copy()
    alt[F] = 1
    [hit] = scanner.strongest(ref[None], alt[None], np.array([1]))
    c, o = math.log2(0.7 + 1e-4) + 2, math.log2(0.1 + 1e-4) + 2
    assert (hit.label, hit.strand, hit.offset) == ("M1 (TF)", "+", -2)
    assert hit.ref_score == pytest.approx(8 * c, abs=1e-12) and hit.alt_score == pytest.approx(7 * c + o, abs=1e-12)
    assert 7 * c + o < scanner.thresholds[0] < 8 * c  # it passes in the reference only
    # the reverse complement of the site is found on the - strand, where its first base now is
    rc_ref, rc_alt = COMPLEMENT[ref[::-1]], COMPLEMENT[alt[::-1]]
    [hit] = scanner.strongest(rc_ref[None], rc_alt[None], np.array([1]))
    assert (hit.strand, hit.offset) == ("-", (2 * F + 1) - (F + 6) - F)
    assert hit.ref_score == pytest.approx(8 * c, abs=1e-12)
    # nothing changes (span 0), or no site: no instance
    assert scanner.strongest(ref[None], ref[None], np.array([0])) == [None]
    lone, other = np.full_like(ref, 4), np.full_like(ref, 4)
    lone[F], other[F] = 0, 1  # one base of the site alone does not pass
    assert scanner.strongest(lone[None], other[None], np.array([1])) == [None]
    with pytest.raises(ValueError, match="shorter than"):
        scanner.strongest(ref[None, :-1], alt[None, :-1], np.array([1]))
