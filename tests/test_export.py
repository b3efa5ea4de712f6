"""`export-bigwig`: prediction stores (complete, sharded, incomplete) and prepared training stores."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.data.prediction_store import PredictionStore
from epiformer_cli.jobs.export import export_bigwig, output_paths
from tests.helpers import write_bigwig, write_fasta
from tests.helpers import FAST, SIZES, TRACKS, predict, predict_inputs, read_bw


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return predict_inputs(tmp_path_factory.mktemp("export-inputs"))


@pytest.fixture
def shard_2_missing(inputs, tmp_path):
    """A store from shards 1/3 and 3/3 only (shard 2/3 never ran)."""
    store = tmp_path / "store"
    for i in (0, 2):
        predict(**inputs, store=store, shard=f"{i + 1}/3", **FAST)
    return store


def test_incomplete_store_is_refused_with_the_missing_chunks_and_shards(shard_2_missing, tmp_path):
    result = CliRunner().invoke(app, ["export-bigwig", str(shard_2_missing), "--out", str(tmp_path / "x.bw")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "2 of 6 chunks are missing" in lines[0] and "shard(s) 2/3" in lines[0]
    assert "chr1:24576-49152 (chunk 1)" in lines[0] and "--allow-missing" in lines[0]
    assert not list(tmp_path.glob("x*.bw"))


def test_allow_missing_leaves_missing_bins_absent_never_zero(inputs, shard_2_missing, tmp_path):
    summary = export_bigwig(store=shard_2_missing, out=tmp_path / "x.bw", allow_missing=True)
    assert summary.missing_chunks == 2
    whole = predict(**inputs, out=tmp_path / "whole.bw", **FAST)
    store = PredictionStore(shard_2_missing)
    missing = {(c.chrom, c.index) for c in store.missing()}
    assert missing == {("chr1", 1), ("chr2", 1)}  # chunk order: chr1 0,1,2, chr2 0,1, chrM 0
    for track in TRACKS:
        got, ref = read_bw(summary.outputs[track]), read_bw(whole.outputs[track])
        starts, _, values = got["chr1"]
        present = (starts < 24_576) | (starts >= 49_152)
        assert present.all()  # no bin of the missing chunk written, not even as zero
        np.testing.assert_array_equal(values, ref["chr1"][2][np.arange(len(ref["chr1"][0]))[
            (ref["chr1"][0] < 24_576) | (ref["chr1"][0] >= 49_152)]])
        assert got["chr2"][0].max() < 24_576 and len(got["chrM"][0]) == 1


def test_export_selected_track_and_naming(inputs, tmp_path):
    predict(**inputs, out=tmp_path / "p.bw",
                   chroms=["chr2"], **FAST)
    result = CliRunner().invoke(app, ["export-bigwig", str(tmp_path / ".p.bw.store"), "--out",
                                      str(tmp_path / "only.bw"), "--tracks", "OPC"])
    assert result.exit_code == 0, result.output
    assert read_bw(tmp_path / "only.bw")["header"] == list(SIZES.items())
    a, b = read_bw(tmp_path / "only.bw"), read_bw(tmp_path / "p.OPC.bw")
    np.testing.assert_array_equal(a["chr2"][2], b["chr2"][2])
    bad = CliRunner().invoke(app, ["export-bigwig", str(tmp_path / ".p.bw.store"), "--out",
                                   str(tmp_path / "x.bw"), "--tracks", "NOPE"])
    assert bad.exit_code == 2 and "NOPE" in bad.output
    assert output_paths(tmp_path / "pred.bigWig", ["a/b", "c"])["a/b"].name == "pred.a_b.bigWig"


def test_not_a_store_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["export-bigwig", str(tmp_path), "--out", str(tmp_path / "x.bw")])
    assert result.exit_code == 1 and "not a store" in result.output


def test_exports_a_prepared_stores_targets(tmp_path):
    from epiformer_cli.data.training_store import TrainingStore
    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.options import PrepareOptions

    sizes = {"chr1": 2048, "chr8": 1024, "chr9": 1000}
    rng = np.random.default_rng(0)
    fasta = write_fasta(tmp_path / "g.fa", {c: "".join(rng.choice(list("ACGT"), n)) for c, n in sizes.items()})
    # target value = bin index on every base, so bin k reads exactly k
    a = write_bigwig(tmp_path / "a.bw", sizes, {c: [(s, min(s + 128, n), s // 128) for s in range(0, n, 128)]
                                                for c, n in sizes.items()})
    sheet = tmp_path / "targets.tsv"
    sheet.write_text(f"name\tpath\na\t{a}\nb\t{a}\n")
    prepare_store(fasta, None, sheet, tmp_path / "prep", options=PrepareOptions(window_bp=512))
    result = CliRunner().invoke(app, ["export-bigwig", str(tmp_path / "prep"), "--out", str(tmp_path / "t.bw")])
    assert result.exit_code == 0, result.output
    store = TrainingStore(tmp_path / "prep")
    for track in ("a", "b"):
        data = read_bw(tmp_path / f"t.{track}.bw")
        assert data["header"] == list(store.chrom_sizes.items())
        for ci, chrom in enumerate(store.chroms):
            size = store.chrom_sizes[chrom]
            n_bins = -(-size // 128)
            starts, ends, values = data[chrom]
            np.testing.assert_array_equal(starts, np.arange(n_bins) * 128)
            assert ends[-1] == size
            expected = store.read_targets(ci, 0, n_bins * 128)[store.tracks.index(track)]
            np.testing.assert_array_equal(values.astype(np.float32), expected)
    assert data["chr1"][2][5] == 5.0


def test_help():
    result = CliRunner().invoke(app, ["export-bigwig", "--help"])
    assert result.exit_code == 0 and "--allow-missing" in result.output
