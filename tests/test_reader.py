"""Reading model inputs a batch at a time: the same windows as single reads, and no read (so no
array) larger than a batch, however long the chromosome or the group of windows."""

from __future__ import annotations

import numpy as np
import pytest

from epiformer_cli.inference.reader import WindowReader, read_batches
from epiformer_cli.io.bigwig import BigWig
from epiformer_cli.io.genome import Genome
from tests.helpers import write_bigwig, write_fasta

WINDOW, STEP = 64, 48  # a window and the tiling's step: consecutive windows overlap by 16 bp
SIZES = {"chr1": 3_000, "chr2": 700}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reader")
    rng = np.random.default_rng(3)
    seqs = {c: "".join(rng.choice(list("ACGTN"), n)) for c, n in SIZES.items()}
    fasta = write_fasta(folder / "g.fa", seqs)
    cons = write_bigwig(folder / "c.bw", SIZES, {c: [(s, s + 7, float(rng.random())) for s in range(0, n - 7, 11)]
                                                 for c, n in SIZES.items()})
    genome = Genome(fasta)
    track = BigWig(cons, value_range=(0.0, 1.0))
    track.bind(genome.chroms)
    return genome, track


class _Spy:
    """A reader whose reads are recorded: (chrom, start, end) of each."""

    def __init__(self, reader: WindowReader):
        self.inner, self.context, self.reads = reader, reader.context, []

    def read(self, chrom, start, end):
        self.reads.append((chrom, start, end))
        return self.inner.read(chrom, start, end)


def _groups():
    """Consecutive tiling windows (running off both ends), a sparse and repeated set, another chromosome."""
    tiling = [-8 + STEP * i for i in range(-(-SIZES["chr1"] // STEP) + 1)]
    return [("a", "chr1", tiling), ("b", "chr1", [40, 40, 1_000, 2_900, 500]), ("c", "chr2", tiling[:15])]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("context", [0, 5])
def test_batches_are_the_windows_and_no_read_is_longer_than_a_batch(files, batch_size, context):
    genome, track = files
    spy = _Spy(WindowReader(genome, track, context))
    groups = _groups()
    length = WINDOW + 2 * context
    rows = []
    for meta, codes, cons in read_batches(spy, groups, batch_size, WINDOW):
        assert 0 < len(codes) <= batch_size and codes.shape == cons.shape == (len(codes), length)
        assert codes.dtype == np.uint8 and cons.dtype == np.float32
        # arrays of their own: a queued batch keeps nothing larger alive
        assert codes.base is None and cons.base is None
        assert sum(count for _, _, count in meta) == len(codes)
        row = 0
        for key, first, count in meta:
            rows += [(key, first + j, codes[row + j], cons[row + j]) for j in range(count)]
            row += count
    by_key = {key: (chrom, starts) for key, chrom, starts in groups}
    assert [(k, i) for k, i, _, _ in rows] == [(k, i) for k, _, s in groups for i in range(len(s))]
    single = WindowReader(genome, track, context)
    for key, i, codes, cons in rows:
        chrom, starts = by_key[key]
        want_codes, want_cons = single.windows(chrom, [starts[i]], WINDOW)
        np.testing.assert_array_equal(codes, want_codes[0])
        np.testing.assert_array_equal(cons, want_cons[0])
    assert max(end - start for _, start, end in spy.reads) <= batch_size * length


def test_a_long_group_is_read_in_batch_sized_pieces(files):
    """One group of every window of a chromosome (as a store chunk is): read per batch, never whole."""
    genome, track = files
    spy = _Spy(WindowReader(genome, track, 0))
    tiling = [STEP * i for i in range(SIZES["chr1"] // STEP)]
    n = sum(len(codes) for _, codes, _ in read_batches(spy, [("all", "chr1", tiling)], 4, WINDOW))
    assert n == len(tiling)
    assert len(spy.reads) == -(-len(tiling) // 4)
    # consecutive windows of a batch are one read: the batch's span, not four windows
    assert max(end - start for _, start, end in spy.reads) == 3 * STEP + WINDOW


def test_batch_size_must_be_positive(files):
    genome, track = files
    with pytest.raises(ValueError):
        next(read_batches(WindowReader(genome, track), [("a", "chr1", [0])], 0, WINDOW))
