"""`epiformer demo` end to end (four training epochs: enough for the explain step to find the
planted motifs; about three minutes on 2 CPU cores).

The demo runs once in the suite, as the installed command in a sandbox (tests/test_sandbox.py):
no network, a fresh HOME, TMPDIR and working directory. Besides its results, the test checks that
it wrote nothing outside its output folder (the default ./epiformer-demo) and the temp dir.
"""

import re

import pandas as pd
import pyBigWig

from epiformer_cli.jobs.demo import auroc
from tests.helpers import Sandbox, epiformer_command


def test_auroc_matches_hand_computed_values():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([1, 1, 1], [True, False, False]) == 0.5  # ties count one half
    assert auroc([3, 2, 1], [True, True, False]) == 1.0


def test_demo_runs_the_whole_pipeline(tmp_path):
    """Offline, writing only into its output folder (and the temp dir), as the installed command."""
    box = Sandbox(tmp_path, output="epiformer-demo")  # the demo's default --out, in the working directory
    proc = box.run(epiformer_command() + ["-q", "demo", "--epochs", "4", "--device", "cpu"], timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = box.output
    # offline: no socket call but local AF_UNIX ones (DataLoader workers passing file descriptors)
    assert box.guarded_pids(), "the network guard was not loaded"
    assert box.network_attempts() == []
    # nothing written outside the output and the temp dir: by any Python call of any of its
    # processes (anywhere), nor found in HOME (caches), the working directory or the repository
    assert box.writes_outside() == []
    assert box.changes_outside() == []
    text = proc.stdout
    pearson = float(re.search(r"valid \(chr2\) ([0-9.]+)", text).group(1))
    assert 0.4 < pearson <= 1.0  # four epochs learn much of the rule (0.676 measured; 0.862 after ten)
    assert re.search(r"AUROC .*: 0\.\d{3}", text)
    for track in ("microglia", "neuron", "oligodendrocyte"):
        for kind in ("pred", "targets"):
            bw = pyBigWig.open(str(out / "predictions" / f"{kind}.{track}.bw"))
            assert list(bw.chroms()) == ["chr1", "chr2", "chr3", "chrX"]
            bw.close()
    scores = pd.read_csv(out / "scores.tsv", sep="\t", dtype={"chrom": str})
    truth = pd.read_csv(out / "data" / "variants_truth.tsv", sep="\t")
    # every allele of the VCF (multi-allelic records split) has one row per track
    alleles = sum(len(alts.split(",")) for alts in truth["alt"])
    assert alleles > len(truth) and len(scores) == 3 * alleles
    assert set(scores["status"]) == {"ok", "ref_mismatch"}
    assert (out / "run" / "model.pt").exists() and (out / "run" / "learning_curve.png").exists()
    # calibration against the default null of 10,000 random SNVs: motif-breaking SNVs stand out,
    # neutral ones (far from every element) do not
    calibrated = re.search(r"neutral SNVs .* have diff_p < 0.05 in ([0-9.]+)% .* motif-breaking SNVs have median "
                           r"diff_p ([0-9.e-]+) ", text)
    assert calibrated, text
    assert float(calibrated.group(1)) < 15 and float(calibrated.group(2)) < 0.05
    ok = scores[scores["status"] == "ok"]
    # the smallest p is 1 / 10,001, printed as 9.999e-05
    assert ok["diff_p"].between(9.999e-05, 1).all() and ok["ref_quantile"].between(0, 1).all()
    assert (out / "null.tsv.gz").exists()
    assert sorted(p.name for p in (out / "calibration").iterdir()) == ["diff_vs_null.png", "qq.png", "top_variants.png"]
    # explain: the planted motif sites carry the contribution inside their elements, by both
    # methods (measured after four epochs: ism 0.958, gradient 0.958; after ten 0.978 and 0.942;
    # after one epoch the model has not learned the motifs yet: 0.49 and 0.48)
    found = re.search(r"over 12 chr3 elements: ism ([0-9.]+), gradient ([0-9.]+)", text)
    assert found, text
    assert float(found.group(1)) > 0.8 and float(found.group(2)) > 0.7
    # motifs: TF-MoDISco + TOMTOM over the chr3 elements name the planted motifs, and the causal SNVs
    # (each breaks a planted site) sit in an instance of a learned pattern, the neutral ones do not
    motifs = re.search(r"motifs: .* over (\d+) chr3 elements found (\d) of the 5 planted motifs", text)
    assert motifs, text
    assert int(motifs.group(1)) > 300 and int(motifs.group(2)) >= 3
    assert {p.name for p in (out / "motifs").iterdir()} >= {"motifs.tsv", "patterns.meme", "seqlets.bed",
                                                             "report.html", "motifs.json"}
    assert {"motif", "motif_strand", "motif_ref_score", "motif_alt_score"} <= set(scores.columns)
    def in_a_learned_motif(kind):
        rows = scores[scores["id"].astype(str).str.startswith(kind) & (scores["status"] == "ok")]
        return float((rows["motif"].fillna(".") != ".").mean())

    # after ten epochs: 86% of the causal rows, 2.7% of the neutral ones (far from every element)
    assert in_a_learned_motif("causal") > 0.5 and in_a_learned_motif("neutral") < 0.2
    for method in ("ism", "gradient"):
        assert (out / "explain" / method / "contrib.npz").exists()
        assert len(list((out / "explain" / method / "plots").glob("*.png"))) == 3  # one element, three tracks
