"""`epiformer demo` end to end (one training epoch, so it stays about a minute on 2 CPU cores)."""

import re

import pandas as pd
import pyBigWig
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.jobs.demo import auroc


def test_auroc_matches_hand_computed_values():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([1, 1, 1], [True, False, False]) == 0.5  # ties count one half
    assert auroc([3, 2, 1], [True, True, False]) == 1.0


def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["-q", "demo", "--out", str(out), "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    pearson = float(re.search(r"valid \(chr2\) ([0-9.]+)", text).group(1))
    assert 0.3 < pearson <= 1.0  # one epoch already learns much of the rule (0.53 measured)
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
