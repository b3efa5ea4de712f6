"""`prepare`: exact store contents on tiny files, splits, window filters, no-op and resume."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.data.training_store import TrainingStore
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.jobs import prepare as prepare_module
from epiformer_cli.jobs.prepare import prepare_store
from epiformer_cli.options import PrepareOptions
from tests.helpers import float_tolerance, write_bigwig, write_fasta

SIZES = {"chr1": 2048, "chr2": 1024, "chr3": 1000}
WINDOW = 512


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(3)
    seqs = {c: "".join(rng.choice(list("ACGTacgt"), n)) for c, n in SIZES.items()}
    # chr1: a 300 bp N run in [1024, 1324) -> its windows exceed 10% N
    seqs["chr1"] = seqs["chr1"][:1024] + "N" * 300 + seqs["chr1"][1324:]
    fasta = write_fasta(tmp_path / "g.fa", seqs)
    # target "a": value = position // 128 (one value per bin); bigWig uses Ensembl names
    ens = {c.replace("chr", ""): n for c, n in SIZES.items()}
    write_bigwig(tmp_path / "a.bw", ens, {c: [(s, min(s + 128, n), s // 128) for s in range(0, n, 128)]
                                              for c, n in ens.items()})
    # target "b": 1.0 on the first half of each bin, 0 (no data) on the second half
    write_bigwig(tmp_path / "b.bw", SIZES, {c: [(s, s + 64, 1.0) for s in range(0, n - 64, 128)]
                                                for c, n in SIZES.items()})
    cons = write_bigwig(tmp_path / "cons.bw", SIZES, {"chr1": [(0, 10, 0.5), (10, 20, 1.5)]})
    sheet = tmp_path / "targets.tsv"
    sheet.write_text("name\tpath\tscale\tclip\tstat\na\ta.bw\t2\t10\tmean\nb\tb.bw\t\t\tsum\n")
    black = tmp_path / "black.bed"
    black.write_text("track name=bl\nchr1\t1600\t1610\nchrUn\t0\t10\n")
    return dict(fasta=fasta, cons=cons, targets=sheet, blacklist=black)


def run_prepare(inputs, out, **kw):
    options = dict(window_bp=WINDOW, step_bp=256, valid_chroms=["chr2"], test_chroms=["chr3"])
    options.update(kw)
    return prepare_store(**inputs, out=out, options=PrepareOptions.of(**options))


def test_store_contents_are_exact(inputs, tmp_path):
    summary = run_prepare(inputs, tmp_path / "store")
    store = TrainingStore(tmp_path / "store")
    assert store.tracks == ["a", "b"] and store.chroms == ["chr1", "chr2", "chr3"]
    from epiformer_cli.io.genome import Genome

    np.testing.assert_array_equal(store.read_inputs(0, 0, 2048)[0], Genome(inputs["fasta"]).fetch("chr1", 0, 2048))
    codes, cons, targets = store.read_window(0, 0, 512)
    # conservation: 0.5 -> 128/255, 1.5 clipped to 1, missing -> 0
    # one float32 rounding of code / 255 (a code off by one is 1/255 = 4e-3 away)
    np.testing.assert_allclose(cons[:25], [128 / 255] * 10 + [1.0] * 10 + [0.0] * 5, rtol=float_tolerance(1.0), atol=0)
    # a: bin value k, scaled by 2, clipped at 10; b: sum of 64 bases of 1.0
    np.testing.assert_array_equal(targets[0], [0, 2, 4, 6])
    np.testing.assert_array_equal(store.read_targets(0, 1536, 2048)[0], [10, 10, 10, 10])
    np.testing.assert_array_equal(targets[1], [64, 64, 64, 64])
    # chr3 ends mid-bin (1000 bp): its last bin averages the 104 real bases with zeros past the end
    assert store.read_targets(2, 896, 1024)[0, 0] == pytest.approx(min(7 * 2 * 104 / 128, 10))
    assert summary.windows == {"train": 3, "valid": 3, "test": 2}


def test_windows_split_by_chromosome_and_filtered(inputs, tmp_path):
    run_prepare(inputs, tmp_path / "store")
    store = TrainingStore(tmp_path / "store")
    import pandas as pd

    table = pd.read_csv(tmp_path / "store" / "windows.tsv", sep="\t")
    assert set(table[table.split == "valid"].chrom) == {"chr2"}
    assert set(table[table.split == "test"].chrom) == {"chr3"}
    train_starts = sorted(table[table.split == "train"].start)
    # chr1 starts 0..1536 by 256: 768 and 1024 hold > 10% N (of the run [1024, 1324)), 1280 holds
    # 44 N (8.6%, kept for N) but 1280 and 1536 overlap the blacklisted [1600, 1610)
    assert train_starts == [0, 256, 512]
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["windows_dropped"] == {"n_fraction": 2, "blacklist": 2}
    assert len(store.windows("train")) == 3


def test_rerun_is_a_noop_and_other_inputs_are_refused(inputs, tmp_path):
    out = tmp_path / "store"
    run_prepare(inputs, out)
    before = (out / "manifest.json").read_text()
    assert run_prepare(inputs, out).reused
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(UsageError, match=r"made with other options \(--step: \d+ in the store, 128 now\): use --force"):
        run_prepare(inputs, out, step_bp=128)
    assert not run_prepare(inputs, out, step_bp=128, force=True).reused
    assert json.loads((out / "manifest.json").read_text())["step_bp"] == 128
    assert not list(tmp_path.glob(".store*"))


def test_interrupted_build_resumes_to_the_same_store(inputs, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run_prepare(inputs, reference)
    real = prepare_module._write_chromosome
    calls = []

    def dies_on_second(*args, **kw):
        calls.append(args[6])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(prepare_module, "_write_chromosome", dies_on_second)
    out = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        run_prepare(inputs, out)
    assert not out.exists() and (tmp_path / ".store.partial").exists()
    monkeypatch.setattr(prepare_module, "_write_chromosome", lambda *a, **k: (calls.append(a[6]), real(*a, **k))[1])
    run_prepare(inputs, out)
    assert calls == ["chr1", "chr2", "chr2", "chr3"]  # chr1 was not redone
    for sub in ("seq", "cons", "targets"):
        for f in (reference / sub).iterdir():
            assert f.read_bytes() == (out / sub / f.name).read_bytes()
    assert (reference / "windows.tsv").read_text() == (out / "windows.tsv").read_text()


def test_target_lacking_a_chromosome_is_an_error(inputs, tmp_path):
    short = write_bigwig(tmp_path / "short.bw", {"chr1": 2048}, {"chr1": [(0, 10, 1.0)]})
    sheet = tmp_path / "t2.tsv"
    sheet.write_text(f"name\tpath\nshort\t{short}\n")
    with pytest.raises(InputFileError, match="chr2"):
        run_prepare(dict(inputs, targets=sheet), tmp_path / "store")
    # excluding the chromosomes it lacks makes it work (held-out sets must then be chosen among the rest)
    with pytest.raises(UsageError):
        run_prepare(dict(inputs, targets=sheet), tmp_path / "store", chroms=["chr1"], valid_chroms=None, test_chroms=None)


def test_default_held_out_chromosomes_need_chr8_chr9(inputs, tmp_path):
    with pytest.raises(UsageError, match="--valid-chroms"):
        run_prepare(inputs, tmp_path / "store", valid_chroms=None, test_chroms=None)


def test_cli_prepare(inputs, tmp_path):
    runner = CliRunner()
    args = ["prepare", "--fasta", str(inputs["fasta"]), "--cons", str(inputs["cons"]), "--targets",
            str(inputs["targets"]), "--out", str(tmp_path / "store"), "--window", "512", "--valid-chroms", "chr2",
            "--test-chroms", "chr3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "store" / "manifest.json").exists()
    result = runner.invoke(app, args[:-4] + ["--valid-chroms", "chr2", "--test-chroms", "chr2"])
    assert result.exit_code == 2
    assert "both validation and test" in result.output
    missing = runner.invoke(app, ["prepare", "--targets", "t.tsv", "--out", str(tmp_path / "x")], env={"EPIFORMER_FASTA": ""})
    assert missing.exit_code == 2 and "--fasta" in missing.output
