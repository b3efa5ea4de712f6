"""Lanes (epiformer_cli/inference/lanes.py): a small model's views computed side by side, one
thread each. They must never change a result: variant scores and ISM with lanes equal a one-thread
run bit for bit (the same operations in the same order on each view), whichever lane finishes first.

The suite's workers compute with one thread (tests/conftest.py), where no lanes are made; these
tests raise torch's thread count to 2 for their own span and put it back."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from epiformer_cli.explain.ism import IsmExplainer
from epiformer_cli.inference import lanes
from epiformer_cli.inference.engine import InferenceEngine, _flop_per_window
from epiformer_cli.model.config import preset
from epiformer_cli.model.network import build_network
from tests.helpers import HEADER, other, run_job, score_files, sensitive_model


@contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def counted_maps():
    """Counts Lanes.map calls (so a test knows the lanes really ran)."""
    calls = []
    original = lanes.Lanes.map

    def counting(self, call, items):
        calls.append(len(items))
        return original(self, call, items)

    lanes.Lanes.map = counting
    try:
        yield calls
    finally:
        lanes.Lanes.map = original


# ---- the pool ------------------------------------------------------------------------------------
def test_map_keeps_the_order_runs_on_the_lanes_and_sets_their_thread_count():
    with torch_threads(2):
        pool = lanes.Lanes(2, threads_each=1)
        try:
            assert torch.get_num_threads() == 2  # the caller's count is back after the lanes set theirs
            got = pool.map(lambda i: (i, threading.current_thread().name, torch.get_num_threads(), lanes.in_lane()),
                           range(5))
        finally:
            pool.close()
    assert [g[0] for g in got] == list(range(5))
    assert [g[1] for g in got] == [f"epiformer-lane-{i % 2}" for i in range(5)]
    assert {g[2] for g in got} == {1} and all(g[3] for g in got)
    assert not lanes.in_lane()


def test_a_lane_raises_in_the_caller_and_carries_its_modes():
    pool = lanes.Lanes(2)
    try:
        def fail(i):
            if i == 1:
                raise ValueError("lane 1 failed")
            return i

        with pytest.raises(ValueError, match="lane 1 failed"):
            pool.map(fail, [0, 1])
        with torch.inference_mode():
            assert pool.map(lambda _: torch.is_inference_mode_enabled(), [0, 1]) == [True, True]
        with torch.no_grad():
            assert pool.map(lambda _: torch.is_grad_enabled(), [0, 1]) == [False, False]
        assert pool.map(lambda _: torch.is_grad_enabled(), [0, 1]) == [True, True]
    finally:
        pool.close()
    with pytest.raises(ValueError):
        lanes.Lanes(0)


def plan(name="tiny", views=2, device="cpu"):
    return lanes.lane_plan(_flop_per_window(preset(name)), views, torch.device(device))


def test_lanes_only_where_they_pay():
    """Two views of a small model on two or more threads of torch's OpenMP: one lane per view,
    the threads shared out; else the views run one after another."""
    if not lanes.openmp_backend():
        pytest.skip("this torch does not use OpenMP for intra-op threads")
    with torch_threads(2):
        assert plan() == (2, 1)
        assert plan(views=1) is None  # no reverse-complement averaging
        assert plan(views=4) == (2, 1)  # two shifts: four views on two lanes
        assert plan("small") is None  # its operations split across threads well
        assert plan("epiformer") is None  # and a full-size view's buffers are ~1 GB
        assert plan(device="meta") is None  # not a CPU
    with torch_threads(4):
        assert plan() == (2, 2)
    with torch_threads(1):
        assert plan() is None


# ---- results never change -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("lanes"))


def dense_vcf(path, seqs):
    """SNVs in several grid windows of both chromosomes, a few per window, and an MNV."""
    rng = np.random.default_rng(11)
    rows = [(c, int(p)) for c, n in (("chr1", 40_000), ("chr2", 20_000)) for p in rng.integers(0, n, 12)]
    lines = [(c, p, seqs[c][p], other(seqs[c][p], 1 + p % 3)) for c, p in sorted(set(rows))]
    s = seqs["chr1"]
    lines.append(("chr1", 7000, s[7000:7002], other(s[7000]) + other(s[7001])))
    lines.sort()
    path.write_text(HEADER + "".join(f"{c}\t{p + 1}\tv{i}\t{r}\t{a}\t.\t.\t.\n" for i, (c, p, r, a) in enumerate(lines)))
    return path


def test_scores_in_lanes_equal_one_thread_bit_for_bit(files, tmp_path):
    """Several windows a lane, so a lane reuses its reference state's slot (two views sharing one
    slot, a bug once, gave other numbers from the second window on)."""
    if not lanes.openmp_backend():
        pytest.skip("this torch does not use OpenMP for intra-op threads")
    vcf = dense_vcf(tmp_path / "v.vcf", files["seqs"])
    with torch_threads(1):
        run_job(files, vcf, out=tmp_path / "one.tsv", null_size=0)
    with torch_threads(2), counted_maps() as maps:
        run_job(files, vcf, out=tmp_path / "lanes.tsv", null_size=0)
    assert maps and set(maps) == {2}
    one, two = (tmp_path / "one.tsv").read_text(), (tmp_path / "lanes.tsv").read_text()
    assert one.count("\tok\t") > 60 and two == one


def test_ism_in_lanes_equals_one_thread_bit_for_bit():
    if not lanes.openmp_backend():
        pytest.skip("this torch does not use OpenMP for intra-op threads")
    torch.manual_seed(0)
    model = sensitive_model(seed=2)
    cfg = model.config
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, cfg.seq_len).astype(np.uint8)
    cons = rng.random(cfg.seq_len).astype(np.float32)
    first, last = 8_150, 8_250
    bins = ((first - cfg.crop_bp) // 128, -(-(last - cfg.crop_bp) // 128))
    engine = InferenceEngine(model, device="cpu", rc_average=True)
    with torch_threads(1):
        one = IsmExplainer(engine).explain(codes, cons, first, last, bins)
    with torch_threads(2), counted_maps() as maps:
        two = IsmExplainer(engine).explain(codes, cons, first, last, bins)
    assert len(maps) >= 2
    np.testing.assert_array_equal(two.matrix, one.matrix)
    np.testing.assert_array_equal(two.pred, one.pred)


def test_a_model_too_large_for_lanes_runs_its_views_in_turn():
    engine = InferenceEngine(build_network(preset("small", n_tracks=1)).eval(), device="cpu", rc_average=True)
    with torch_threads(2), counted_maps() as maps:
        seen = engine.average_views(lambda view: torch.full((1, 1, engine.config.out_bins), float(view.reverse)),
                                    parallel=True)
    assert maps == [] and engine.view_slot(engine.views[1]) == 0
    assert torch.equal(seen, torch.full_like(seen, 0.5))


def test_a_forked_child_makes_its_own_lanes():
    """The lanes' threads are not copied by fork: a child uses lanes of its own, never its parent's."""
    import os

    if not hasattr(os, "fork") or not lanes.openmp_backend():
        pytest.skip("no fork here, or no OpenMP")
    with torch_threads(2):
        parent = lanes.view_lanes(1e8, 2, torch.device("cpu"))
        assert parent is not None
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a result through the pipe, then out without pytest's clean-up
            try:
                child = lanes.view_lanes(1e8, 2, torch.device("cpu"))
                ok = child is not None and child is not parent and child.map(lambda i: i * 2, [1, 2]) == [2, 4]
                os.write(write, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(write)
        got = os.read(read, 1)
        os.waitpid(pid, 0)
        os.close(read)
    assert got == b"1"


def test_an_interrupted_caller_waits_for_its_lanes_to_stop():
    """Ctrl-C (or SIGTERM made an exception) while the caller waits: every lane stops at its next
    checkpoint before the exception leaves map(), so no lane computes while the process exits (a
    daemon thread inside torch's C++ code at exit aborted the process), and the lanes serve again."""
    import _thread
    import time

    pool = lanes.Lanes(2)
    stopped, ran = [], []

    def long_task(i):
        if i == 0:
            time.sleep(0.2)
            _thread.interrupt_main()  # KeyboardInterrupt in the waiting caller
        try:
            for _ in range(2000):  # 20 s unless stopped
                lanes.checkpoint()
                time.sleep(0.01)
        except lanes.LaneStopped:
            stopped.append(i)
            raise
        ran.append(i)

    try:
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            pool.map(long_task, [0, 1])
        assert time.perf_counter() - start < 5
        assert sorted(stopped) == [0, 1] and ran == []  # both stopped before map() raised
        assert pool.map(lambda i: i + 1, [1, 2]) == [2, 3]  # and serve the next call
        lanes.checkpoint()  # outside a lane: nothing
    finally:
        pool.close()


def test_a_failing_lane_stops_the_other():
    import time

    pool = lanes.Lanes(2)
    try:
        def task(i):
            if i == 1:
                raise RuntimeError("lane 1 failed")
            for _ in range(2000):
                lanes.checkpoint()
                time.sleep(0.01)

        start = time.perf_counter()
        with pytest.raises(RuntimeError, match="lane 1"):
            pool.map(task, [0, 1])
        assert time.perf_counter() - start < 5
    finally:
        pool.close()
