"""`predict`: whole genome vs regions vs shards vs resumed runs give the same bins; bigWig values
equal the model's own output; bad input is refused in one line before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.data.prediction_store import PredictionStore
from epiformer_cli.errors import ChromosomeMismatchError, UsageError
from epiformer_cli.runs import Shard, resolve_shard
from epiformer_cli.model.modelfile import save_model
from tests.helpers import (FAST, SIZES, TRACKS, float_tolerance, network_reductions, predict, predict_inputs,
                           random_model, read_bw, write_bigwig)

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return predict_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def whole(inputs, tmp_path_factory):
    """One uninterrupted whole-genome run: the reference the other runs must equal."""
    folder = tmp_path_factory.mktemp("whole")
    summary = predict(**inputs, out=folder / "pred.bw", **FAST)
    return summary



def test_whole_genome_covers_every_bin_in_fasta_order(whole):
    assert set(whole.outputs) == set(TRACKS)
    assert whole.outputs["ASCT"].name == "pred.ASCT.bw" and whole.outputs["OPC"].name == "pred.OPC.bw"
    for path in whole.outputs.values():
        data = read_bw(path)
        assert data["header"] == list(SIZES.items())
        for chrom, size in SIZES.items():
            starts, ends, values = data[chrom]
            n_bins = -(-size // 128)
            np.testing.assert_array_equal(starts, np.arange(n_bins) * 128)
            assert ends[-1] == size  # the last bin is clipped to the chromosome end
            assert np.isfinite(values).all() and (values > 0).all()  # softplus, never NaN
    assert whole.windows_computed == 10 and whole.chunks_computed == 6


def test_bigwig_values_equal_the_models_direct_output(inputs, whole):
    """Recompute sampled windows straight from the FASTA and bigWig with the eager model."""
    from epiformer_cli.data.encoding import model_inputs
    from epiformer_cli.data.tiling import WindowGrid
    from epiformer_cli.io.bigwig import BigWig
    from epiformer_cli.io.genome import Genome
    from epiformer_cli.model.modelfile import load_model

    loaded = load_model(inputs["model"])
    grid = WindowGrid.from_config(loaded.config)
    genome = Genome(inputs["fasta"])
    cons = BigWig(inputs["cons"])
    cons.bind(genome.chroms)
    bws = {t: read_bw(p) for t, p in whole.outputs.items()}
    for chrom, index in [("chr1", 0), ("chr1", 1), ("chr1", 4), ("chr2", 3), ("chrM", 0)]:
        w = grid.window(chrom, index)
        codes = torch.from_numpy(genome.fetch(chrom, w.start, w.end))[None]
        c = torch.from_numpy(cons.values(chrom, w.start, w.end))[None]
        with torch.no_grad():
            direct = loaded.model(model_inputs(codes, c, loaded.config.conservation)).numpy()[0]
        n = grid.bins_in_chrom(w, SIZES[chrom])
        b0 = w.out_start // 128
        for t, track in enumerate(TRACKS):
            got = bws[track][chrom][2][b0:b0 + n]
            # the fast inference path folds normalisation affines and sums in other orders: float32
            # rounding through the network (4e-5 here); another track's values differ by 1.6e-2 (this
            # random model is nearly flat along a window: bins and windows differ by ~5e-5 only)
            tol = float_tolerance(np.abs(direct).max(), **network_reductions(loaded.config))
            np.testing.assert_allclose(got, direct[t, :n], rtol=0, atol=tol)


def test_regions_equal_the_same_bins_of_the_whole_genome_run(inputs, whole, tmp_path):
    bed = tmp_path / "regions.bed"
    # overlapping and adjacent regions merge; "2" is an alias of chr2; one region spans a window edge
    bed.write_text("chr1\t1000\t1300\nchr1\t1200\t1500\nchr1\t1500\t1501\n2\t12000\t12600\nchrM\t0\t50\n")
    summary = predict(**inputs, out=tmp_path / "r.bw", regions=bed, **FAST)
    ref = read_bw(whole.outputs["OPC"])
    got = read_bw(summary.outputs["OPC"])
    assert got["header"] == list(SIZES.items())
    expected_bins = {"chr1": list(range(1000 // 128, 1501 // 128 + 1)), "chr2": list(range(12000 // 128, 12600 // 128 + 1)),
                     "chrM": [0]}
    for chrom, bins in expected_bins.items():
        starts, _, values = got[chrom]
        np.testing.assert_array_equal(starts, np.array(bins) * 128)  # exactly the overlapping bins
        np.testing.assert_array_equal(values, ref[chrom][2][bins])
    assert summary.windows_computed == 4  # chr1 w0, chr2 w0 and w1 (12,000 is in window 0), chrM w0


def test_sharded_runs_plus_export_equal_one_run(inputs, whole, tmp_path):
    store = tmp_path / "store"
    runner = CliRunner()
    for i in (1, 2, 3):
        summary = predict(**inputs, store=store, shard=f"{i}/3", **FAST)
        assert not summary.outputs and summary.chunks_computed == 2
    assert not list(tmp_path.glob("*.bw"))  # shards write only the store
    result = runner.invoke(app, ["export-bigwig", str(store), "--out", str(tmp_path / "s.bw")])
    assert result.exit_code == 0, result.output
    for track in TRACKS:
        a, b = read_bw(whole.outputs[track]), read_bw(tmp_path / f"s.{track}.bw")
        for chrom in SIZES:
            for k in range(3):
                np.testing.assert_array_equal(a[chrom][k], b[chrom][k])


def test_reads_are_bounded_by_the_batch_not_the_chromosome(inputs, whole, tmp_path, monkeypatch):
    """With a chunk holding a whole chromosome and a batch of one window, no FASTA or bigWig read
    may be longer than one window (plus shift context): reading a chunk's (or a chromosome's) span
    at once is what made memory grow with the chromosome. Values stay those of the reference run."""
    from epiformer_cli.io.bigwig import BigWig
    from epiformer_cli.io.genome import Genome

    reads = []

    def spy(method):
        def wrapped(self, chrom, start, end, *args, **kwargs):
            reads.append((method.__qualname__, chrom, start, end))
            return method(self, chrom, start, end, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(Genome, "fetch", spy(Genome.fetch))
    monkeypatch.setattr(BigWig, "values", spy(BigWig.values))
    options = dict(FAST, batch_size=1, chunk_windows=None, shifts="0,3")  # context: 3 bp each side
    summary = predict(**inputs, out=tmp_path / "b.bw", **options)
    assert summary.chunks_computed == len(SIZES)  # one chunk per chromosome
    assert {name for name, *_ in reads} == {"Genome.fetch", "BigWig.values"}
    assert max(end - start for *_, start, end in reads) <= 16_384 + 2 * 3
    # shift averaging changes values; the read pattern is what is checked above, values below
    plain = predict(**inputs, out=tmp_path / "p.bw", **dict(FAST, batch_size=1, chunk_windows=None))
    for track in TRACKS:
        a, b = read_bw(whole.outputs[track]), read_bw(plain.outputs[track])
        for chrom in SIZES:
            np.testing.assert_array_equal(a[chrom][2], b[chrom][2])


def test_killed_and_resumed_equals_uninterrupted(inputs, whole, tmp_path, monkeypatch):
    out = tmp_path / "k.bw"
    write = PredictionStore.write
    written = []

    def failing_write(self, chunk, values):  # the disk fails after two chunks
        if len(written) == 2:
            raise OSError("simulated failure")
        write(self, chunk, values)
        written.append(chunk)

    monkeypatch.setattr(PredictionStore, "write", failing_write)
    with pytest.raises(OSError, match="simulated failure"):
        predict(**inputs, out=out, **FAST)
    monkeypatch.setattr(PredictionStore, "write", write)
    assert not out.with_name("k.ASCT.bw").exists()  # nothing half-written
    store = PredictionStore(tmp_path / ".k.bw.store")
    done_before = len(store.chunks) - len(store.missing())
    assert done_before == 2
    summary = predict(**inputs, out=out, **FAST)
    assert summary.chunks_done_before == done_before and summary.chunks_computed == 6 - done_before
    # delete a finished chunk (a lost file): only it is recomputed
    store.chunk_path(store.chunks[3]).unlink()
    again = predict(**inputs, out=out, **FAST)
    assert again.chunks_computed == 1
    for track in TRACKS:
        a, b = read_bw(whole.outputs[track]), read_bw(out.with_name(f"k.{track}.bw"))
        for chrom in SIZES:
            np.testing.assert_array_equal(a[chrom][2], b[chrom][2])


def test_store_of_other_options_is_refused_unless_forced(inputs, whole):
    out = whole.outputs["ASCT"].with_name("pred.bw")
    with pytest.raises(UsageError, match=r"made with other options \(--rc-average: the store has it off, this run on\)"):
        predict(**inputs, out=out, **dict(FAST, rc_average=True))
    with pytest.raises(UsageError, match=r"made with other options \(--tracks: all in the store, OPC now\)"):
        predict(**inputs, out=out, tracks=["OPC"], **FAST)


def test_force_discards_a_store_of_other_options(inputs, tmp_path):
    kw = dict(inputs, out=tmp_path / "f.bw", chroms=["chrM"], **FAST)
    predict(**kw)
    summary = predict(**dict(kw, tracks=["OPC"]), force=True)
    assert summary.chunks_computed == 1 and list(summary.outputs.values()) == [tmp_path / "f.bw"]


def test_cli_end_to_end_with_environment_defaults(inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("EPIFORMER_FASTA", str(inputs["fasta"]))
    monkeypatch.setenv("EPIFORMER_CONS", str(inputs["cons"]))
    monkeypatch.setenv("EPIFORMER_MODEL", str(inputs["model"]))
    monkeypatch.setenv("EPIFORMER_DEVICE", "cpu")
    out = tmp_path / "one.bw"
    result = CliRunner().invoke(app, ["predict", "--out", str(out), "--tracks", "OPC", "--chroms", "chrM",
                                      "--shifts", "0,3", "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    data = read_bw(out)  # one track: --out is that file
    assert data["header"] == list(SIZES.items()) and len(data["chrM"][2]) == 1 and "chr1" in data
    assert len(data["chr1"][0]) == 0  # not predicted: absent, not zero
    options = json.loads((tmp_path / ".one.bw.store" / "predict-options.json").read_text())
    assert options["options"]["inference"]["shifts"] == [0, 3] and options["options"]["inference"]["precision"] == "bf16"
    assert options["inputs"]["fasta"] == str(inputs["fasta"]) and options["tracks"] == ["OPC"]


@pytest.mark.parametrize("spec", ["0/0", "5/3", "4/3", "0/3", "x", "1/2/3", "-1/3"])
def test_bad_shard_specs_exit_2(spec, inputs, tmp_path):
    result = CliRunner().invoke(app, ["predict", "--fasta", str(inputs["fasta"]), "--cons", str(inputs["cons"]),
                                      "--model", str(inputs["model"]), "--out", str(tmp_path / "x.bw"), "--shard", spec])
    assert result.exit_code == 2
    assert "--shard" in result.output and not list(tmp_path.iterdir())


def test_shard_resolution_and_slurm_environment():
    assert resolve_shard("2/3", {}) == Shard(1, 3)
    assert resolve_shard("1/1", {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}).whole
    assert resolve_shard(None, {}).whole
    assert resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}) == Shard(2, 4, "SLURM array")
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert resolve_shard(None, env) == Shard(3, 4, "SLURM array")
    # under torchrun each shard is split again between the ranks, round-robin over the pieces
    assert Shard(1, 3).split(1, 2) == Shard(3, 6) and Shard(1, 3).split(0, 1) == Shard(1, 3)
    assert Shard(3, 6).take(list(range(14))) == [3, 9]
    with pytest.raises(UsageError):
        resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4"})


def test_torchrun_ranks_split_chunks_and_rank_0_writes(inputs, whole, tmp_path):
    out = tmp_path / "d.bw"
    rank1 = predict(**inputs, out=out, environ={"WORLD_SIZE": "2", "RANK": "1"}, **FAST)
    assert rank1.chunks_computed == 3 and not rank1.outputs
    rank0 = predict(**inputs, out=out, environ={"WORLD_SIZE": "2", "RANK": "0"}, **FAST)
    assert rank0.chunks_computed == 3 and set(rank0.outputs) == set(TRACKS)
    a, b = read_bw(whole.outputs["ASCT"]), read_bw(rank0.outputs["ASCT"])
    for chrom in SIZES:
        np.testing.assert_array_equal(a[chrom][2], b[chrom][2])


# ---- refusals: one line, nothing written ---------------------------------------------------------
def run_cli(args):
    result = CliRunner().invoke(app, ["predict", *args])
    lines = [line for line in result.output.strip().splitlines() if line.startswith("epiformer: error:")]
    return result.exit_code, lines


def base_args(inputs, out):
    return ["--fasta", str(inputs["fasta"]), "--cons", str(inputs["cons"]), "--model", str(inputs["model"]),
            "--out", str(out), "--device", "cpu"]


def test_disjoint_chromosome_names_are_refused(inputs, tmp_path):
    other = write_bigwig(tmp_path / "other.bw", {"scaffold_1": 1000}, {"scaffold_1": [(0, 10, 0.5)]})
    args = base_args(inputs, tmp_path / "x.bw")
    args[args.index("--cons") + 1] = str(other)
    code, lines = run_cli(args)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("epiformer: error:") and "scaffold_1" in lines[0]
    assert not list(tmp_path.glob("x*.bw")) and not list(tmp_path.glob(".*store"))
    with pytest.raises(ChromosomeMismatchError):
        predict(**dict(inputs, cons=other), out=tmp_path / "x.bw", **FAST)


def test_model_that_cannot_work_is_refused(inputs, tmp_path):
    code, lines = run_cli(base_args(inputs, tmp_path / "x.bw") + ["--window", "98304"])
    assert code == 2 and "16,384" in lines[0] and "--window" in lines[0]
    args = base_args(inputs, tmp_path / "x.bw")
    del args[2:4]  # no --cons for a model that uses conservation
    code, lines = run_cli(args)
    assert code == 2 and "--cons" in lines[0]
    code, lines = run_cli(base_args(inputs, tmp_path / "x.bw")[:-1] + ["cuda:7"])
    assert code in (1, 2) and "cuda" in lines[0]
    code, lines = run_cli(base_args(inputs, tmp_path / "x.bw") + ["--precision", "fp16"])
    assert code == 1 and "bf16" in lines[0]
    scaled = random_model(seed=1, conservation="scale", seq_len=8192)
    path = save_model(tmp_path / "scaled.pt", scaled, scaled.config, TRACKS)
    code, lines = run_cli(base_args(dict(inputs, model=path), tmp_path / "x.bw") + ["--window", "16384"])
    assert code == 2 and "8,192" in lines[0]
    assert not list(tmp_path.glob("*.bw")) and not list(tmp_path.glob(".*store"))


@pytest.mark.parametrize("line, message", [
    ("chr9\t0\t100\n", "chr9"),
    ("chr1\t59000\t61000\n", "ends past"),
    ("chr1\tten\t100\n", "not a BED line"),
])
def test_bad_regions_are_refused(inputs, tmp_path, line, message):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t0\t10\n" + line)
    code, lines = run_cli(base_args(inputs, tmp_path / "x.bw") + ["--regions", str(bed)])
    assert code == 1 and len(lines) == 1 and message in lines[0]
    assert not list(tmp_path.glob(".*store"))


def test_unwritable_output_is_refused_before_any_work(inputs, tmp_path):
    (tmp_path / "a-file").write_text("")
    code, lines = run_cli(base_args(inputs, tmp_path / "a-file" / "x.bw"))
    assert code == 2 and f"{tmp_path / 'a-file'} is a file, not a folder" in lines[0]
    code, lines = run_cli(base_args(inputs, tmp_path))
    assert code == 2 and "is a folder" in lines[0]
    # an unwritable folder: tests/test_bad_inputs.py (output-in-unwritable-folder rows)


def test_help_documents_per_track_files_and_shards():
    result = CliRunner().invoke(app, ["predict", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "pred.<track>.bw" in text and "--shard" in text and "SLURM_ARRAY_TASK_ID" in text
