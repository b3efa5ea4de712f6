"""`epiformer evaluate`: the metrics on hand-made arrays (exact), agreement with train's test
Pearson, the report's safety, refusals, and the command end to end on a tiny store and model."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.evaluate import metrics as M
from epiformer_cli.evaluate.bins import EvaluatedBins, Peaks, runs
from epiformer_cli.evaluate.score import COLUMNS, score_bins
from epiformer_cli.model.modelfile import save_model
from epiformer_cli.training.metrics import PearsonAccumulator
from tests.helpers import (
    CHROMS, TEST_CONFIG, float_tolerance, make_tiny_store, network_reductions, printed_close, sensitive_model,
)

runner = CliRunner()
HOSTILE = "<script>alert(1)</script>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("epiformer: error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def _table(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# ---- metrics, exact on hand-made arrays ---------------------------------------------------------------
def test_average_ranks_share_ties():
    assert M.average_ranks(np.array([10, 20, 20, 30])).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert M.average_ranks(np.array([3.0, 1.0, 3.0, 3.0])).tolist() == [3.0, 1.0, 3.0, 3.0]


def test_spearman_with_ties_by_hand():
    # ranks x = 1, 2.5, 2.5, 4 and y = 1, 3, 2, 4: deviations (-1.5, 0, 0, 1.5) and (-1.5, .5, -.5, 1.5);
    # r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    rho = M.spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0, 40.0]))
    assert rho == pytest.approx(math.sqrt(0.9), abs=4 * np.finfo(float).eps)
    # Spearman is the same for x and log(x + 1); a constant vector has none
    x = np.array([0.0, 5.0, 5.0, 2.0, 9.0])
    y = np.array([1.0, 3.0, 2.0, 2.0, 8.0])
    assert M.spearman(np.log1p(x), y) == M.spearman(x, y)
    assert math.isnan(M.spearman(np.ones(4), np.arange(4.0)))


def test_pearson_and_log_pearson_by_hand():
    assert M.pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0])) == pytest.approx(
        5.0 / math.sqrt(2.0 * 114.0 / 9.0), abs=1e-15)  # deviations (-1, 0, 1), (-7/3, -1/3, 8/3)
    x = np.e ** np.array([0.0, 1.0, 2.0]) - 1  # log(x + 1) = 0, 1, 2
    y = np.e ** np.array([1.0, 1.0, 4.0]) - 1  # log(y + 1) = 1, 1, 4: deviations (-1, -1, 2)
    assert M.log_pearson(x, y) == pytest.approx(3.0 / math.sqrt(2.0 * 6.0), abs=1e-12)
    assert math.isnan(M.pearson(np.zeros(3), np.arange(3.0)))


def test_auroc_by_hand_with_ties():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ordered right
    assert M.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    # a positive tied with a negative counts one half: (0.5 + 1 + 1 + 1) / 4
    assert M.auroc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1])) == 0.875
    assert math.isnan(M.auroc(np.array([0.1, 0.2]), np.array([0, 0])))
    assert math.isnan(M.auroc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_auprc_by_hand_with_ties():
    # descending: 0.8 (+) P 1 R 1/2; 0.4 (-); 0.35 (+) P 2/3 R 1: AP = 1/2 * 1 + 1/2 * 2/3
    assert M.auprc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(5 / 6, abs=1e-15)
    # 0.9 (-) P 0; the tie at 0.5 (+, -) passes together: P 1/3 R 1/2; 0.2 (+) P 2/4 R 1
    assert M.auprc(np.array([0.9, 0.5, 0.5, 0.2]), np.array([0, 1, 0, 1])) == pytest.approx(1 / 6 + 1 / 4,
                                                                                             abs=1e-15)
    assert math.isnan(M.auprc(np.array([0.1, 0.2]), np.array([0, 0])))


def test_auroc_and_auprc_agree_with_scikit_learn_on_random_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 20, 500).astype(np.float32)  # many ties
    labels = rng.random(500) < 0.2
    assert M.auroc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert M.auprc(scores, labels) == pytest.approx(metrics.average_precision_score(labels, scores), abs=1e-12)


def test_top_labels_take_ties_and_no_zeros():
    target = np.array([0.0, 0.0, 0.0, 5.0, 3.0, 3.0, 1.0])
    # k = ceil(0.3 * 7) = 3: at or above the 3rd largest value (3): both 3s are in
    assert M.top_labels(target, 0.3).tolist() == [False, False, False, True, True, True, False]
    assert not M.top_labels(np.zeros(50), 0.01).any()
    assert M.top_labels(np.arange(200.0), 0.01).tolist() == [False] * 198 + [True, True]


def test_specificity_is_one_for_any_per_peak_level_and_minus_one_for_swapped_tracks():
    rng = np.random.default_rng(0)
    observed = rng.exponential(3.0, size=(40, 3))
    # predicted + 1 = (observed + 1) x a per-peak factor: the same z-scores across tracks
    predicted = (observed + 1) * rng.uniform(0.2, 5.0, size=(40, 1)) - 1
    per_track, overall, used = M.specificity(observed, predicted)
    assert used == 40
    assert np.allclose(per_track, 1.0, atol=1e-12) and overall == pytest.approx(1.0, abs=1e-12)
    # two tracks: z-scores are +-1, so swapping the tracks gives -1 (to a few roundings)
    two = rng.exponential(3.0, size=(10, 2))
    per_track, overall, _ = M.specificity(two, two[:, ::-1])
    assert np.allclose(per_track, -1.0, rtol=0, atol=1e-14) and overall == pytest.approx(-1.0, abs=1e-14)
    # a peak with the same signal in every track has no z-scores and is left out; one track: none
    flat = np.vstack([observed, np.full((1, 3), 2.0)])
    assert M.specificity(flat, np.vstack([predicted, [[1.0, 2.0, 3.0]]]))[2] == 40
    assert math.isnan(M.specificity(observed[:, :1], predicted[:, :1])[1])


def test_specificity_by_hand():
    # log(x + 1) of 3 peaks x 3 tracks; the z-scores of (0, 1, 2) across tracks are (-a, 0, a), a = sqrt(3/2)
    lo = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    lp = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [1.0, 2.0, 0.0]])
    per_track, overall, used = M.specificity(np.expm1(lo), np.expm1(lp))
    a = math.sqrt(1.5)
    zo = np.array([[-a, 0, a], [a, 0, -a], [-a, a, 0]])
    zp = np.array([[-a, 0, a], [-a, 0, a], [0, a, -a]])
    assert used == 3
    # track 0: zp (-a, -a, 0), zo (-a, a, -a): deviations a/3 (-1, -1, 2) and 2a/3 (-1, 2, -1): r = -6 / 12
    assert per_track[0] == pytest.approx(-0.5, abs=1e-12)
    for t in (1, 2):
        assert per_track[t] == pytest.approx(np.corrcoef(zp[:, t], zo[:, t])[0, 1], abs=1e-12)
    # pooled (every z-score has mean 0): sum zp zo = 2a^2 - 2a^2 + a^2 = 1.5, sum zp^2 = sum zo^2 = 6a^2 = 9
    assert overall == pytest.approx(1.5 / 9, abs=1e-12)


def test_bin_pearson_is_trains_accumulator_and_the_matrix_diagonal(monkeypatch):
    rng = np.random.default_rng(1)
    pred = rng.exponential(size=(300, 3)).astype(np.float32)
    target = (pred * rng.uniform(0.2, 2.0, size=pred.shape)).astype(np.float32)
    acc = PearsonAccumulator(3)
    for lo in range(0, 300, 7):  # train's batches
        acc.update(torch.from_numpy(pred[lo:lo + 7].T.copy())[None], torch.from_numpy(target[lo:lo + 7].T.copy())[None])
    monkeypatch.setattr(M, "CHUNK_ROWS", 64)  # chunked sums: the same numbers to float64 rounding
    r = M.bin_pearson(pred, target)
    # float64 sums of 300 terms of size <= log(1 + max) in another order, through r's formula
    tol = float_tolerance(10.0, terms=300, depth=4, dtype=np.float64)
    assert np.allclose(r, acc.pearson().numpy(), rtol=0, atol=tol)
    matrix = M.track_matrix(pred, target)
    assert np.allclose(np.diag(matrix), r, rtol=0, atol=tol)
    x, y = np.log1p(pred.astype(np.float64)), np.log1p(target.astype(np.float64))
    assert matrix[0, 2] == pytest.approx(np.corrcoef(x[:, 0], y[:, 2])[0, 1], abs=tol)
    assert np.allclose(M.track_matrix(pred, target[:, ::-1]), matrix[:, ::-1], atol=tol)


# ---- bins, peaks and the table -----------------------------------------------------------------
def _bins(pred, target, bin_index, chrom_size=128 * 10, tracks=("a", "b")):
    n = len(bin_index)
    return EvaluatedBins(list(tracks), ["c1"], {"c1": chrom_size}, np.zeros(n, np.int32),
                         np.asarray(bin_index, np.int64), np.asarray(pred, np.float32), np.asarray(target, np.float32))


def test_genome_view_averages_a_bin_scored_by_two_windows():
    bins = _bins([[1, 0], [3, 0], [5, 2]], [[2, 1], [2, 1], [4, 4]], [4, 4, 6])
    (view,) = list(bins.on_genome())
    assert view.covered.tolist() == [False] * 4 + [True, False, True] + [False] * 3
    assert view.pred[4].tolist() == [2.0, 0.0] and view.target[4].tolist() == [2.0, 1.0]
    whole, observed, predicted = view.sums(np.array([[4, 5], [4, 7], [6, 7]]))
    assert whole.tolist() == [True, False, True]
    assert observed[2].tolist() == [4.0, 4.0] and predicted[2].tolist() == [5.0, 2.0]
    assert bins.distinct_bins() == 2
    assert view.run_around(6) == (6, 7)


def test_runs_and_peak_masks():
    assert runs(np.array([0, 1, 1, 0, 1], bool)).tolist() == [[1, 3], [4, 5]]
    peaks = Peaks.from_intervals([("c1", 130, 300), ("c1", 1200, 1280), ("other", 0, 10), ("c1", 5, 5)], ["c1"], "x")
    assert peaks.span.tolist() == [[1, 3], [9, 10]]
    assert peaks.mask(0, 10).tolist() == [False, True, True] + [False] * 6 + [True]


def test_score_bins_table_on_a_hand_made_case():
    # 10 bins, one track; top 10% = 1 bin (bin 7, target 9); predicted highest there too
    target = np.array([[0, 1, 0, 2, 0, 1, 0, 9, 0, 1]], np.float32).T
    pred = np.array([[0.1, 0.5, 0.2, 1.0, 0.1, 0.4, 0.0, 3.0, 0.2, 0.6]], np.float32).T
    bins = _bins(pred, target, np.arange(10), tracks=("a",))
    scores = score_bins(bins, top_fraction=0.1, loci=1)
    (row,) = scores.table
    assert row["positive_bins"] == 1 and row["auroc"] == 1.0 and row["auprc"] == 1.0
    assert row["peaks"] == 1 and scores.peaks_source.startswith("top 0.1")
    assert math.isnan(row["peak_pearson"])  # one peak: no correlation
    assert math.isnan(row["specificity"])  # one track: no specificity
    assert row["spearman"] == pytest.approx(M.spearman(pred[:, 0], target[:, 0]), abs=0)
    assert scores.loci[0].chrom == "c1" and (scores.loci[0].start, scores.loci[0].end) == (0, 1280)
    # with --peaks: labels from the peaks; a peak over an unscored bin is left out
    some = bins.select(np.arange(10) != 2)
    peaks = Peaks.from_intervals([("c1", 0, 128 * 2), ("c1", 128 * 2, 128 * 4), ("c1", 128 * 7, 128 * 8)], ["c1"],
                                 "--peaks p.bed")
    scores = score_bins(some, peaks, loci=0)
    assert scores.peaks == 2 and scores.peaks_partial == 1
    assert scores.table[0]["positive_bins"] == 4  # bins 0, 1, 3 and 7 (bin 2 not scored)
    assert scores.mean_row()["track"] == "mean" and scores.mean_row()["positive_bins"] == 4


# ---- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny store and a model trained on it for 2 steps from weights whose outputs vary (a fresh
    model predicts nearly the same value everywhere, where r is all rounding)."""
    from epiformer_cli.jobs.train import train_model
    from epiformer_cli.options import TrainOptions

    root = tmp_path_factory.mktemp("evaluate")
    store = make_tiny_store(root)
    init = sensitive_model(seed=1, **TEST_CONFIG)
    save_model(root / "init.pt", init, init.config, ["A", "B", "C"])
    train_model(data=store, out=root / "run", options=TrainOptions(
        max_steps=2, batch_size=2, workers=0, device="cpu", warmup_steps=1, lr=1e-5, init=str(root / "init.pt")))
    return {"root": root, "store": store, "model": root / "run" / "model.pt"}


def test_help():
    result = runner.invoke(app, ["evaluate", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--data", "--targets", "--peaks", "--chroms", "--regions", "--top-fraction", "--rc-average"):
        assert option in result.output


def test_per_track_pearson_is_trains_test_pearson(trained, tmp_path):
    out = tmp_path / "ev"
    result = _run("--model", trained["model"], "--data", trained["store"], "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    ours = {row["track"]: row for row in _table(out / "metrics.tsv")}
    test_row = next(r for r in _table(trained["root"] / "run" / "metrics.tsv") if r["split"] == "test")
    # train scores with the training network (GEMMs blocked by its batch), evaluate with the fast
    # inference form: predictions differ by float32 rounding through the network, delta. r moves by
    # at most 2 delta / sd of log(pred + 1) (|d log(1 + p)| <= |dp|); sd measured on the same windows.
    from epiformer_cli.data.dataset import WindowDataset
    from epiformer_cli.data.training_store import TrainingStore
    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.model.modelfile import load_model

    loaded = load_model(trained["model"])
    windows = WindowDataset(TrainingStore(trained["store"]), "test", loaded.config.crop_bins)
    codes = np.stack([windows[i]["codes"].numpy() for i in range(len(windows))])
    cons = np.stack([windows[i]["cons"].numpy() for i in range(len(windows))])
    pred = InferenceEngine(loaded.model, device="cpu", rc_average=False).predict(codes, cons)
    delta = float_tolerance(float(np.abs(pred).max()), **network_reductions(loaded.config))
    for t, track in enumerate(["A", "B"]):
        sd = float(np.log1p(pred[:, t].astype(np.float64)).std())
        assert sd > 0.05  # a model whose r is a number, not rounding
        assert printed_close(ours[track]["pearson"], test_row[f"pearson_{track}"], 2 * delta / sd), (track, ours[track])
        assert int(ours[track]["bins"]) == len(windows) * loaded.config.out_bins  # every test window's bins
    assert printed_close(ours["mean"]["pearson"], test_row["pearson"], 2 * delta / 0.05)
    # and the test windows are chr9's: 5 windows of 4,096 bp, step 2,048, on 14,000 bp
    provenance = json.loads((out / "evaluate.json").read_text())
    assert provenance["chroms"] == ["chr9"] and provenance["windows"] == 5


def _report_page(text: str):
    class Page(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags, self.text = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))

        def handle_data(self, data):
            self.text.append(data)

    page = Page()
    page.feed(text)
    return page


def test_end_to_end_on_the_store_writes_every_output(trained, tmp_path):
    out = tmp_path / "ev"
    peaks = tmp_path / "peaks.bed"
    peaks.write_text("chr9\t1000\t1500\nchr9\t6000\t6400\nchr9\t9000\t9300\nchr1\t100\t200\n")
    result = _run("--model", trained["model"], "--data", trained["store"], "--out", out, "--device", "cpu",
                  "--peaks", peaks, "--loci", "2")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["evaluate.json", "heatmap.png", "loci.png", "metrics.tsv", "report.html", "scatter.png",
                     "track_correlation.tsv"]
    rows = _table(out / "metrics.tsv")
    assert list(rows[0]) == list(COLUMNS) and [r["track"] for r in rows] == ["A", "B", "mean"]
    assert all(r["peaks"] == "3" for r in rows)  # the chr1 peak is not on the evaluated chromosome
    matrix = _table(out / "track_correlation.tsv")
    assert [m["predicted\\observed"] for m in matrix] == ["A", "B"]
    assert matrix[0]["A"] == rows[0]["pearson"] or printed_close(matrix[0]["A"], rows[0]["pearson"], 1e-12)
    provenance = json.loads((out / "evaluate.json").read_text())
    assert provenance["files"] == [n for n in ["metrics.tsv", "track_correlation.tsv", "heatmap.png", "scatter.png",
                                               "loci.png", "report.html"]]
    text = (out / "report.html").read_text()
    page = _report_page(text)
    assert "default-src 'none'" in text
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 3
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True)[:8] == PNG_SIGNATURE
    # again: refused without --force (one line, exit 2), replaced with it
    again = _run("--model", trained["model"], "--data", trained["store"], "--out", out, "--device", "cpu")
    assert again.exit_code == 2 and "--force" in _one_error_line(again)
    forced = _run("--model", trained["model"], "--data", trained["store"], "--out", out, "--device", "cpu", "--force",
                  "--chroms", "chr8")
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "evaluate.json").read_text())["chroms"] == ["chr8"]
    assert not (out / "loci.png").exists() or "loci.png" in json.loads((out / "evaluate.json").read_text())["files"]


def test_bigwigs_of_a_model_with_other_tracks_and_a_hostile_name(trained, tmp_path):
    """--targets: an imported-like model (no recorded store) whose tracks are partly the sheet's,
    one named like a script: skipped tracks are said, the name reaches the report as text."""
    root = trained["root"]
    model = sensitive_model(seed=2, **TEST_CONFIG)
    path = save_model(tmp_path / "m.pt", model, model.config, [HOSTILE, "B", "extra"])
    sheet = tmp_path / "targets.tsv"
    sheet.write_text(f"name\tpath\n{HOSTILE}\t{root / 'a.bw'}\nB\t{root / 'b.bw'}\n")
    args = ["--model", path, "--targets", sheet, "--fasta", root / "g.fa", "--cons", root / "cons.bw",
            "--device", "cpu"]
    # no recorded held-out chromosomes: --chroms is needed
    refused = _run(*args, "--out", tmp_path / "no")
    assert refused.exit_code == 2 and "--chroms" in _one_error_line(refused)
    assert not (tmp_path / "no").exists()
    out = tmp_path / "ev"
    result = _run(*args, "--out", out, "--chroms", "chr9")
    assert result.exit_code == 0, result.output
    assert "skipped: extra" in result.output
    rows = _table(out / "metrics.tsv")
    assert [r["track"] for r in rows] == [HOSTILE, "B", "mean"]
    assert rows[0]["bins"] == str(-(-CHROMS["chr9"] // 128))  # the model's tiling: every bin once
    text = (out / "report.html").read_text()
    assert "<script" not in text.lower()
    assert html_escaped(HOSTILE) in text
    assert HOSTILE in "".join(_report_page(text).text)


def html_escaped(name: str) -> str:
    import html

    return html.escape(name, quote=True)


@pytest.mark.parametrize("case", ["both", "neither", "no fasta", "no common track", "top fraction", "peaks elsewhere",
                                  "window"])
def test_refusals_are_one_line_exit_2(trained, tmp_path, case):
    root, store, model = trained["root"], trained["store"], trained["model"]
    out = tmp_path / "out"
    base = ["--model", model, "--out", out, "--device", "cpu"]
    if case == "both":
        args, said = [*base, "--data", store, "--targets", root / "targets.tsv"], "not both"
    elif case == "neither":
        args, said = base, "--data STORE"
    elif case == "no fasta":
        args, said = [*base, "--targets", root / "targets.tsv"], "--fasta"
    elif case == "no common track":
        sheet = tmp_path / "t.tsv"
        sheet.write_text(f"name\tpath\nX\t{root / 'a.bw'}\nY\t{root / 'b.bw'}\n")
        args, said = [*base, "--targets", sheet, "--fasta", root / "g.fa", "--cons", root / "cons.bw"], \
            "no track name in common (model: A, B; the targets sheet"
    elif case == "top fraction":
        args, said = [*base, "--data", store, "--top-fraction", "2"], "--top-fraction"
    elif case == "peaks elsewhere":
        bed = tmp_path / "p.bed"
        bed.write_text("chr1\t0\t500\n")
        args, said = [*base, "--data", store, "--peaks", bed], "no peak lies on the evaluated chromosomes (chr9)"
    else:
        other = sensitive_model(seed=3, **dict(TEST_CONFIG, seq_len=2048))
        args = ["--model", save_model(tmp_path / "w.pt", other, other.config, ["A", "B", "C"]), "--out", out,
                "--data", store]
        said = "holds 4,096 bp windows"
    result = _run(*args)
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert said in line, line
    assert not out.exists()
    assert re.search(r"\(see epiformer evaluate -h\)$", line)
