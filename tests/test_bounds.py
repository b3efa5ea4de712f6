"""Bounds said up front (issue 21): every count option has a range, refused in one line naming the
option, in the core and on the command line; the memory pre-check (``runs.space``) and the
estimates it is given, each held against a real measurement (tracemalloc, the fast model's work
buffers, autograd's saved tensors, the incremental tower's kept state)."""

from __future__ import annotations

import gc
import logging
import re
import time
import tracemalloc

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.io.identity import cache_dir
from epiformer_cli.errors import UsageError
from epiformer_cli.explain.gradient import gradient_memory_bytes, gradient_memory_parts, graph_bytes
from epiformer_cli.explain.ism import IsmExplainer, ism_memory_bytes, ism_memory_parts, variant_mutants
from epiformer_cli.inference.engine import InferenceEngine, inference_memory_bytes, workspace_bytes
from epiformer_cli.model.config import preset
from epiformer_cli.model.families import build_network
from epiformer_cli.model.fast import prepare_for_inference
from epiformer_cli.options import (ExplainOptions, InferenceOptions, MotifsOptions, PredictOptions, PrepareOptions,
                                   ScoreOptions, TrainOptions)
from epiformer_cli.runs import space
from epiformer_cli.variants.null import null_memory_bytes
from tests.helpers import predict, predict_inputs, score_files, sensitive_model

MAX_SEED = 2 ** 32 - 1

# (options class, field, option name, lowest, highest): every count option of the core
RANGES = [
    (InferenceOptions, "batch_size", "--batch-size", 1, 4096),
    (PredictOptions, "chunk_windows", "--chunk-windows", 1, 100_000),
    (ScoreOptions, "null_size", "--null-size", 0, 10_000_000),
    (ScoreOptions, "seed", "--seed", 0, MAX_SEED),
    (ScoreOptions, "score_bins", "--score-bins", 1, 8192),
    (ScoreOptions, "chunk_size", "--chunk-size", 1, 1_000_000),
    (ScoreOptions, "explain_flank", "--explain-flank", 0, 524_288),
    (ExplainOptions, "flank", "--flank", 0, 524_288),
    (ExplainOptions, "plot", "--plot", 0, 1_000),
    (ExplainOptions, "max_mutants", "--max-mutants", 0, 1_000_000_000),
    (ExplainOptions, "top", "--top", 1, 1_000_000),
    (ExplainOptions, "peak_width", "--peak-width", 1, 1 << 20),
    (MotifsOptions, "window", "--window", 41, 100_000),
    (MotifsOptions, "max_seqlets", "--max-seqlets", 101, 1_000_000),
    (TrainOptions, "epochs", "--epochs", 1, 100_000),
    (TrainOptions, "max_steps", "--max-steps", 1, 100_000_000),
    (TrainOptions, "checkpoint_every", "--checkpoint-every", 1, 100_000_000),
    (TrainOptions, "batch_size", "--batch-size", 1, 4096),
    (TrainOptions, "accumulate", "--accumulate", 1, 4096),
    (TrainOptions, "warmup_steps", "--warmup-steps", 0, 100_000_000),
    (TrainOptions, "workers", "--workers", 0, 256),
    (TrainOptions, "seed", "--seed", 0, MAX_SEED),
]
# options that must be multiples of 128 bp: their range is checked at the largest multiple
WINDOWS = [
    (PrepareOptions, "window_bp", "--window", 128, 1 << 20),
    (PrepareOptions, "step_bp", "--step", 128, 1 << 20),
    (PredictOptions, "window", "--window", 128, 1 << 20),
]


def _ids(rows):
    return [f"{cls.__name__}.{name}" for cls, name, *_ in rows]


@pytest.mark.parametrize("cls, name, option, low, high", RANGES + WINDOWS, ids=_ids(RANGES + WINDOWS))
def test_each_count_has_a_range_said_in_one_line(cls, name, option, low, high):
    step = 128 if (cls, name, option, low, high) in WINDOWS else 1
    cls(**{name: high})  # the bounds themselves are accepted
    if low > 0 and step == 1:
        cls(**{name: low})
    for bad in (high + step, 1000 * high):
        with pytest.raises(UsageError) as caught:
            cls(**{name: bad})
        assert str(caught.value) == f"{option} must be between {low:,} and {high:,} (got {bad:,})"


def test_the_seeds_refuse_negative_values_named():
    # numpy's seeds refuse negative integers: before, `--seed -1` was an internal error of the null's draw
    with pytest.raises(UsageError, match=r"^--seed must be at least 0, got -1$"):
        ScoreOptions(seed=-1)
    with pytest.raises(UsageError, match=r"--seed must be at least 0, got -1"):
        TrainOptions(seed=-1)


def test_the_null_size_message_is_the_one_of_the_issue():
    with pytest.raises(UsageError) as caught:
        ScoreOptions(null_size=1_000_000_000)
    assert str(caught.value) == "--null-size must be between 0 and 10,000,000 (got 1,000,000,000)"
    with pytest.raises(UsageError, match="--null-size must be 0 .* or at least 100"):  # below: as before
        ScoreOptions(null_size=50)


def test_train_names_every_out_of_range_option_at_once():
    with pytest.raises(UsageError) as caught:
        TrainOptions(epochs=200_000, batch_size=10_000, workers=1_000)
    assert str(caught.value) == ("--epochs must be between 1 and 100,000 (got 200,000); --batch-size must be between "
                                 "1 and 4,096 (got 10,000); --workers must be between 0 and 256 (got 1,000)")


# ---- the command line: exit 2, one line on stderr, before any file is read -------------------------
CLI = [
    (["score-variants", "x.vcf", "--null-size", "1000000000"], "--null-size must be between 0 and 10,000,000"),
    (["score-variants", "x.vcf", "--chunk-size", "2000000"], "--chunk-size must be between 1 and 1,000,000"),
    (["score-variants", "x.vcf", "--batch-size", "5000"], "--batch-size must be between 1 and 4,096"),
    (["score-variants", "x.vcf", "--score-bins", "9000"], "--score-bins must be between 1 and 8,192"),
    (["score-variants", "x.vcf", "--explain-top", "101", "d"], "--explain-top takes 1 to 100 variants"),
    (["score-variants", "x.vcf", "--explain-flank", "600000"], "--explain-flank must be between 0 and 524,288"),
    (["score-variants", "x.vcf", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["predict", "--out", "p.bw", "--batch-size", "100000"], "--batch-size must be between 1 and 4,096"),
    (["predict", "--out", "p.bw", "--chunk-windows", "1000000"], "--chunk-windows must be between 1 and 100,000"),
    (["predict", "--out", "p.bw", "--window", "2097152"], "--window must be between 128 and 1,048,576"),
    (["explain", "--out", "o", "--max-mutants", "2000000000"], "--max-mutants must be between 0 and 1,000,000,000"),
    (["explain", "--out", "o", "--plot", "5000"], "--plot must be between 0 and 1,000"),
    (["explain", "--out", "o", "--flank", "600000"], "--flank must be between 0 and 524,288"),
    (["train", "--data", "d", "--out", "o", "--batch-size", "100000"], "--batch-size must be between 1 and 4,096"),
    (["train", "--data", "d", "--out", "o", "--max-steps", "1000000000"], "--max-steps must be between 1 and"),
    (["train", "--data", "d", "--out", "o", "--workers", "1000"], "--workers must be between 0 and 256"),
    (["prepare", "--targets", "t", "--out", "o", "--fasta", "g.fa", "--no-cons", "--window", "2097152"],
     "--window must be between 128 and 1,048,576"),
]


@pytest.mark.parametrize("args, message", CLI, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CLI])
def test_the_cli_refuses_each_range_in_one_stderr_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"epiformer: error: {message}"), result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def test_a_null_of_a_billion_snvs_is_refused_in_seconds(tmp_path):
    """The issue's report: `--null-size 1000000000` allocated until the kernel killed it (exit 137)."""
    files = score_files(tmp_path)
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chr1\t100\t.\t{files['seqs']['chr1'][99]}\tN\t.\t.\t.\n")
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["score-variants", str(vcf), "--fasta", str(files["fasta"]), "--cons",
                                      str(files["cons"]), "--model", str(files["model"]), "--device", "cpu",
                                      "--out", str(tmp_path / "s.tsv"), "--null-size", "1000000000"])
    assert time.perf_counter() - started < 5
    assert result.exit_code == 2
    assert result.stderr == ("epiformer: error: --null-size must be between 0 and 10,000,000 "
                             "(got 1,000,000,000) (see epiformer score-variants -h)\n")
    assert not (tmp_path / "s.tsv").exists() and not list(tmp_path.glob("*null*"))
    assert not (cache_dir() / "nulls").exists()  # refused before the null cache was touched


# ---- require_memory and available_memory --------------------------------------------------------------
GB = 1 << 30


def test_require_memory_refuses_in_one_line_naming_the_option(monkeypatch):
    monkeypatch.setattr(space, "available_memory", lambda: int(6.1 * GB))
    with pytest.raises(UsageError) as caught:
        space.require_memory(14 * GB, "the null of 9,000,000 SNVs", "lower --null-size")
    assert str(caught.value) == ("the null of 9,000,000 SNVs needs about 14.0 GB of memory and this machine has "
                                 "6.1 GB available: lower --null-size")
    assert caught.value.exit_code == 2
    space.require_memory(6 * GB, "a null that fits", "lower --null-size")  # no error


def test_require_memory_says_when_it_cannot_check(monkeypatch, caplog):
    monkeypatch.setattr(space, "available_memory", lambda: None)
    with caplog.at_level(logging.INFO, logger="epiformer_cli"):
        space.require_memory(10 ** 15, "a huge thing", "lower --it")
    assert ["cannot tell how much memory is available here: a huge thing (about 909.5 TB) runs unchecked"] == \
        [r.getMessage() for r in caplog.records]


def _tree(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A made-up /proc and /sys/fs/cgroup: 8 GiB available, no ulimit -v."""
    monkeypatch.setattr(space, "_address_space_room", lambda proc: None)
    _tree(tmp_path, {"proc/meminfo": "MemTotal: 16777216 kB\nMemFree: 1000 kB\nMemAvailable: 8388608 kB\n"})
    return tmp_path


def test_available_memory_is_memavailable_without_a_cgroup_limit(machine):
    _tree(machine, {"proc/self/cgroup": "0::/user.slice\n", "cg/user.slice/memory.max": "max\n"})
    assert space.available_memory(machine / "proc", machine / "cg") == 8 * GB


def test_available_memory_is_the_room_under_the_tightest_cgroup_v2_limit(machine):
    _tree(machine, {
        "proc/self/cgroup": "0::/slurm/job7/step0\n",
        "cg/slurm/job7/step0/memory.max": "max\n",
        # the job's limit: 3 GiB, 2 GiB used of which 0.5 GiB is reclaimable file cache
        "cg/slurm/job7/memory.max": f"{3 * GB}\n", "cg/slurm/job7/memory.current": f"{2 * GB}\n",
        "cg/slurm/job7/memory.stat": f"anon 1\ninactive_file {GB // 2}\n",
        "cg/slurm/memory.max": f"{64 * GB}\n", "cg/slurm/memory.current": f"{10 * GB}\n",
    })
    assert space.available_memory(machine / "proc", machine / "cg") == 3 * GB - (2 * GB - GB // 2)


def test_available_memory_reads_a_namespaced_v2_and_a_v1_cgroup(machine):
    # a container's own cgroup shown as "/": its limit sits at the root of the file system
    _tree(machine, {"proc/self/cgroup": "0::/\n", "cg/memory.max": f"{GB}\n", "cg/memory.current": f"{GB // 4}\n"})
    assert space.available_memory(machine / "proc", machine / "cg") == GB - GB // 4
    _tree(machine, {
        "proc/self/cgroup": "4:memory:/batch/task\n3:cpu:/\n",
        "cg/memory/batch/task/memory.limit_in_bytes": f"{2 * GB}\n",
        "cg/memory/batch/task/memory.usage_in_bytes": f"{GB}\n",
        "cg/memory/batch/task/memory.stat": "total_inactive_file 0\n",
        "cg/memory/batch/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
    })
    assert space.available_memory(machine / "proc", machine / "cg") == GB


def test_available_memory_falls_back_to_physical_memory_then_none(tmp_path, monkeypatch):
    monkeypatch.setattr(space, "_address_space_room", lambda proc: None)
    monkeypatch.setattr(space, "_physical_memory", lambda: 16 * GB)
    assert space.available_memory(tmp_path / "no-proc", tmp_path / "no-cg") == 16 * GB  # macOS: no /proc
    monkeypatch.setattr(space, "_physical_memory", lambda: None)
    assert space.available_memory(tmp_path / "no-proc", tmp_path / "no-cg") is None


def test_available_memory_counts_the_address_space_limit(machine, monkeypatch):
    import resource

    monkeypatch.undo()  # the fixture's stand-in for the ulimit
    _tree(machine, {"proc/self/status": "Name: python\nVmSize: 1048576 kB\n"})
    monkeypatch.setattr(resource, "getrlimit", lambda which: (3 * GB, resource.RLIM_INFINITY))
    assert space.available_memory(machine / "proc", machine / "cg") == 2 * GB


def test_this_machine_reports_its_memory():
    found = space.available_memory()
    assert found is not None and 0 < found <= space._meminfo(space.Path("/proc/meminfo")).get("MemTotal", found)


# ---- the null ----------------------------------------------------------------------------------------
def test_the_null_estimate_grows_with_size_and_tracks():
    sizes = [null_memory_bytes(n, 3) for n in (0, 100, 10_000, 1_000_000, 10_000_000)]
    assert sizes == sorted(sizes) and sizes[0] == 0 and len(set(sizes)) == len(sizes)
    assert null_memory_bytes(10_000, 1) < null_memory_bytes(10_000, 2) < null_memory_bytes(10_000, 5)
    assert null_memory_bytes(10_000, 3, in_memory=True) > null_memory_bytes(10_000, 3)
    # the issue's example: ten million SNVs of 3 tracks kept in memory is more than this 24 GB machine
    assert null_memory_bytes(10_000_000, 3, in_memory=True) > 24 * GB


@pytest.mark.parametrize("to_file", [False, True], ids=["in memory", "null file"])
def test_the_null_estimate_is_within_2x_of_a_measured_peak(tmp_path, monkeypatch, to_file):
    """The peak Python memory (tracemalloc) of drawing, scoring and calibrating a null of 300 SNVs,
    against :func:`null_memory_bytes` for it. The inputs' identities (hashed in 8 MB blocks, once
    per run for every fingerprint, not the null's) are computed before."""
    from epiformer_cli.inference.inputs import open_inputs
    from epiformer_cli.jobs.score_variants import _scorer
    from epiformer_cli.runs import Shard
    from epiformer_cli.variants import null_run
    from epiformer_cli.variants.null_run import null_calibration

    if not to_file:  # the in-memory null: a cache folder that cannot be written
        monkeypatch.setattr(null_run, "_writable_cache", lambda: None)
    files = score_files(tmp_path)
    size = 300
    options = ScoreOptions.of(device="cpu", null_size=size,
                              null_path=str(tmp_path / "null.tsv.gz") if to_file else None)
    with open_inputs(files["fasta"], files["cons"], files["model"]) as inputs:
        scorer, tracks = _scorer(inputs, options, "test")
        identities = inputs.identities()
        monkeypatch.setattr(inputs, "identities", lambda: dict(identities))
        # warm-up, the same way: first-call allocations (the scorer's, pandas' import) are not the null's
        warm = str(tmp_path / "warm.tsv.gz") if to_file else None
        null_calibration(inputs, scorer, tracks, options.replace(null_size=100, seed=1, null_path=warm), Shard())
        gc.collect()
        tracemalloc.start()
        try:
            calibration = null_calibration(inputs, scorer, tracks, options, Shard())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert sum(calibration.sizes().values()) > 0
    estimate = null_memory_bytes(size, len(tracks), in_memory=not to_file)
    assert peak / 2 <= estimate <= 2 * peak, (estimate, peak)


# ---- inference: the engine's batches ------------------------------------------------------------------
@pytest.mark.parametrize("conv_impl", ["gemm", "onednn"])
def test_workspace_bytes_are_the_fast_models_own_buffers(conv_impl):
    cfg = preset("tiny")
    try:
        fast = prepare_for_inference(build_network(cfg).eval(), conv_impl=conv_impl)
    except ValueError:
        pytest.skip(f"no {conv_impl} here")
    for batch in (1, 3):
        fast(torch.zeros(batch, cfg.in_channels, cfg.seq_len))
        measured = sum(t.untyped_storage().nbytes() for t in fast._workspaces[batch].values())
        assert workspace_bytes(cfg, batch, conv_impl=conv_impl) == measured


def test_the_inference_estimate_grows_with_the_batch_and_refuses_a_full_size_4096():
    cfg = preset("epiformer")
    sizes = [inference_memory_bytes(cfg, b, 1) for b in (1, 2, 8, 64, 4096)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert sizes[0] > workspace_bytes(cfg, 1)  # a full-size window: 0.8 GB of work buffers alone
    assert sizes[-1] > 1000 * GB  # --batch-size 4096 of full-size windows: refused on any machine
    # on a CUDA GPU the batch's buffers are the GPU's (its out-of-memory halves the batch)
    assert inference_memory_bytes(cfg, 64, 1, device_type="cuda") < sizes[3] / 10
    assert inference_memory_bytes(cfg, 8, 1, held_bins=1000) == inference_memory_bytes(cfg, 8, 1) + 4000


def test_predict_refuses_a_batch_that_cannot_fit_before_any_work(tmp_path, monkeypatch):
    inputs = predict_inputs(tmp_path)
    monkeypatch.setattr(space, "available_memory", lambda: 20 << 20)
    with pytest.raises(UsageError, match=r"^predicting 16,384 bp windows 512 at a time needs about \d+\.\d GB of "
                                         r"memory and this machine has 20\.0 MB available: lower --batch-size "
                                         r"\(or --chunk-windows\)$"):
        predict(**inputs, out=tmp_path / "p.bw", device="cpu", batch_size=512)
    assert not (tmp_path / ".p.bw.store").exists() and not list(tmp_path.glob("p*.bw"))
    monkeypatch.setattr(space, "available_memory", lambda: 8 * GB)
    predict(**inputs, out=tmp_path / "p.bw", device="cpu", batch_size=3, chunk_windows=2, rc_average=False)


# ---- explain -----------------------------------------------------------------------------------------
def test_the_explain_estimates_grow_with_span_tracks_and_views():
    cfg = preset("small")
    for estimate in (ism_memory_bytes, gradient_memory_bytes):
        assert estimate(cfg, 1, 100) < estimate(cfg, 1, 10_000) < estimate(cfg, 4, 10_000)
        assert estimate(cfg, 1, 100, views=1) < estimate(cfg, 1, 100, views=2)
    assert variant_mutants(100, 200) == 240_600  # what --explain-top 100 at --explain-flank 200 asks of ISM


def test_the_gradient_graph_estimate_is_autograds_saved_tensors():
    """graph_bytes against the bytes autograd keeps for one window of the tiny model (counted by
    saved_tensors_hooks, each storage once)."""
    for overrides in ({}, {"n_tracks": 5}):
        cfg = preset("tiny", **overrides)
        model = build_network(cfg).eval()
        storages = {}

        def pack(t, storages=storages):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        x = torch.zeros(1, cfg.in_channels, cfg.seq_len, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        measured = sum(storages.values())
        assert measured / 2 <= graph_bytes(cfg) <= 2 * measured, (graph_bytes(cfg), measured)
        assert gradient_memory_parts(cfg, 1, 100, views=2)["graph"] == 2 * graph_bytes(cfg)


def test_the_ism_estimates_match_the_kept_reference_and_the_span_arrays():
    """The incremental tower's kept reference state (tensor bytes) and the span's numpy arrays
    (tracemalloc peak of one ISM) against their parts of ism_memory_parts."""
    from epiformer_cli.data.encoding import model_inputs

    model = sensitive_model(seed=1)
    cfg = model.config
    engine = InferenceEngine(model, device="cpu", rc_average=False, batch_size=1)
    explainer = IsmExplainer(engine)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, cfg.seq_len).astype(np.uint8)
    cons = rng.random(cfg.seq_len).astype(np.float32)
    x = model_inputs(torch.from_numpy(codes)[None], torch.from_numpy(cons)[None], cfg.conservation)
    state = explainer.tower.reference(x)
    kept = sum(t.untyped_storage().nbytes() for t in state.inputs) + state.z.untyped_storage().nbytes()
    span = 400
    parts = ism_memory_parts(cfg, len(engine.tracks), span, views=1)
    assert kept / 2 <= parts["reference"] <= 2 * kept, (parts["reference"], kept)

    first = cfg.seq_len // 2
    bins = (cfg.out_bins // 2 - 2, cfg.out_bins // 2 + 2)
    explainer.explain(codes, cons, first, first + 10, bins)  # warm-up
    gc.collect()
    tracemalloc.start()
    try:
        result = explainer.explain(codes, cons, first, first + span, bins)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.matrix.shape == (len(engine.tracks), 4, span)
    assert peak / 2 <= parts["span"] <= 2 * peak, (parts["span"], peak)
    assert explainer.memory_bytes(span) == ism_memory_bytes(cfg, len(engine.tracks), span, views=1)


def test_explain_refuses_a_region_that_cannot_fit_before_any_work(tmp_path, monkeypatch):
    from epiformer_cli.jobs.explain import explain

    inputs = predict_inputs(tmp_path)
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t30000\t30500\n")
    monkeypatch.setattr(space, "available_memory", lambda: 1 << 20)
    for method, fix in (("ism", "(--no-rc-average)"), ("gradient", "(--no-rc-average), or use --method ism")):
        with pytest.raises(UsageError, match=rf"^{method} of a 500 bp region in 2 track\(s\) needs about .* memory "
                                             rf"and this machine has 1\.0 MB available: explain fewer --tracks or "
                                             rf"shorter regions, or one strand {re.escape(fix)}$"):
            explain(inputs["fasta"], inputs["cons"], inputs["model"], tmp_path / "out", regions=bed,
                    options=ExplainOptions.of(device="cpu", method=method, plot=0))
        assert not (tmp_path / "out" / "explain.parts").exists()
