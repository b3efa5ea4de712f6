"""The notebook API: the same numbers as the commands, since it runs the same code."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import epiformer_cli as epi
from epiformer_cli.errors import UsageError
from tests.helpers import TRACKS, predict, predict_inputs, read_bw, run_job, score_files, status_vcf


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return predict_inputs(tmp_path_factory.mktemp("api-inputs"))


def test_importing_the_package_does_not_import_torch():
    code = "import epiformer_cli, sys; assert 'torch' not in sys.modules; print(epiformer_cli.__all__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "predict_region" in done.stdout and "score_variants" in done.stdout
    with pytest.raises(AttributeError):
        epi.no_such_function  # noqa: B018


def test_load_model_is_the_model_file(inputs):
    loaded = epi.load_model(inputs["model"])
    assert loaded.tracks == TRACKS and not loaded.model.training
    assert loaded.config.seq_len == 16_384


def test_predict_region_equals_the_same_bins_of_predict(inputs, tmp_path):
    """Bins of a region that spans a window edge and two chunks equal the command's bigWig values."""
    whole = predict(**inputs, out=tmp_path / "pred.bw", chunk_windows=1, batch_size=2, device="cpu")
    start, end = 11_000, 26_000  # windows of 12,288 bp: spans windows 0, 1 and 2
    region = epi.predict_region(inputs["fasta"], inputs["cons"], inputs["model"], "1", start, end, batch_size=3)
    assert region.chrom == "chr1" and region.tracks == TRACKS  # the alias "1" is resolved
    assert region.start == 11_000 // 128 * 128 and region.end == -(-26_000 // 128) * 128
    assert region.values.shape == (2, (region.end - region.start) // 128) and region.values.dtype == np.float32
    for t, track in enumerate(TRACKS):
        starts, _, values = read_bw(whole.outputs[track])["chr1"]
        first = np.searchsorted(starts, region.start)
        np.testing.assert_array_equal(region.values[t], values[first:first + region.values.shape[1]])
    frame = region.to_frame()
    assert list(frame.columns) == ["chrom", "start", "end", *TRACKS] and len(frame) == region.values.shape[1]
    one = epi.predict_region(inputs["fasta"], inputs["cons"], inputs["model"], "chr1", start, end, tracks=["OPC"])
    np.testing.assert_array_equal(one.values[0], region.values[1])  # batch size and track subset change nothing


def test_predict_region_applies_the_commands_input_rules(inputs):
    with pytest.raises(UsageError, match="uses conservation"):
        epi.predict_region(inputs["fasta"], None, inputs["model"], "chr1", 0, 1000)
    zero = epi.predict_region(inputs["fasta"], None, inputs["model"], "chr1", 0, 1000, no_cons=True)
    with_cons = epi.predict_region(inputs["fasta"], inputs["cons"], inputs["model"], "chr1", 0, 1000)
    assert not np.array_equal(zero.values, with_cons.values)
    with pytest.raises(UsageError, match="not inside chr2"):
        epi.predict_region(inputs["fasta"], inputs["cons"], inputs["model"], "chr2", 39_000, 41_000)
    with pytest.raises(UsageError, match="chromosome 'chr7'"):
        epi.predict_region(inputs["fasta"], inputs["cons"], inputs["model"], "chr7", 0, 100)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("api-sv"))


def test_score_variants_table_equals_the_commands_tsv(files, tmp_path):
    vcf = status_vcf(tmp_path / "v.vcf", files["seqs"])
    null = {"null_size": 200, "null_path": tmp_path / "null.tsv.gz"}  # scored by the command, reused after
    _, rows = run_job(files, vcf, out=tmp_path / "s.tsv", score_bins=3, **null)
    from_file = epi.score_variants(vcf, files["fasta"], files["cons"], files["model"], score_bins=3, **null)
    expected = pd.read_csv(tmp_path / "s.tsv", sep="\t", dtype={"chrom": str, "id": str, "ref": str, "alt": str,
                                                                  "flags": str}, na_values=["NA"],
                           keep_default_na=False)
    pd.testing.assert_frame_equal(from_file, expected)
    assert len(from_file) == len(rows) and set(from_file["status"]) >= {"ok", "ref_mismatch"}
    # a few of the same variants as tuples (1-based positions) and as a DataFrame: the same rows
    ok = from_file[(from_file["status"] == "ok") & from_file["chrom"].isin(["chr1", "chr2"])]
    wanted = list(dict.fromkeys((r.chrom, int(r.pos), r.ref, r.alt) for r in ok.itertuples()))[:2]
    as_tuples = epi.score_variants(wanted, files["fasta"], files["cons"], files["model"], score_bins=3, **null)
    as_frame = epi.score_variants(pd.DataFrame(wanted, columns=["chrom", "pos", "ref", "alt"]), files["fasta"],
                                  files["cons"], files["model"], score_bins=3, **null)
    pd.testing.assert_frame_equal(as_tuples, as_frame)
    merged = as_tuples.merge(ok.drop_duplicates(["chrom", "pos", "ref", "alt", "track"]),
                             on=["chrom", "pos", "ref", "alt", "track"], suffixes=("", "_file"))
    assert len(merged) == len(as_tuples) == 2 * 3 and (as_tuples["status"] == "ok").all()
    for effect in ("ref_sum", "alt_sum", "diff", "log2fc", "sad", "max_abs", "l2", "diff_p", "ref_quantile"):
        np.testing.assert_array_equal(merged[effect], merged[f"{effect}_file"])


def test_score_variants_refuses_what_only_the_command_does(files):
    with pytest.raises(UsageError, match="returns a table"):
        epi.score_variants([("chr1", 100, "A", "C")], files["fasta"], files["cons"], files["model"],
                           out_format="vcf")
    with pytest.raises(UsageError, match="unknown option"):
        epi.score_variants([("chr1", 100, "A", "C")], files["fasta"], files["cons"], files["model"], bins=3)
