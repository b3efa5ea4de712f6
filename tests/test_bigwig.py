import math

import numpy as np
import pyBigWig
import pytest

from epiformer_cli.errors import ChromosomeMismatchError, InputFileError
from epiformer_cli.io.bigwig import BigWig, BigWigWriter, bin_values
from tests.helpers import write_bigwig


@pytest.fixture
def position_bw(tmp_path):
    """A bigWig whose value at base i of chr1 is i (single-base intervals), chr2 empty."""
    sizes = {"1": 300, "2": 50}
    return write_bigwig(tmp_path / "pos.bw", sizes, {"1": [(i, i + 1, i) for i in range(0, 300)]})


def test_values_equal_positions_and_pad_past_ends(position_bw):
    bw = BigWig(position_bw)
    bw.bind(["chr1", "chr2", "chr3"], "g.fa")  # genome uses chr names, the track 1/2
    np.testing.assert_array_equal(bw.values("chr1", 10, 15), [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(bw.values("chr1", 297, 302), [297, 298, 299, 0, 0])
    np.testing.assert_array_equal(bw.values("chr1", -2, 1), [0, 0, 0])
    assert np.isnan(bw.values("chr2", 0, 4, missing=math.nan)).all()  # no data there
    np.testing.assert_array_equal(bw.values("chr3", 0, 3), [0, 0, 0])  # chromosome the track lacks


def test_no_common_chromosomes(position_bw):
    with pytest.raises(ChromosomeMismatchError, match="pos.bw"):
        BigWig(position_bw).bind(["scaffold_1"], "g.fa")


def test_not_a_bigwig(tmp_path):
    junk = tmp_path / "junk.bw"
    junk.write_text("track type=bedGraph\nchr1\t0\t10\t1\n")
    with pytest.raises(InputFileError, match="not a bigWig"):
        BigWig(junk)
    with pytest.raises(InputFileError, match="not found"):
        BigWig(tmp_path / "missing.bw")


class _RecordingHandle:
    """A pyBigWig handle whose ``stats`` calls are recorded as (chrom, start, end, exact)."""

    def __init__(self, handle, sizes):
        self.handle, self.sizes, self.calls = handle, sizes, []

    def stats(self, chrom, *bounds, **kwargs):
        start, end = bounds if bounds else (0, self.sizes[chrom])
        self.calls.append((chrom, start, end, kwargs.get("exact", False)))
        return self.handle.stats(chrom, *bounds, **kwargs)

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("zooms", [0, 10])
@pytest.mark.parametrize("with_nan", [False, True])
def test_nan_check_reads_a_chromosome_in_bounded_pieces(tmp_path, monkeypatch, caplog, zooms, with_nan):
    """bind() looks for NaN values; an exact summary of a whole chromosome holds all its intervals
    in memory (12 bytes a base: 3 GB for chr1 per base), so exact reads must be bounded pieces.
    A file without zoom levels has no cheap summary at all (pyBigWig reads everything)."""
    import epiformer_cli.io.bigwig as bigwig

    monkeypatch.setattr(bigwig, "_NAN_CHECK_BP", 1_000)
    size = 3_500
    values = np.linspace(0, 1, size)
    if with_nan:
        values[2_100:2_110] = np.nan
    path = tmp_path / "cons.bw"
    handle = pyBigWig.open(str(path), "w")
    handle.addHeader([("chr1", size)], maxZooms=zooms)
    handle.addEntries("chr1", 0, values=values.tolist(), span=1, step=1)
    handle.close()
    bw = BigWig(path)
    spy = _RecordingHandle(bw._open(), bw.chrom_sizes)
    bw._handle = spy
    with caplog.at_level("WARNING"):
        bw.bind(["chr1"])
    assert ("holds NaN values" in caplog.text) == with_nan
    assert all(end - start <= 1_000 for _, start, end, exact in spy.calls if exact)
    whole = [c for c in spy.calls if (c[1], c[2]) == (0, size)]
    assert not whole or zooms  # a whole-chromosome summary only from zoom levels


def test_binning_mean_and_sum():
    values = np.arange(256, dtype=np.float32)
    # integer sums below 2**24 and a division by 128: exact in float32, in any order
    np.testing.assert_array_equal(bin_values(values, 128, "mean"), [63.5, 191.5])
    np.testing.assert_array_equal(bin_values(values, 128, "sum"), [8128, 24512])
    batch = np.stack([values, 2 * values])
    assert bin_values(batch, 128).shape == (2, 2)
    with pytest.raises(ValueError):
        bin_values(values[:200], 128)


def test_writer_round_trip_skips_nan_and_clips_last_bin(tmp_path):
    path = tmp_path / "out.bw"
    with BigWigWriter(path, {"chr1": 300, "chr2": 128}) as writer:
        writer.add_bins("chr1", 0, np.array([1.0, np.nan, 3.0]), span=128, chrom_size=300)
        writer.add_bins("chr2", 0, np.array([7.0]), span=128, chrom_size=128)
    bw = pyBigWig.open(str(path))
    assert bw.chroms() == {"chr1": 300, "chr2": 128}
    assert bw.intervals("chr1") == ((0, 128, 1.0), (256, 300, 3.0))
    assert bw.intervals("chr2") == ((0, 128, 7.0),)
    assert not list(tmp_path.glob(".*tmp*"))


def test_writer_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "out.bw"
    with pytest.raises(RuntimeError):
        with BigWigWriter(path, {"chr1": 300}) as writer:
            writer.add_bins("chr1", 0, np.array([1.0]), span=128)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_bigwig_without_any_data_reads_as_missing(tmp_path):
    """pyBigWig returns an empty array for a file with a header and no entries (was: a ValueError
    deep inside reading)."""
    from epiformer_cli.io.bigwig import BigWig
    from tests.helpers import write_bigwig

    path = write_bigwig(tmp_path / "empty.bw", {"chr1": 1000}, {})
    with BigWig(path) as bw:
        assert np.array_equal(bw.values("chr1", 10, 20), np.zeros(10, dtype=np.float32))
        assert np.isnan(bw.values("chr1", 10, 20, missing=np.nan)).all()
