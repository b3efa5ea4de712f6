"""docs/make_figures.py and what every figure shares (epiformer_cli.plotting): on a fake finished demo
made here, the script copies the five figures under their docs names, draws the learning curve with
the test row, computes the README's numbers with the demo's own functions (exact values on tiny
tables), and puts render_numbers of them between the README's markers; without the markers it exits
1 before anything runs; an unfinished demo folder runs ``python -m epiformer_cli demo``. The README
in the repository holds exactly render_numbers(docs/demo-numbers.json)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO_DIR

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_script():
    spec = importlib.util.spec_from_file_location("make_figures", REPO_DIR / "docs" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mf = load_script()

METRICS = ("split\tepoch\tstep\ttrain_loss\tloss\tpearson\tpearson_a\tpearson_b\tlr\tseconds\twindows_per_s\n"
           "valid\t1\t10\t0.5\t0.4\t0.6\t0.7\t0.5\t0.001\t1.0\t10\n"
           "valid\t2\t20\t-0.1\t0.3\t0.8\t0.9\t0.7\t0.0005\t2.0\t10\n"
           "test\t2\t20\t\t0.35\t0.75\t0.85\t0.65\t\t2.0\t\n")
SCORES = [  # chrom pos id ref alt track status diff diff_p
    ("chr1", 10, "c1", "A", "G", "a", "ok", -5, 0.001), ("chr1", 10, "c1", "A", "G", "b", "ok", 1, 0.3),
    ("chr1", 20, "c2", "C", "T", "a", "ok", 0.5, 0.4), ("chr1", 20, "c2", "C", "T", "b", "ok", 3, 0.002),
    ("chr1", 30, "n1", "G", "A", "a", "ok", 0.2, 0.6), ("chr1", 30, "n1", "G", "A", "b", "ok", -0.1, 0.04),
    ("chr1", 40, "n2", "T", "C", "a", "ok", 4, 0.01), ("chr1", 40, "n2", "T", "C", "b", "ok", 0.1, 0.7),
    ("chr1", 50, "i1", "AT", "A", "a", "ok", -6, 0.0009), ("chr1", 50, "i1", "AT", "A", "b", "ok", 0.2, 0.5),
    ("chr1", 60, "m1", "G", "C", "a", "ref_mismatch", "NA", "NA"),
    ("chr1", 60, "m1", "G", "C", "b", "ref_mismatch", "NA", "NA"),
]
TRUTH = [  # chrom pos id ref alt class motif tracks
    ("chr1", 10, "c1", "A", "G", "causal", "SPI1", "a"), ("chr1", 20, "c2", "C", "T", "causal", "FOS::JUN", "b"),
    ("chr1", 30, "n1", "G", "A", "neutral", ".", "."), ("chr1", 40, "n2", "T", "C", "neutral", ".", "."),
    ("chr1", 50, "i1", "AT", "A", "indel", "SPI1", "a"), ("chr1", 60, "m1", "G", "C", "ref_mismatch", ".", "."),
]


def write_contrib(path: Path, site_scores) -> None:
    """A contrib.npz of two chr3 regions of 10 bp (100-110 and 200-210), tracks a and b: every base
    scores 1 on track a, the bases of ``site_scores[i]`` (a list of (offset, score)) their score."""
    n = 10
    contrib = np.ones((2, 2 * n), np.float32) * [[1.0], [0.1]]
    for i, sites in enumerate(site_scores):
        for offset, score in sites:
            contrib[0, i * n + offset] = score
    np.savez(path, tracks=np.array(["a", "b"]), method=np.array("ism"), offsets=np.array([0, n, 2 * n]),
             region_index=np.array([0, 1]), region_name=np.array(["e_1", "e_2"]), chrom=np.array(["chr3", "chr3"]),
             start=np.array([100, 200]), end=np.array([110, 210]), variant=np.array(["", ""]),
             allele=np.array(["", ""]), pred_sum=np.ones((2, 2)), codes=np.zeros(2 * n, np.uint8),
             matrix=np.zeros((2, 4, 2 * n), np.float32), contrib=contrib)


def fake_demo(folder: Path) -> Path:
    """What a finished demo leaves that the script reads (figures as stand-in bytes)."""
    for rel in ("calibration", "run", "data", "explain/ism/plots", "explain/gradient"):
        (folder / rel).mkdir(parents=True, exist_ok=True)
    for name in ("qq", "diff_vs_null", "top_variants"):
        (folder / "calibration" / f"{name}.png").write_bytes(f"figure {name}".encode())
    (folder / "run" / "learning_curve.png").write_bytes(b"the trainer's curve")
    (folder / "explain" / "ism" / "plots" / "0002.e_2.a.png").write_bytes(b"second")
    (folder / "explain" / "ism" / "plots" / "0001.e_1.a.png").write_bytes(b"first element")
    (folder / "run" / "metrics.tsv").write_text(METRICS)
    (folder / "run" / "config.json").write_text(json.dumps({"training": {"epochs": 2, "seed": 0, "loss": "poisson"}}))
    (folder / "data" / "demo.json").write_text(json.dumps({"split": {"train": ["chr1"], "valid": ["chr2"],
                                                                      "test": ["chr3"]},
                                                            "tracks": ["a", "b"], "chrom_sizes": {"chr1": 512},
                                                            "targets": {"a": "targets/a.bw", "b": "targets/b.bw"}}))
    # pseudobulk: insertions summing to 0, 1, 3, 7 per 128 bp bin in both tracks; the bulk tracks' bin
    # means are the same in a (r 1) and reversed in b (r -1)
    from tests.helpers import write_bigwig

    (folder / "pseudobulk").mkdir()
    (folder / "data" / "targets").mkdir()
    sums = [0, 1, 3, 7]
    for track, means in (("a", sums), ("b", sums[::-1])):
        write_bigwig(folder / "pseudobulk" / f"{track}.bw", {"chr1": 512},
                     {"chr1": [(128 * i + 5, 128 * i + 6, float(v)) for i, v in enumerate(sums) if v]})
        write_bigwig(folder / "data" / "targets" / f"{track}.bw", {"chr1": 512},
                     {"chr1": [(128 * i, 128 * (i + 1), float(v)) for i, v in enumerate(means) if v]})
    (folder / "pseudobulk" / "qc.tsv").write_text(
        "cell_type\tcells\tfragments\tread_pairs\tduplicate_fraction\tfragments_per_cell\ttop1pct_fraction\t"
        "nucleosome_ratio\tbigwig\na\t10\t1000\t1200\t0.1667\t100\t0.3\t0.5\ta.bw\n"
        "b\t20\t2000\t2400\t0.1667\t100\t0.25\t0.5\tb.bw\n")
    (folder / "pseudobulk" / "fragment_lengths.png").write_bytes(b"banding")
    # evaluate: its Pearson of a differs from train's test row by 1e-6
    (folder / "evaluate").mkdir()
    (folder / "evaluate" / "metrics.tsv").write_text(
        "track\tbins\tpearson\tspearman\tpositive_bins\tauroc\tauprc\tpeaks\tpeak_pearson\tpeak_spearman\t"
        "specificity\na\t100\t0.850001\t0.8\t1\t0.95\t0.5\t3\t0.9\t0.9\t0.6\n"
        "b\t100\t0.65\t0.6\t1\t0.85\t0.5\t3\t0.7\t0.7\t0.4\n"
        "mean\t200\t0.7500005\t0.7\t2\t0.9\t0.5\t3\t0.8\t0.8\t0.5\n")
    (folder / "evaluate" / "evaluate.json").write_text(json.dumps({"chroms": ["chr3"],
                                                                   "specificity": {"overall": 0.55, "peaks": 3}}))
    (folder / "evaluate" / "heatmap.png").write_bytes(b"heat")
    (folder / "evaluate" / "report.html").write_text("<html></html>\n")
    (folder / "scores.tsv").write_text("chrom\tpos\tid\tref\talt\ttrack\tstatus\tdiff\tdiff_p\n" + "".join(
        "\t".join(map(str, row)) + "\n" for row in SCORES))
    (folder / "scores.tsv.options.json").write_text(json.dumps({"null": {"size": 100, "seed": 3}}))
    (folder / "data" / "variants_truth.tsv").write_text("chrom\tpos\tid\tref\talt\tclass\tmotif\ttracks\n" + "".join(
        "\t".join(map(str, row)) + "\n" for row in TRUTH))
    (folder / "data" / "motif_hits.bed").write_text("chr3\t102\t104\tSPI1\nchr3\t200\t202\tGATA1\n")
    # ism: region 1's site bases stand out (AUROC 1), region 2's tie with the rest (0.5); gradient: both 1
    write_contrib(folder / "explain" / "ism" / "contrib.npz", [[(2, 5.0), (3, -4.0)], []])
    write_contrib(folder / "explain" / "gradient" / "contrib.npz", [[(2, 5.0), (3, 4.0)], [(0, 3.0), (1, 2.0)]])
    (folder / "explain" / "gradient" / "explain.json").write_text("{}\n")
    # motifs: SPI1 named by a paralog at its second match, CTCF twice (the better q wins), GATA1 only
    # at q 0.2 (not found), a negative pattern naming CEBPB (not counted), FOS::JUN as FOSL2::JUN
    (folder / "motifs").mkdir(exist_ok=True)
    (folder / "motifs" / "motifs.tsv").write_text(
        "pattern\ttrack\tsign\tseqlets\tconsensus\tfactor\tmatch_1\tq_1\tmatch_2\tq_2\tmatch_3\tq_3\n"
        "a_pos_0\ta\tpos\t300\tAAGAGGAAGT\tZNF1\tMA1 (ZNF1)\t0.01\tMA2 (SPIB)\t0.02\t.\tNA\n"
        "a_pos_1\ta\tpos\t200\tCCGCGAGGGGGC\tCTCF\tMA3 (CTCF)\t0.001\t.\tNA\t.\tNA\n"
        "b_pos_0\tb\tpos\t100\tCCGCGAGGGGGC\tCTCF\tMA3 (CTCF)\t1e-05\t.\tNA\t.\tNA\n"
        "b_pos_1\tb\tpos\t50\tAGATAA\t.\tMA4 (GATA1)\t0.2\t.\tNA\t.\tNA\n"
        "b_neg_0\tb\tneg\t40\tTTGCGCAA\tCEBPB\tMA5 (CEBPB)\t0.001\t.\tNA\t.\tNA\n"
        "a_pos_2\ta\tpos\t30\tTGACTCA\tFOSL2::JUN\tMA6 (FOSL2::JUN)\t0.003\t.\tNA\t.\tNA\n")
    (folder / "motifs" / "motifs.json").write_text(json.dumps({"regions": 343, "patterns": 6,
                                                               "database": "JASPAR2026 CORE vertebrates, 9 motifs"}))
    (folder / "motifs" / "report.html").write_text("<html></html>\n")
    return folder


EXPECTED_NUMBERS = {
    "training": {"tracks": ["a", "b"], "epochs": 2, "seed": 0, "validations": 2,
                 "valid": {"chroms": ["chr2"], "step": 20, "pearson": 0.8, "by_track": {"a": 0.9, "b": 0.7}},
                 "test": {"chroms": ["chr3"], "step": 20, "pearson": 0.75, "by_track": {"a": 0.85, "b": 0.65}}},
    # max |diff|: c1 5, c2 3 against n1 0.2, n2 4: 3 of 4 pairs ordered
    "variants": {"auroc": 0.75, "causal": 2, "neutral": 2,
                 # neutral rows 0.6, 0.04, 0.01, 0.7: 2 of 4 below 0.05; causal on their tracks: 0.001, 0.002
                 "calibration": {"neutral_below_0.05": 0.5, "causal_median_p": 0.0015, "neutral_rows": 4,
                                 "causal_rows": 2},
                 "null": {"size": 100, "seed": 3},
                 "top": {"count": 5, "motif_sites": 3, "motifs": {"SPI1": 2, "FOS::JUN": 1}}},
    "explain": {"auroc": {"ism": 0.75, "gradient": 1.0}, "elements": 2, "chroms": ["chr3"]},
    "motifs": {"found": {"SPI1": {"pattern": "a_pos_0", "match": "MA2 (SPIB)", "qvalue": 0.02, "track": "a"},
                         "FOS::JUN": {"pattern": "a_pos_2", "match": "MA6 (FOSL2::JUN)", "qvalue": 0.003, "track": "a"},
                         "CTCF": {"pattern": "b_pos_0", "match": "MA3 (CTCF)", "qvalue": 1e-05, "track": "b"}},
               "missing": ["GATA1", "CEBPB"], "regions": 343, "patterns": 6,
               "database": "JASPAR2026 CORE vertebrates, 9 motifs"},
    "pseudobulk": {"cells": 30, "fragments": 3000,
                   "by_track": {"a": {"cells": 10, "top1pct_fraction": 0.3, "agreement": 1.0},
                                "b": {"cells": 20, "top1pct_fraction": 0.25, "agreement": -1.0}}},
    "evaluate": {"chroms": ["chr3"], "auroc": 0.9, "specificity": 0.55, "train_gap": 0.850001 - 0.85,
                 "by_track": {"a": {"pearson": 0.85, "specificity": 0.6}, "b": {"pearson": 0.65, "specificity": 0.4}}},
}

EXPECTED_TEXT = """\
Measured on the demo (tiny preset, 2 epochs, seed 0) by `python docs/make_figures.py`, which also
made the figures of this README from the same run: **pseudobulk** made 2 tracks from 3,000 fragments
of 30 cells, whose Pearson of log(x+1) per 128 bp bin with the demo's own bulk tracks (independent
draws of one truth) is a 1.00, b -1.00 (share of insertions in the top 1% of bins: 0.30, 0.25);
trained on them, held-out Pearson of log(x+1) per 128 bp bin **0.800** on the validation chromosome
chr2 (a 0.900, b 0.700; the best of 2 validations, step 20) and **0.750** on the test chromosome
chr3 (a 0.850, b 0.650); **AUROC of max |diff| over tracks, 2 motif-breaking (causal) against 2
neutral SNVs: 0.750**. 3 of the 5 variants with the largest max |diff| break a planted motif site in
the truth table (SPI1 2, FOS::JUN 1); the rules are in `epiformer-demo/data/RULES.md`. Calibration
against a genome-wide null of 100 random SNVs (seed 3): the neutral SNVs have `diff_p < 0.05` in
**50.0%** of their 4 track rows (random sites: 5%), and the motif-breaking SNVs a **median `diff_p`
of 0.0015** in their 2 rows of the tracks their broken motif drives. **explain: mean AUROC of
|contribution| for the planted motif-site bases against the other bases of their element, 2 chr3
elements: ISM 0.750, gradient 1.000.** **evaluate** on chr3: per-track Pearson a 0.850, b 0.650
(train's test Pearson within 1e-06), peak-vs-background AUROC 0.900, cell-type specificity 0.55 (a
0.60, b 0.40). **motifs: TF-MoDISco + TOMTOM over 343 explained elements found 3 of the 5 planted
motifs**: SPI1 as `MA2 (SPIB)` (q 2.0e-02, a); FOS::JUN as `MA6 (FOSL2::JUN)` (q 3.0e-03, a); CTCF
as `MA3 (CTCF)` (q 1.0e-05, b); not found: GATA1, CEBPB (6 patterns, JASPAR2026 CORE vertebrates, 9
motifs). The same seed gives the same numbers on the same CPU, and slightly different ones where the
matrix kernels round differently."""

README_TEXT = "# Title\n\nbefore\n\n<!-- demo-numbers:start -->\nold numbers\n<!-- demo-numbers:end -->\n\nafter\n"


def test_render_numbers_gives_the_exact_paragraph():
    assert mf.render_numbers(EXPECTED_NUMBERS) == EXPECTED_TEXT
    assert all(len(line) <= 100 for line in EXPECTED_TEXT.splitlines())
    without_test = json.loads(json.dumps(EXPECTED_NUMBERS))
    without_test["training"]["test"] = None
    assert " on the test chromosome" not in mf.render_numbers(without_test)


def test_wrap_keeps_code_spans_whole_and_no_line_starts_a_block():
    text = "a " * 45 + "`diff_p < 0.05` b " + "c " * 40 + "- d " + "e " * 48 + "1. f"
    wrapped = mf.wrap(text, 100).splitlines()
    assert " ".join(wrapped) == text.strip()
    assert all(line.count("`") % 2 == 0 for line in wrapped)  # no code span broken across lines
    assert not any(mf._BLOCK_START.match(line) for line in wrapped)
    assert mf._BLOCK_START.match("- d") and mf._BLOCK_START.match("> x") and mf._BLOCK_START.match("12. x")
    assert not mf._BLOCK_START.match("**0.8**") and not mf._BLOCK_START.match("|diff| x")


def test_the_script_makes_the_figures_numbers_and_readme_block(tmp_path, monkeypatch, capsys):
    demo = fake_demo(tmp_path / "demo")
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    monkeypatch.setattr(mf.subprocess, "run", lambda *a, **k: pytest.fail("a finished demo must not run again"))
    shots = []
    monkeypatch.setattr("epiformer_cli.motifs.screenshot.screenshot",
                        lambda html, png, **kw: shots.append(html) or Path(png).write_bytes(b"shot") or True)
    out = tmp_path / "docs"
    assert mf.main(["--demo", str(demo), "--out", str(out), "--readme", str(readme)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*mf.FIGURES, *mf.REPORTS, "demo-numbers.json"])
    assert shots == [demo / "motifs" / "report.html", demo / "evaluate" / "report.html"]
    assert (out / "motifs-report.png").read_bytes() == (out / "evaluate-report.png").read_bytes() == b"shot"
    assert (out / "evaluate-heatmap.png").read_bytes() == b"heat"
    assert (out / "calibration-qq.png").read_bytes() == b"figure qq"
    assert (out / "calibration-diff-vs-null.png").read_bytes() == b"figure diff_vs_null"
    assert (out / "top-variants.png").read_bytes() == b"figure top_variants"
    assert (out / "explain-example.png").read_bytes() == b"first element"
    assert (out / "learning-curve.png").read_bytes()[:8] == PNG_SIGNATURE  # drawn again, with the test row
    numbers = json.loads((out / "demo-numbers.json").read_text())
    assert _close(numbers, EXPECTED_NUMBERS), numbers
    text = readme.read_text()
    assert text == README_TEXT.replace("old numbers", mf.render_numbers(numbers))
    assert mf.render_numbers(numbers) == EXPECTED_TEXT
    assert "make_figures: wrote" in capsys.readouterr().err


def _close(got, want) -> bool:
    """Equal dicts, floats within 1e-12 (the AUROC and median are computed)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, float):
        return abs(got - want) <= 1e-12
    return got == want


def test_missing_markers_exit_1_before_anything_runs(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    monkeypatch.setattr(mf.subprocess, "run", lambda *a, **k: pytest.fail("nothing may run without the markers"))
    out = tmp_path / "docs"
    assert mf.main(["--demo", str(tmp_path / "none"), "--out", str(out), "--readme", str(readme)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"make_figures: error: {readme} lacks the markers <!-- demo-numbers:start --> and "
                   "<!-- demo-numbers:end --> (in that order): add them around the paragraph of demo numbers"]
    assert not out.exists() and readme.read_text() == "# no markers here\n"


def test_an_unfinished_demo_is_run_with_this_python(tmp_path, monkeypatch):
    demo = tmp_path / "demo"
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    calls = []

    def run(command, *args, **kwargs):
        calls.append(command)
        fake_demo(demo)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(mf.subprocess, "run", run)
    monkeypatch.setattr("epiformer_cli.motifs.screenshot.screenshot",
                        lambda html, png, **kw: Path(png).write_bytes(b"shot") or True)
    assert mf.main(["--demo", str(demo), "--out", str(tmp_path / "docs"), "--readme", str(readme)]) == 0
    assert calls == [[sys.executable, "-m", "epiformer_cli", "demo", "--out", str(demo)]]
    # a half-written demo (its last step missing) runs again
    (demo / mf.FINISHED).unlink()
    assert not mf.demo_finished(demo)


def test_without_chromium_the_screenshot_is_one_error_line(tmp_path, monkeypatch, capsys):
    demo = fake_demo(tmp_path / "demo")
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    monkeypatch.setattr("epiformer_cli.motifs.screenshot.screenshot", lambda html, png, **kw: False)
    assert mf.main(["--demo", str(demo), "--out", str(tmp_path / "docs"), "--readme", str(readme)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "make_figures: error: no Chromium found for the reports' screenshots: install it (Debian: apt-get install "
        "chromium) and run again")
    assert readme.read_text() == README_TEXT and not (tmp_path / "docs" / "motifs-report.png").exists()


def test_a_failed_demo_is_one_error_line(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    monkeypatch.setattr(mf.subprocess, "run", lambda command, *a, **k: subprocess.CompletedProcess(command, 3))
    assert mf.main(["--demo", str(tmp_path / "demo"), "--out", str(tmp_path / "docs"), "--readme", str(readme)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "make_figures: error: epiformer demo exited with 3: see its messages above")
    assert readme.read_text() == README_TEXT


def test_the_readme_says_what_demo_numbers_json_holds():
    """README.md's block is render_numbers of docs/demo-numbers.json: run docs/make_figures.py after
    the demo to update both."""
    path = REPO_DIR / "docs" / mf.NUMBERS
    assert path.is_file(), f"{path} is missing: run `python docs/make_figures.py` after `epiformer demo`"
    numbers = json.loads(path.read_text())
    text = (REPO_DIR / "README.md").read_text()
    block = text.split(mf.START, 1)[1].split(mf.END, 1)[0]
    assert block == f"\n{mf.render_numbers(numbers)}\n"
    for name in [*mf.FIGURES, *mf.REPORTS]:
        assert (REPO_DIR / "docs" / name).read_bytes()[:8] == PNG_SIGNATURE, name


# ---- what every figure shares -----------------------------------------------------------------------
def test_plain_escapes_every_dollar():
    from matplotlib.text import Text

    from epiformer_cli.plotting import plain

    for name in ("ATAC $x$", "$", "a$b$c$d", r"back\$slash", "under_score 100%"):
        assert Text()._preprocess_math(plain(name)) == (name, False), name


def test_latex_is_off_in_a_process_that_imports_matplotlib_through_the_tool(tmp_path):
    """A matplotlibrc in the working folder that turns LaTeX on does not reach the tool's figures."""
    (tmp_path / "matplotlibrc").write_text("text.usetex: True\n")
    code = ("from epiformer_cli.plotting import import_pyplot\n"
            "plt = import_pyplot()\n"
            "import matplotlib\n"
            "print(matplotlib.rcParams['text.usetex'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    check = subprocess.run([sys.executable, "-c", "import matplotlib; print(matplotlib.rcParams['text.usetex'])"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == "True"  # the file is read: the tool is what turns it off
