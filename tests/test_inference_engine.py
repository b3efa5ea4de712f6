"""The inference engine: batch-size and thread-count independence, reverse-complement and shift
averaging, track selection, out-of-memory retry, background threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from epiformer_cli.data.encoding import COMPLEMENT
from epiformer_cli.errors import UsageError
from epiformer_cli.inference import BackgroundWriter, InferenceEngine, Prefetcher, parse_shifts
from epiformer_cli.model.config import preset
from tests.helpers import PUBLISHED_TINY, float_tolerance, network_reductions, random_model


@pytest.fixture(scope="module", params=["epiformer", "published"])
def model(request):
    """Both model families: every engine guarantee holds for an imported published model too."""
    return random_model(**(PUBLISHED_TINY if request.param == "published" else {}))


def inputs(n: int, length: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 5, size=(n, length), dtype=np.uint8)  # includes N
    cons = rng.random((n, length), dtype=np.float32)
    return codes, cons


def test_batch_size_does_not_change_values(model):
    codes, cons = inputs(8, model.config.seq_len)
    results = [InferenceEngine(model, device="cpu", batch_size=b).predict(codes, cons) for b in (1, 3, 8)]
    # the fast float32 path is exact across batch sizes (per-window transformer, fixed GEMM order)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    # a tail batch of over half the batch size runs padded to the full batch: same values
    np.testing.assert_array_equal(InferenceEngine(model, device="cpu", batch_size=5).predict(codes[:4], cons[:4]),
                                  results[0][:4])
    assert results[0].shape == (8, 2, model.config.out_bins) and results[0].dtype == np.float32


def test_thread_count_does_not_change_values(model):
    codes, cons = inputs(3, model.config.seq_len, seed=2)
    engine = InferenceEngine(model, device="cpu", batch_size=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = engine.predict(codes, cons)
        torch.set_num_threads(2)
        two = engine.predict(codes, cons)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_matches_eager_model_and_rc_is_flipped_back_before_averaging(model):
    from epiformer_cli.data.encoding import model_inputs

    codes, cons = inputs(2, model.config.seq_len, seed=3)
    engine = InferenceEngine(model, device="cpu", rc_average=True)
    got = engine.predict(codes, cons)
    rc_codes = COMPLEMENT[codes][:, ::-1].copy()
    rc_cons = cons[:, ::-1].copy()
    with torch.no_grad():
        mode = model.config.conservation
        fwd = model(model_inputs(torch.from_numpy(codes), torch.from_numpy(cons), mode)).numpy()
        rev = model(model_inputs(torch.from_numpy(rc_codes), torch.from_numpy(rc_cons), mode)).numpy()
    expected = (fwd + rev[:, :, ::-1]) / 2
    # the fast path folds BatchNorm/LayerNorm affines and sums in other orders: float32 rounding through
    # the network (4e-5..5e-5 here; an average of two such outputs errs no more). A BatchNorm folded
    # without its statistics moves outputs by 1.5e-3..5.9e-2 (but by 3e-5 at the stem of these random
    # models); the exact reverse-strand check below is what pins the flip
    tol = float_tolerance(np.abs(expected).max(), **network_reductions(model.config))
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
    # predicting the reverse strand gives the reversed prediction, exactly (same two terms summed)
    flipped = engine.predict(rc_codes, rc_cons)
    np.testing.assert_array_equal(flipped, got[:, :, ::-1])


def test_shifts_average_shifted_inputs(model):
    length = model.config.seq_len
    codes, cons = inputs(2, length + 6, seed=4)  # context 3 on each side
    engine = InferenceEngine(model, device="cpu", rc_average=False, shifts=(0, -3, 3))
    assert engine.context == 3 and engine.input_length == length + 6
    plain = InferenceEngine(model, device="cpu", rc_average=False)
    views = [plain.predict(codes[:, 3 + s: 3 + s + length], cons[:, 3 + s: 3 + s + length]) for s in (0, -3, 3)]
    # each view is the plain engine's own output (bit-identical in any batch); only the mean of the 3
    # may be summed in another order: a few float32 roundings (1.5e-7 here); a view shifted wrongly by
    # even 1 bp moves the mean by ~1e-5
    tol = float_tolerance(max(np.abs(v).max() for v in views), terms=3)
    np.testing.assert_allclose(engine.predict(codes, cons), (views[0] + views[1] + views[2]) / 3, rtol=0, atol=tol)
    with pytest.raises(ValueError):
        engine.predict(codes[:, :length], cons[:, :length])


def test_track_selection_and_shift_parsing(model):
    codes, cons = inputs(1, model.config.seq_len, seed=5)
    both = InferenceEngine(model, device="cpu").predict(codes, cons)
    second = InferenceEngine(model, device="cpu", tracks=[1]).predict(codes, cons)
    np.testing.assert_array_equal(second[:, 0], both[:, 1])
    assert parse_shifts("0,-3,3") == (0, -3, 3) and parse_shifts(None) == (0,) and parse_shifts("1,1") == (1,)
    for bad in ("a,b", "64", "0,-100"):
        with pytest.raises(UsageError):
            parse_shifts(bad)
    with pytest.raises(UsageError):
        InferenceEngine(model, device="cpu", tracks=[2])
    with pytest.raises(UsageError):
        InferenceEngine(model, device="cpu", batch_size=0)


def test_bf16_runs_close_to_fp32_and_is_batch_independent(model):
    codes, cons = inputs(4, model.config.seq_len, seed=6)
    ref = InferenceEngine(model, device="cpu", rc_average=False).predict(codes, cons)
    a = InferenceEngine(model, device="cpu", precision="bf16", batch_size=1, rc_average=False).predict(codes, cons)
    b = InferenceEngine(model, device="cpu", precision="bf16", batch_size=4, rc_average=False).predict(codes, cons)
    # bf16 kernels may block differently by batch, and bf16 drifts from fp32 by its rounding (2**-8)
    # through the layers that run in it: bounds of 0.24..0.49 of the outputs, which catch a bf16 path
    # computing something else (O(1)), not bf16's own drift (these models: 2e-3)
    bf16 = network_reductions(model.config, torch.bfloat16)
    np.testing.assert_allclose(a, b, rtol=0, atol=float_tolerance(np.abs(b).max(), **bf16))
    np.testing.assert_allclose(a, ref, rtol=0, atol=float_tolerance(np.abs(ref).max(), **bf16))


def test_out_of_memory_halves_the_batch_and_retries(model, caplog):
    codes, cons = inputs(6, model.config.seq_len, seed=7)
    engine = InferenceEngine(model, device="cpu", batch_size=6, rc_average=False)
    expected = engine.predict(codes, cons)
    real = engine.fast
    calls = []

    def flaky(x):
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x)

    engine.fast = flaky
    with caplog.at_level("WARNING"):
        got = engine.predict(codes, cons)
    np.testing.assert_array_equal(got, expected)
    assert engine.batch_size == 1 or engine.batch_size == 2
    assert calls[:2] == [6, 3] and "out of memory" in caplog.text


def test_default_cpu_batch_is_sized_by_speed_not_memory():
    """On a CPU, windows/s stops rising after a few windows a batch (benchmarks/README.md): the
    default is that smallest batch, a full-size window alone, never more than a GPU's default."""
    from epiformer_cli.inference.engine import default_batch_size

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    batches = {name: default_batch_size(preset(name), cpu) for name in ("tiny", "small", "epiformer")}
    assert batches["epiformer"] == 1
    assert batches["tiny"] >= batches["small"] >= batches["epiformer"]  # larger windows, fewer a batch
    assert 1 < batches["tiny"] <= 16  # was 64: 1.4 GB of work buffers for no speed
    for name in batches:
        assert batches[name] <= default_batch_size(preset(name), cuda) <= 64


def test_prefetcher_reads_ahead_on_another_thread_and_reraises():
    seen = []

    def source():
        for i in range(5):
            seen.append(threading.current_thread().name)
            yield i
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in Prefetcher(source(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4] and set(seen) == {"epiformer-reader"}


def test_background_writer_keeps_order_and_reraises():
    out = []
    writer = BackgroundWriter(out.append, depth=2)
    for i in range(20):
        writer.submit(i)
    writer.finish()
    assert out == list(range(20))

    def failing(item):
        raise ValueError("no space left")

    writer = BackgroundWriter(failing, depth=1)
    with pytest.raises(ValueError, match="no space"):
        for i in range(100):
            writer.submit(i)
        writer.finish()
    writer.abort()
