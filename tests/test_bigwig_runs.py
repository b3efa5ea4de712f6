"""io.bigwig.write_bigwig_runs: the pybigtools writer of base-resolution tracks, and what it must
never do: publish a file after a full disk or an interrupted iteration (pybigtools only prints those)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyBigWig
import pytest

from epiformer_cli.errors import StorageError
from epiformer_cli.io import bigwig
from epiformer_cli.io.bigwig import BigWigBatch, write_bigwig_runs

SIZES = {"chr2": 100, "chr10": 50, "chrM": 16}  # the FASTA's order, not the names' order


def test_entries_read_back_and_every_chromosome_is_in_the_header(tmp_path):
    path = tmp_path / "t.bw"
    write_bigwig_runs(path, SIZES, [("chr2", np.array([1, 5, 7]), np.array([2, 7, 9]), np.array([1.5, np.nan, 3.0])),
                                    ("chrM", np.array([0]), np.array([16]), np.array([0.25]))])
    with pyBigWig.open(str(path)) as bw:
        assert bw.chroms() == SIZES
        assert bw.intervals("chr2") == ((1, 2, 1.5), (7, 9, 3.0))  # the NaN run left without data
        assert bw.intervals("chr10") == ((0, 1, 0.0),)  # no entry: a 0, so that the header names it
        assert bw.intervals("chrM") == ((0, 16, 0.25),)
    assert [p.name for p in tmp_path.iterdir()] == ["t.bw"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="a full disk is /dev/full (Linux)")
def test_a_full_disk_is_one_storage_error_and_nothing_is_left(tmp_path, monkeypatch):
    full = tmp_path / "full"
    full.symlink_to("/dev/full")
    monkeypatch.setattr(bigwig, "temporary_name", lambda path: full)
    many = [("chr2", np.arange(0, 100, 2), np.arange(1, 101, 2), np.ones(50))] * 1
    with pytest.raises(StorageError, match=r"out\.bw: no space left on the device \(ENOSPC\)"):
        write_bigwig_runs(tmp_path / "out.bw", SIZES, many)
    assert not (tmp_path / "out.bw").exists()


def test_an_interruption_while_writing_is_raised_again_and_nothing_is_published(tmp_path):
    def runs():
        yield "chr2", np.array([1]), np.array([2]), np.array([1.0])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_bigwig_runs(tmp_path / "out.bw", SIZES, runs())
    assert list(tmp_path.iterdir()) == []


def test_out_of_order_chromosomes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="out of order at chr2"):
        write_bigwig_runs(tmp_path / "out.bw", SIZES, [("chr10", np.array([1]), np.array([2]), np.array([1.0])),
                                                        ("chr2", np.array([1]), np.array([2]), np.array([1.0]))])
    assert list(tmp_path.iterdir()) == []


def test_a_batch_publishes_all_or_none(tmp_path):
    with pytest.raises(RuntimeError):
        with BigWigBatch() as batch:
            write_bigwig_runs(tmp_path / "a.bw", SIZES, [], batch=batch)
            assert not (tmp_path / "a.bw").exists()  # finished, not yet in place
            raise RuntimeError("the second one failed")
    assert list(tmp_path.iterdir()) == []
    with BigWigBatch() as batch:
        write_bigwig_runs(tmp_path / "a.bw", SIZES, [], batch=batch)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bw"]
