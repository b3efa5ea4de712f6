"""`epiformer explain --peaks`: the N highest non-overlapping windows of a bigWig track, chosen the
same way by every shard (ties in genome order), and its refusals.

Fixtures: a bigWig of known bin values on a 5,000 + 3,000 bp genome (choice only), and the tiny
model and 2 x 40,960 bp genome of the end-to-end runs.
"""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pyBigWig
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.explain.peaks import bin_means, greedy_peaks, peak_regions
from epiformer_cli.jobs.explain import explain
from epiformer_cli.model.config import preset
from epiformer_cli.model.modelfile import save_model
from epiformer_cli.options import ExplainOptions
from tests.helpers import sensitive_model, write_bigwig, write_fasta

CFG = preset("tiny")  # 128 bp bins, 12,161 bp the longest region
SIZES = {"chr1": 5_000, "chr2": 3_000}


def bins(*items):
    """(bin, value) -> the 128 bp interval of that bin."""
    return [(b * 128, b * 128 + 128, v) for b, v in items]


@pytest.fixture
def track(tmp_path):
    """chr1: bins 10 = 5 and 11 = 4 (one peak: overlapping windows), 0 = 3 (at the start) and 20 = 3
    (a tie), NaN at 30, NaN then 1.0 in bin 32 (mean 0.5), 2 in bin 38 (near the end). chr2: 3 in
    bin 5 (a tie on a later chromosome), half of bin 20 at 5 (mean 2.5), NaN in bin 12 (no peak).
    chrUn: not in the FASTA (a value that would win)."""
    return write_bigwig(tmp_path / "t.bw", {**SIZES, "chrUn": 1_000}, {
        "chr1": bins((0, 3.0), (10, 5.0), (11, 4.0), (20, 3.0), (30, math.nan))
        + [(4_096, 4_160, math.nan), (4_160, 4_224, 1.0)] + bins((38, 2.0)),
        "chr2": bins((5, 3.0), (12, math.nan)) + [(2_560, 2_624, 5.0)],
        "chrUn": bins((1, 100.0)),
    })


# ---- the choice ----------------------------------------------------------------------------------------
def test_the_highest_windows_in_rank_order_with_ties_in_genome_order(track, caplog):
    with caplog.at_level(logging.WARNING):
        regions = peak_regions(track, SIZES, CFG, top=10, width=500)
    got = [(r.index, r.name, r.chrom, r.start, r.end) for r in regions]
    assert got == [
        (0, "peak_1", "chr1", 1_344 - 250, 1_344 + 250),  # bin 10 (5.0); bin 11 (4.0) overlaps it
        (1, "peak_2", "chr1", 0, 500),                    # 3.0, first in genome order; shifted inside
        (2, "peak_3", "chr1", 2_624 - 250, 2_624 + 250),  # 3.0, bin 20
        (3, "peak_4", "chr2", 704 - 250, 704 + 250),      # 3.0 on the next chromosome
        (4, "peak_5", "chr2", 2_624 - 250, 2_624 + 250),  # 2.5: half a bin of 5, the rest without data
        (5, "peak_6", "chr1", 4_500, 5_000),              # 2.0 in the last whole bin: shifted inside
        (6, "peak_7", "chr1", 4_160 - 250, 4_160 + 250),  # 0.5: the NaN half counts as no data
    ]  # the NaN bins 30 (chr1) and 12 (chr2) are no peak, nor is chrUn's 100
    assert all(r.length == 500 for r in regions)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("1 chromosome(s) the FASTA lacks are skipped (chrUn)" in w for w in warnings), warnings
    assert any("holds 7 non-overlapping 500 bp window(s), fewer than --top 10" in w for w in warnings), warnings


def test_top_takes_the_first_of_the_genome_wide_ranking(track):
    assert [(r.chrom, r.start) for r in peak_regions(track, SIZES, CFG, top=3, width=500)] == \
        [("chr1", 1_094), ("chr1", 0), ("chr1", 2_374)]
    # the genome's choice is the best of each chromosome's: chr2's 3.0 outranks chr1's 2.0
    assert [r.chrom for r in peak_regions(track, SIZES, CFG, top=4, width=500)][-1] == "chr2"


def test_wider_windows_suppress_more_and_ties_keep_genome_order():
    values = np.array([1.0, 7.0, 7.0, np.nan, 7.0, 2.0, 7.0, 0.0])
    # 128 bp windows: every bin its own peak; equal values by position; NaN none; 0 is a value
    assert [b for _, b, _, _ in greedy_peaks(values, 1_024, 128, 128, 10)] == [1, 2, 4, 6, 5, 0, 7]
    # 256 bp windows around bin centres (64 + 128 b): bin 2's [192, 448) overlaps bin 1's [64, 320),
    # bin 6's [704, 960) only touches bin 4's [448, 704); bin 0's is shifted to [0, 256), overlapping
    got = greedy_peaks(values, 1_024, 128, 256, 10)
    assert [(v, b, lo, hi) for v, b, lo, hi in got] == [(7.0, 1, 64, 320), (7.0, 4, 448, 704), (7.0, 6, 704, 960)]


def test_a_chromosome_shorter_than_the_window_is_one_whole_window():
    assert greedy_peaks(np.array([1.0, 3.0]), 200, 128, 500, 5) == [(3.0, 1, 0, 200)]


def test_bin_means_read_a_long_chromosome_in_blocks(tmp_path, monkeypatch):
    """Bins are read BLOCK_BINS at a time: the block edges change nothing."""
    from epiformer_cli.explain import peaks

    rng = np.random.default_rng(0)
    size = 128 * 37 + 50
    runs = [(s, min(size, s + 30), float(rng.random())) for s in range(0, size, 40)]
    path = write_bigwig(tmp_path / "r.bw", {"c": size}, {"c": runs})
    per_base = np.zeros(128 * 38)
    for s, e, v in runs:
        per_base[s:e] = np.float32(v)
    want = per_base.reshape(38, 128).sum(1) / np.array([128] * 37 + [50])
    monkeypatch.setattr(peaks, "BLOCK_BINS", 5)
    handle = pyBigWig.open(str(path))
    np.testing.assert_allclose(bin_means(handle, "c", size, 128), want, rtol=1e-12)
    # a FASTA's chromosome longer than the file's: no data past the file's end
    longer = bin_means(handle, "c", size + 300, 128)
    handle.close()
    np.testing.assert_array_equal(longer[:37], want[:37])
    assert np.isclose(longer[37], want[37] * 50 / 128, rtol=1e-12, atol=0) and np.isnan(longer[38:]).all()


def test_too_wide_windows_and_empty_tracks_are_refused(track, tmp_path):
    with pytest.raises(UsageError, match=r"^--peak-width 12,162 bp is longer than the model's output span allows "
                                         r"\(12,161 bp\): use a smaller --peak-width$"):
        peak_regions(track, SIZES, CFG, top=1, width=12_162)
    assert len(peak_regions(track, SIZES, CFG, top=1, width=12_161)) == 1
    empty = write_bigwig(tmp_path / "e.bw", SIZES, {"chr1": bins((3, math.nan))})
    with pytest.raises(InputFileError, match="has no value on the FASTA's chromosomes: no peak to explain"):
        peak_regions(empty, SIZES, CFG, top=1, width=500)
    other = write_bigwig(tmp_path / "o.bw", {"scaffold_1": 500}, {"scaffold_1": bins((1, 1.0))})
    with pytest.raises(InputFileError, match=r"has no chromosome of the FASTA \(it has scaffold_1; the FASTA has "
                                             r"chr1, chr2\)"):
        peak_regions(other, SIZES, CFG, top=1, width=500)


@pytest.mark.parametrize("values, message", [
    (dict(top=0), "--top must be at least 1, got 0"),
    (dict(top=1_000_001), "--top must be between 1 and 1,000,000 (got 1,000,001)"),
    (dict(peak_width=0), "--peak-width must be at least 1, got 0"),
    (dict(peak_width=(1 << 20) + 1), "--peak-width must be between 1 and 1,048,576 (got 1,048,577)"),
    (dict(peak_track=" "), "--peak-track is empty: name a track of the --peaks prediction"),
])
def test_options_refuse_out_of_range_values(values, message):
    with pytest.raises(UsageError) as caught:
        ExplainOptions(**values)
    assert str(caught.value) == message


def test_the_peak_settings_are_part_of_the_fingerprint():
    fp = ExplainOptions(top=5, peak_width=300, peak_track="glia").fingerprint()
    assert (fp["top"], fp["peak_width"], fp["peak_track"]) == (5, 300, "glia")


# ---- end to end -----------------------------------------------------------------------------------------
N = 40_960
TRACKS = ["neuron", "glia", "astro"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("peaks")
    rng = np.random.default_rng(5)
    seqs = {c: "".join(rng.choice(list("ACGT"), N)) for c in ("chrA", "chrB")}
    fasta = write_fasta(folder / "g.fa", seqs)
    runs = [(i, i + 40, float(rng.random())) for i in range(0, N, 40)]
    cons = write_bigwig(folder / "c.bw", {"chrA": N, "chrB": N}, {"chrA": runs, "chrB": runs})
    model = sensitive_model(seed=4)
    path = save_model(folder / "m.pt", model, model.config, TRACKS)
    # a two-track prediction as predict names it: pred.bw -> pred.a.bw, pred.b.bw; the values of
    # track b: 9 at chrB bin 100, 8 at chrA bin 200, 7 at chrA bin 50, 1 elsewhere
    sizes = {"chrA": N, "chrB": N}
    flat = {c: [(b * 128, b * 128 + 128, 1.0) for b in range(N // 128)] for c in sizes}
    b_values = {c: list(v) for c, v in flat.items()}
    for chrom, b, v in (("chrB", 100, 9.0), ("chrA", 200, 8.0), ("chrA", 50, 7.0)):
        b_values[chrom][b] = (b * 128, b * 128 + 128, v)
    write_bigwig(folder / "pred.a.bw", sizes, flat)
    write_bigwig(folder / "pred.b.bw", sizes, b_values)
    return {"fasta": fasta, "cons": cons, "model": path, "folder": folder, "pred": folder / "pred.bw"}


#: the windows of track b's three peaks, in rank order (300 bp around bin centres)
PEAKS_B = [("peak_1", "chrB", 12_864 - 150, 12_864 + 150), ("peak_2", "chrA", 25_664 - 150, 25_664 + 150),
           ("peak_3", "chrA", 6_464 - 150, 6_464 + 150)]


def cli(files, out, *args):
    return CliRunner().invoke(app, ["explain", "--out", str(out), "--fasta", str(files["fasta"]), "--cons",
                                    str(files["cons"]), "--model", str(files["model"]), "--device", "cpu",
                                    "--no-rc-average", "--plot", "0", *map(str, args)])


def regions_tsv(out):
    lines = (out / "regions.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    return list(dict.fromkeys((r["name"], r["chrom"], int(r["start"]), int(r["end"])) for r in rows))


def test_cli_explains_the_top_peaks_of_a_track(files, tmp_path):
    result = cli(files, tmp_path / "out", "--peaks", files["pred"], "--peak-track", "b", "--top", 3,
                 "--peak-width", 300, "--method", "gradient", "--tracks", "glia")
    assert result.exit_code == 0, result.output
    assert "explained 3 region(s) by gradient" in result.output
    assert regions_tsv(tmp_path / "out") == PEAKS_B
    options = json.loads((tmp_path / "out" / "explain.json").read_text())["options"]
    assert (options["top"], options["peak_width"], options["peak_track"]) == (3, 300, "b")


def test_shards_choose_the_same_peaks_and_equal_the_whole_run(files, tmp_path):
    def run(out, shard=None):
        return explain(files["fasta"], files["cons"], files["model"], out, peaks=files["pred"],
                       options=ExplainOptions.of(device="cpu", rc_average=False, plot=0, method="gradient",
                                                 tracks=["glia"], top=3, peak_width=300, peak_track="b",
                                                 shard=shard))

    whole = run(tmp_path / "whole")
    first, second = run(tmp_path / "sharded", "2/2"), run(tmp_path / "sharded", "1/2")
    assert (whole.regions, first.regions, second.regions) == (3, 1, 2)
    assert [first.assembled, second.assembled] == [False, True]
    for name in ("regions.tsv", "contrib.npz", "contrib.glia.bw"):
        assert (tmp_path / "sharded" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    # another --top is another run: refused rather than mixed with the first one's parts
    run(tmp_path / "mixed", "1/2")
    with pytest.raises(UsageError, match=r"made with other options \(--top: 3 in the earlier run, 2 now\)"):
        explain(files["fasta"], files["cons"], files["model"], tmp_path / "mixed", peaks=files["pred"],
                options=ExplainOptions.of(device="cpu", rc_average=False, plot=0, method="gradient",
                                          tracks=["glia"], top=2, peak_width=300, peak_track="b", shard="2/2"))


def one_error(result, code):
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.startswith("epiformer: error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, code, message", [
    (["--peaks", "{folder}/m.pt"], 1, r"m\.pt: --peaks bigWig is not a bigWig file"),
    (["--peaks", "{pred}", "--peak-track", "c"], 2,
     r"--peak-track c: no pred\.c\.bw beside .*pred\.bw \(the per-track bigWigs there are for a, b\): check the "
     r"track name"),
    (["--peaks", "{pred}"], 2, r"--peaks .*pred\.bw does not exist, but per-track bigWigs of it do \(for a, b\): "
                               r"choose one with --peak-track a"),
    (["--peaks", "{folder}/pred.a.bw", "--top", "0"], 2, r"--top must be at least 1, got 0"),
    (["--peaks", "{folder}/pred.a.bw", "--peak-width", "0"], 2, r"--peak-width must be at least 1, got 0"),
    (["--peaks", "{folder}/pred.a.bw", "--peak-width", "20000"], 2,
     r"--peak-width 20,000 bp is longer than the model's output span allows \(12,161 bp\)"),
    (["--peaks", "{folder}/pred.a.bw", "--regions", "{folder}/r.bed"], 2,
     r"give --regions BED or --variants VCF or --peaks bigWig \(one of them\)"),
    (["--peak-track", "a", "--regions", "{folder}/r.bed"], 2, r"--peak-track picks the track of a --peaks "
                                                              r"prediction: give --peaks, or drop --peak-track"),
    (["--peaks", "{folder}/empty.bw"], 1, r"empty\.bw: --peaks bigWig has no value on the FASTA's chromosomes"),
])
def test_cli_refusals_are_one_line_and_write_nothing(files, tmp_path, args, code, message):
    write_bigwig(files["folder"] / "empty.bw", {"chrA": N}, {})
    (files["folder"] / "r.bed").write_text("chrA\t100\t200\n")
    line = one_error(cli(files, tmp_path / "out", *[a.format(**files) for a in args]), code)
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()
