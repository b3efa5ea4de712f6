"""`epiformer motifs`: TF-MoDISco over explain folders, TOMTOM names, outputs and refusals.

The explain folders are written directly (tests/helpers.write_explain_folder), with a SPI1-like
consensus planted in every region's contributions of one track: no model runs here.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.motifs.contributions import load_examples, open_folder
from epiformer_cli.motifs.database import read_meme
from epiformer_cli.motifs.match import benjamini_hochberg
from epiformer_cli.motifs.patterns import trim_span
from tests.helpers import PLANTED, planted_explain_folder, write_explain_folder

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["motifs", *map(str, args)])


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("epiformer: error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


# ---- the parts, exact ------------------------------------------------------------------------------
def test_benjamini_hochberg_on_a_hand_computed_case():
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    # ranks 1..4 of (0.01, 0.03, 0.04, 0.5): 0.04, 0.06, 0.0533, 0.5 -> running minimum from the top
    assert q == pytest.approx([0.04, 0.0533333333, 0.0533333333, 0.5])
    assert benjamini_hochberg(np.array([0.9, 0.9])) == pytest.approx([0.9, 0.9])


def test_trim_keeps_the_strong_columns_and_drops_weak_edges():
    cwm = np.zeros((10, 4))
    cwm[2:8, 0] = [0.1, 0.5, 1.0, 1.0, 0.4, 0.2]  # >= 0.3 of the max: columns 3..6
    assert trim_span(cwm) == (3, 7)
    ppm = np.full((10, 4), 0.25)
    ppm[4:6] = [0.9, 0.05, 0.03, 0.02]  # columns 3 and 6 are near-uniform: dropped at the edges
    assert trim_span(cwm, ppm) == (4, 6)


def test_examples_are_the_centre_of_each_region_zero_padded(tmp_path):
    # one region of 10 bp (padded into a window of 16) and one of 30 bp (its central 16 bp)
    seqs = [("chr1", 100, "ACGTACGTAC"), ("chr2", 500, "A" * 7 + "CGTACGTAC" + "G" * 14)]
    total = sum(len(s) for _, _, s in seqs)
    matrix = np.arange(2 * 4 * total, dtype=np.float64).reshape(2, 4, total)
    folder = write_explain_folder(tmp_path / "e", seqs, matrix, ["a", "b"], method="ism")
    ex = load_examples([open_folder(folder)], "b", 16)
    assert ex.one_hot.shape == (2, 16, 4)
    # region 0: 10 bases at columns 3..12, starting at genome 100 -> column 0 is genome 97
    assert (ex.first[0], ex.last[0], ex.start[0]) == (3, 13, 97)
    assert "".join("ACGT"[i] for i in ex.one_hot[0, 3:13].argmax(axis=1)) == "ACGTACGTAC"
    assert not ex.one_hot[0, :3].any() and not ex.hypothetical[0, 13:].any()
    # region 1: bases 7..22 of 30
    assert (ex.first[1], ex.last[1], ex.start[1]) == (0, 16, 507)
    assert "".join("ACGT"[i] for i in ex.one_hot[1].argmax(axis=1)) == "CGTACGTAC" + "G" * 7
    # the hypothetical contributions are track b's matrix with the mean over bases removed
    column = matrix[1, :, 10 + 7]
    assert ex.hypothetical[1, 0] == pytest.approx(column - column.mean())
    assert ex.genome_span(0, 0, 5) == ("chr1", 100, 102)  # clipped to the region's bases


def test_a_region_explained_twice_counts_once(tmp_path):
    seqs = [("chr1", 100, "ACGTACGTAC")]
    matrix = np.zeros((1, 4, 10))
    a = write_explain_folder(tmp_path / "a", seqs, matrix, ["t"])
    b = write_explain_folder(tmp_path / "b", seqs + [("chr1", 900, "GGGGGCCCCC")], np.zeros((1, 4, 20)), ["t"])
    assert len(load_examples([open_folder(a), open_folder(b)], "t", 64).names) == 2


# ---- refusals, one line each ---------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    seqs = [("chr1", 100 + 1000 * i, "ACGTACGTACGTACGTACGTACGTACGTACGTACGTACGT") for i in range(5)]
    return write_explain_folder(tmp_path / "small", seqs, np.zeros((2, 4, 200)), ["microglia", "neuron"])


def test_folders_of_another_model_or_genome_are_refused(tmp_path, small):
    seqs = [("chr1", 100, "ACGT" * 10)]
    other_model = write_explain_folder(tmp_path / "m", seqs, np.zeros((2, 4, 40)), ["microglia", "neuron"],
                                       model="a" * 64)
    other_genome = write_explain_folder(tmp_path / "g", seqs, np.zeros((2, 4, 40)), ["microglia", "neuron"],
                                        fasta="b" * 64)
    for other, what in ((other_model, "another model"), (other_genome, "another genome")):
        result = _run("--contrib", small, "--contrib", other, "--out", tmp_path / f"o-{other.name}")
        assert result.exit_code == 2
        assert what in _one_error_line(result) and str(other) in result.output
        assert not (tmp_path / f"o-{other.name}").exists()


def test_a_track_not_in_the_contributions_is_refused(tmp_path, small):
    result = _run("--contrib", small, "--tracks", "astrocyte", "--out", tmp_path / "o")
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "'astrocyte' is not in the contributions" in line and "microglia, neuron" in line


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.mkdir(), "holds no explain.json and contrib.npz: give the --out folder of a finished"),
    (lambda p: (p / "explain.parts").mkdir(parents=True), "its explain run is unfinished"),
    (lambda p: p.write_text("x"), "is not a folder"),
    (lambda p: None, "does not exist"),
])
def test_a_folder_that_is_not_a_finished_explain_is_refused(tmp_path, make, expected):
    folder = tmp_path / "e"
    make(folder)
    result = _run("--contrib", folder, "--out", tmp_path / "o")
    assert result.exit_code == 2 and expected in _one_error_line(result)


def test_the_same_folder_twice_is_refused(tmp_path, small):
    result = _run("--contrib", small, "--contrib", small, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "given twice" in _one_error_line(result)


def test_too_few_seqlets_says_how_many_regions_to_explain(tmp_path):
    folder, _ = planted_explain_folder(tmp_path / "e", n_regions=6, tracks=("microglia",))
    result = _run("--contrib", folder, "--out", tmp_path / "o")
    assert result.exit_code == 2
    line = _one_error_line(result)
    needed = int(re.search(r"explain about ([\d,]+) or more regions", line).group(1).replace(",", ""))
    assert "too few seqlets to find a pattern" in line and "in 6 regions" in line and needed > 6
    assert not (tmp_path / "o" / "motifs.parts").exists()  # nothing worth resuming is kept


def test_a_meme_file_that_does_not_parse_is_refused_before_the_work(tmp_path, small):
    bad = tmp_path / "bad.meme"
    bad.write_text("MEME version 4\n\nMOTIF x\nletter-probability matrix: alength= 4 w= 2\n0.5 0.5 0\n0.25 0.25 0.25 0.25\n")
    result = _run("--contrib", small, "--motif-db", bad, "--out", tmp_path / "o")
    assert result.exit_code != 0
    line = _one_error_line(result)
    assert "bad.meme" in line and "line 5" in line
    assert not (tmp_path / "o").exists()


def test_an_output_folder_of_someone_else_is_refused(tmp_path, small):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = _run("--contrib", small, "--out", out)
    assert result.exit_code == 2 and "holds files epiformer did not write (notes.txt)" in _one_error_line(result)
    assert (out / "notes.txt").read_text() == "mine"


def test_an_explain_folder_is_never_the_output(tmp_path, small):
    result = _run("--contrib", small, "--out", small)
    assert result.exit_code == 2 and _one_error_line(result)
    assert sorted(p.name for p in small.iterdir()) == ["contrib.npz", "explain.json"]


@pytest.mark.parametrize("args, expected", [
    (["--window", "40"], "--window must be at least 41"),
    (["--max-seqlets", "100"], "--max-seqlets must be at least 101"),
])
def test_option_bounds(tmp_path, small, args, expected):
    result = _run("--contrib", small, "--out", tmp_path / "o", *args)
    assert result.exit_code == 2 and expected in _one_error_line(result)


# ---- a real run ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("motifs")
    folder, sites = planted_explain_folder(root / "explain", n_regions=300, tracks=("microglia", "neuron"))
    result = _run("--contrib", folder, "--tracks", "microglia", "--out", root / "out")
    assert result.exit_code == 0, result.output
    return root / "out", sites, result


@pytest.mark.slow
def test_the_planted_motif_is_found_named_and_placed(planted_run):
    import pandas as pd

    out, sites, _ = planted_run
    table = pd.read_csv(out / "motifs.tsv", sep="\t")
    top = table.sort_values("seqlets", ascending=False).iloc[0]
    revcomp = PLANTED[::-1].translate(str.maketrans("ACGT", "TGCA"))
    assert top["track"] == "microglia" and top["sign"] == "pos"
    assert top["consensus"].upper() in (PLANTED, revcomp)
    assert top["seqlets"] >= 250  # of 300 planted sites
    # JASPAR's best match is the SPI1 family (PU.1 and its paralogs), named at q <= 0.05
    assert re.match(r"(?i)spi[1bc]", top["factor"]) and float(top["q_1"]) <= 0.05
    # seqlets.bed: the pattern's seqlets lie on the planted sites
    bed = pd.read_csv(out / "seqlets.bed", sep="\t")
    mine = bed[bed["pattern"].str.startswith(top["pattern"] + "(")]
    planted = {(c, s, e) for c, s, e in sites}
    on_site = sum((c, s, e) in planted for c, s, e in zip(mine["#chrom"], mine["start"], mine["end"]))
    # nearly every planted site, to the base; a few noise seqlets join the pattern (55 of 354 measured)
    assert on_site >= 0.95 * len(planted) and on_site >= 0.8 * len(mine)
    # patterns.meme reads back, each pattern under its name and factor
    motifs = {m.motif_id: m for m in read_meme(out / "patterns.meme")}
    assert set(motifs) == set(table["pattern"]) and motifs[top["pattern"]].name == top["factor"]
    assert motifs[top["pattern"]].pwm.shape == (4, len(PLANTED))


@pytest.mark.slow
def test_the_run_writes_its_files_and_no_parts(planted_run):
    import h5py

    out, _, result = planted_run
    record = json.loads((out / "motifs.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(record["files"] + ["motifs.json"])
    assert record["files"] == ["motifs.tsv", "patterns.meme", "seqlets.bed", "modisco.microglia.h5", "report.html"]
    with h5py.File(out / "modisco.microglia.h5", "r") as handle:
        assert "pattern_0" in handle["pos_patterns"] and handle.attrs["window_size"] == 400
    html = (out / "report.html").read_text()
    assert "microglia_pos_0" in html and "https://" not in html.split("<body", 1)[1].replace("https://meme", "")


@pytest.mark.slow
def test_finished_results_are_refused_then_replaced_with_force(planted_run, tmp_path):
    out, _, _ = planted_run
    folder = out.parent / "explain"
    result = _run("--contrib", folder, "--tracks", "microglia", "--out", out)
    assert result.exit_code == 2 and "--force to replace them" in _one_error_line(result)


@pytest.mark.slow
def test_a_killed_run_resumes_at_the_first_unfinished_track(tmp_path, monkeypatch):
    from epiformer_cli.jobs import motifs as job
    from epiformer_cli.options import MotifsOptions

    folder, _ = planted_explain_folder(tmp_path / "e", n_regions=300, tracks=("microglia", "copy"))
    done = []
    real = job._discover_track

    def stop_at_the_second(folders, track, *args):
        if done:
            raise KeyboardInterrupt
        done.append(track)
        return real(folders, track, *args)

    monkeypatch.setattr(job, "_discover_track", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        job.motifs([folder], tmp_path / "o", options=MotifsOptions())
    assert (tmp_path / "o" / "motifs.parts" / "track.microglia.json").exists()
    # other settings are refused in the user's words, naming the option
    with pytest.raises(UsageError, match=r"--window: 400 .* 500 now"):
        job.motifs([folder], tmp_path / "o", options=MotifsOptions(window=500))
    monkeypatch.setattr(job, "_discover_track", lambda folders, track, *a: done.append(track) or real(folders, track, *a))
    import epiformer_cli as epi

    table = epi.find_motifs(folder, tmp_path / "o")  # the notebook API: the same job, motifs.tsv as a table
    assert done == ["microglia", "copy"]  # microglia was taken from the parts, not found again
    assert not (tmp_path / "o" / "motifs.parts").exists()
    assert list(table.columns) == list(job.TSV_COLUMNS) and (table["track"] == "microglia").any()
