"""bigWig writing meets a full disk or a file-size limit (issue 13): libBigWig ignores failed writes
(it then spins forever or corrupts its heap), so it must never be handed one. The writer bounds the
file it can produce and refuses in one line first; these tests run the limits in child processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyBigWig
import pytest

import epiformer_cli.jobs.export as export
from epiformer_cli.data.prediction_store import PredictionStore, StoreLayout, chunks_of
from epiformer_cli.errors import StorageError
from epiformer_cli.io import faults
from epiformer_cli.io.bigwig import BigWigWriter, bigwig_size_bound
from tests.helpers import epiformer_command, unmeasured

REPO = Path(__file__).resolve().parents[1]
BATCH = 10_000  # bins per add_bins call in the child writer


def _limited(limit):
    """A preexec_fn giving the child a file-size limit (``ulimit -f``) of ``limit`` bytes."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _run(code_or_args, limit=None, timeout=60):
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if limit is not None:
        env = unmeasured(env)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
                          preexec_fn=_limited(limit) if limit is not None else None)


def _files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def _random_bits(rng, n):
    """Incompressible float32 values (random bit patterns; NaN and inf replaced)."""
    values = np.frombuffer(rng.bytes(4 * n), dtype=np.float32).copy()
    values[~np.isfinite(values)] = 1.0
    return values.astype(np.float64)


def _plain_bigwig(path, sizes, calls):
    """Write ``calls`` [(chrom, starts, ends, values)] with pyBigWig straight to ``path``, one
    addEntries each (as BigWigWriter calls it). Returns (entries, touching runs, bases covered)."""
    handle = pyBigWig.open(str(path), "w")
    handle.addHeader(list(sizes.items()), maxZooms=10)
    n = runs = covered = 0
    last = None
    for chrom, starts, ends, values in calls:
        handle.addEntries([chrom] * len(starts), starts.tolist(), ends=ends.tolist(), values=values.tolist())
        n, covered = n + len(starts), covered + int((ends - starts).sum())
        runs += 1 + int(np.count_nonzero(starts[1:] != ends[:-1])) - int(last == (chrom, int(starts[0])))
        last = (chrom, int(ends[-1]))
    handle.close()
    return n, runs, covered


def _bins(chrom, start, values, span, chrom_size=None):
    """What ``BigWigWriter.add_bins`` adds: (chrom, starts, ends, values) without NaN, clipped."""
    starts = start + np.arange(len(values)) * span
    ends = starts + span if chrom_size is None else np.minimum(starts + span, chrom_size)
    keep = np.isfinite(values) & (ends > starts)
    return chrom, starts[keep], ends[keep], values[keep]


# ---- the size bound ----------------------------------------------------------------------------
def _layouts():
    """name -> (chromosome sizes, addEntries calls): what libBigWig finds hardest to bound."""
    rng = np.random.default_rng(13)
    n = 200_000
    bins = {"chr1": n * 128}
    base = {"chr1": n}
    out = {
        "128 bp, incompressible": (bins, [_bins("chr1", i * 128, _random_bits(rng, BATCH), 128)
                                          for i in range(0, n, BATCH)]),
        "128 bp, constant": (bins, [_bins("chr1", i * 128, np.ones(BATCH), 128) for i in range(0, n, BATCH)]),
        "1 bp, incompressible": (base, [_bins("chr1", i, _random_bits(rng, BATCH), 1) for i in range(0, n, BATCH)]),
        "1 bp, constant": (base, [_bins("chr1", i, np.full(BATCH, 2.0), 1) for i in range(0, n, BATCH)]),
    }
    half = _random_bits(rng, n)
    half[rng.random(n) < 0.5] = np.nan  # every other bin missing: runs of ~2 bins
    out["128 bp, half NaN"] = (bins, [_bins("chr1", i * 128, half[i:i + BATCH], 128) for i in range(0, n, BATCH)])
    scaffolds = {f"scaffold_{i}": 200 + i % 300 for i in range(5_000)}  # a block (at least) each
    out["5,000 chromosomes"] = (scaffolds, [_bins(c, 0, _random_bits(rng, 3), 128, L) for c, L in scaffolds.items()])
    sparse = np.sort(rng.choice(4_000_000_000, 50_000, replace=False))  # isolated 1 bp entries
    out["sparse 1 bp"] = ({"chr1": 4_000_000_000}, [("chr1", sparse, sparse + 1, _random_bits(rng, len(sparse)))])
    # gaps at every scale: each zoom level keeps many records, and all ten levels differ
    gaps = np.cumsum(rng.choice([20, 80, 300, 1200, 5000, 20000, 80000], size=50_000))
    out["gaps at every scale"] = ({"chr1": int(gaps[-1]) + 10},
                                  [("chr1", gaps, gaps + 1, _random_bits(rng, len(gaps)))])
    return out


LAYOUTS = _layouts()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_size_bound_holds(name, tmp_path):
    sizes, calls = LAYOUTS[name]
    path = tmp_path / "plain.bw"
    n, runs, covered = _plain_bigwig(path, sizes, calls)
    actual = path.stat().st_size
    names = max(len(c) for c in sizes)
    bound = bigwig_size_bound(n, len(sizes), runs=runs, covered_bp=covered, genome_bp=sum(sizes.values()),
                              name_bytes=names)
    worst = bigwig_size_bound(n, len(sizes))  # knowing nothing of the layout
    print(f"{name}: {actual:,} bytes, bound {bound:,} (ratio {actual / bound:.2f}), worst case {worst:,}")
    assert actual <= bound <= worst
    if name.startswith("128 bp, incompressible"):
        assert actual / bound > 0.5  # not loose where it matters: contiguous bins are the common case


@pytest.mark.parametrize("n_chroms", [1, 40_000])  # > 32,767 names: a two-level name tree
def test_size_bound_of_an_empty_file(n_chroms, tmp_path):
    path = tmp_path / "empty.bw"
    sizes = {f"scaffold_{i}": 1000 for i in range(n_chroms)}
    with BigWigWriter(path, sizes):
        pass
    assert 0 < path.stat().st_size <= bigwig_size_bound(0, n_chroms, name_bytes=max(map(len, sizes)))


# ---- the writer --------------------------------------------------------------------------------
def test_in_memory_writer_matches_plain_pybigwig(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.random(60_000)
    values[1000:1010] = np.nan
    sizes = {"chr1": 60_000 * 128 - 77, "chr2": 5_000}
    path = tmp_path / "w.bw"
    fds = len(os.listdir("/proc/self/fd"))
    with BigWigWriter(path, sizes) as writer:
        assert writer._fd is not None  # libBigWig writes into memory
        for i in range(0, len(values), BATCH):
            writer.add_bins("chr1", i * 128, values[i:i + BATCH], span=128, chrom_size=sizes["chr1"])
        writer.add_bins("chr2", 0, values[:40], span=128, chrom_size=5_000)
    calls = [_bins("chr1", i * 128, values[i:i + BATCH], 128, sizes["chr1"]) for i in range(0, len(values), BATCH)]
    _plain_bigwig(tmp_path / "plain.bw", sizes, calls + [_bins("chr2", 0, values[:40], 128, 5_000)])
    assert path.read_bytes() == (tmp_path / "plain.bw").read_bytes()
    assert _files(tmp_path) == ["plain.bw", "w.bw"]
    assert len(os.listdir("/proc/self/fd")) == fds  # the in-memory file is closed


def test_abort_leaves_nothing_and_closes_the_memory_file(tmp_path):
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(KeyboardInterrupt):
        with BigWigWriter(tmp_path / "x.bw", {"chr1": 10_000_000}) as writer:
            writer.add_bins("chr1", 0, np.random.default_rng(0).random(50_000), span=128)
            raise KeyboardInterrupt
    assert _files(tmp_path) == []
    assert len(os.listdir("/proc/self/fd")) == fds


def test_on_disk_writer_checks_free_space(tmp_path, monkeypatch):
    """Without in-memory files (macOS) libBigWig writes beside the output: the same bytes, and a
    folder without room for the bound is refused before libBigWig is called."""
    values = np.random.default_rng(4).random(30_000)
    with BigWigWriter(tmp_path / "memory.bw", {"chr1": 30_000 * 128}) as writer:
        writer.add_bins("chr1", 0, values, span=128)
    monkeypatch.delattr(os, "memfd_create")
    with BigWigWriter(tmp_path / "disk.bw", {"chr1": 30_000 * 128}) as writer:
        assert writer._fd is None
        writer.add_bins("chr1", 0, values, span=128)
    assert (tmp_path / "disk.bw").read_bytes() == (tmp_path / "memory.bw").read_bytes()
    monkeypatch.setattr(faults, "free_bytes", lambda folder: 100_000)
    with pytest.raises(StorageError, match=r"^cannot write .*full\.bw: no space left on the device \(ENOSPC\)"):
        with BigWigWriter(tmp_path / "full.bw", {"chr1": 30_000 * 128}) as writer:
            writer.add_bins("chr1", 0, values, span=128)
    assert _files(tmp_path) == ["disk.bw", "memory.bw"]


_CHILD = f"""
import os, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
if sys.argv[1] == "disk":
    del os.memfd_create  # as on macOS: libBigWig writes the temporary file beside the output
import numpy as np
from epiformer_cli.errors import StorageError
from epiformer_cli.io.bigwig import BigWigWriter
values = np.load(sys.argv[3])
try:
    with BigWigWriter(sys.argv[2], {{"chr1": len(values) * 128, "chr2": 5000}}) as writer:
        for i in range(0, len(values), {BATCH}):
            writer.add_bins("chr1", i * 128, values[i:i + {BATCH}], span=128)
        writer.add_bins("chr2", 0, values[:40], span=128, chrom_size=5000)
except StorageError as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_file_size_limit_is_one_clean_error(where, tmp_path):
    """pyBigWig alone spins forever at 100% CPU under such a limit (measured)."""
    values = np.random.default_rng(5).random(200_000)
    np.save(tmp_path / "values.npy", values)
    calls = [_bins("chr1", i * 128, values[i:i + BATCH], 128) for i in range(0, len(values), BATCH)]
    n, runs, covered = _plain_bigwig(tmp_path / "plain.bw", {"chr1": len(values) * 128, "chr2": 5000},
                                     calls + [_bins("chr2", 0, values[:40], 128, 5000)])
    size = (tmp_path / "plain.bw").stat().st_size
    bound = bigwig_size_bound(n, 2, runs=runs, covered_bp=covered, genome_bp=len(values) * 128 + 5000, name_bytes=4)
    out = tmp_path / "out"
    out.mkdir()
    for limit in (1_000, 100_000, size // 2, size - 1):  # at the header, early, midway, at the last byte
        result = _run([sys.executable, "-c", _CHILD, where, str(out / "x.bw"), str(tmp_path / "values.npy")], limit)
        print(limit, result.stdout.strip())
        assert result.returncode == 3, result.stderr
        assert result.stdout.count("\n") == 1 and result.stdout.startswith(f"cannot write {out / 'x.bw'}: file size "
                                                                           "limit exceeded (EFBIG)")
        assert result.stderr == ""
        assert _files(out) == []  # no temporary file
    # between the file and its bound either outcome is right, but never a hang or a damaged file;
    # over the bound (plus libBigWig's unwritten block and stdio buffer) the limit is no obstacle
    for limit in (size + (bound - size) // 2, bound + 100_000):
        result = _run([sys.executable, "-c", _CHILD, where, str(out / "x.bw"), str(tmp_path / "values.npy")], limit)
        assert result.returncode in (0, 3), result.stdout + result.stderr
        assert _files(out) == (["x.bw"] if result.returncode == 0 else [])
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run([sys.executable, "-c", _CHILD, where, str(out / "y.bw"), str(tmp_path / "values.npy")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "x.bw").read_bytes() == (out / "y.bw").read_bytes() == (tmp_path / "plain.bw").read_bytes()


# ---- export-bigwig -----------------------------------------------------------------------------
def synthetic_store(root, tracks=("A", "B", "C"), constant=False, seed=0):
    """A complete prediction store written through its API (no model): 128 bp bins of random (or
    constant) values over two chromosomes, one ending mid-bin."""
    sizes = {"chr1": 4_000_000, "chr2": 2_500_017}
    layout = StoreLayout(sizes, window_bp=16_384, crop_bp=2_048, bin_bp=128, chunk_windows=16, tracks=list(tracks),
                         dtype="float32", chunks=chunks_of(sizes, 16_384 - 2 * 2_048, 16, list(sizes)))
    store = PredictionStore.create(root, layout, {"synthetic": seed})
    rng = np.random.default_rng(seed)
    for chunk in store.chunks:
        shape = (len(tracks), chunk.n_bins)
        store.write(chunk, np.full(shape, 0.25) if constant else rng.random(shape))
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("faults-store") / "store")


def test_export_under_a_file_size_limit_is_one_line_and_resumes(store, tmp_path):
    (tmp_path / "ref").mkdir()
    reference = export.export_bigwig(store=store, out=tmp_path / "ref" / "p.bw")
    size = min(p.stat().st_size for p in reference.outputs.values())
    out = tmp_path / "out"
    out.mkdir()
    command = epiformer_command() + ["export-bigwig", str(store), "--out", str(out / "p.bw")]
    # 2,000 bytes is refused before any work (a track takes >= 2 bytes a bin); the others midway
    for limit, message in [(2_000, "exporting 3 bigWig(s)"), (150_000, "cannot write"), (size // 2, "cannot write")]:
        result = _run(command, limit, timeout=120)
        lines = result.stderr.splitlines()
        print(limit, result.stderr.strip())
        assert result.returncode == 1, result.stderr
        assert len(lines) == 1 and lines[0].startswith(f"epiformer: error: {message}")
        assert ("file size limit exceeded (EFBIG)" in lines[0] or "file-size limit" in lines[0])
        assert "Traceback" not in result.stderr
        assert not list(out.glob(".*.tmp")) and _files(out) == []
    result = _run(command, timeout=120)
    assert result.returncode == 0, result.stderr
    for track, path in reference.outputs.items():
        assert (out / path.name).read_bytes() == path.read_bytes()


def test_tracks_in_memory_groups_give_the_same_bytes(store, tmp_path, monkeypatch):
    together = export.export_bigwig(store=store, out=tmp_path / "together.bw")
    sizes = PredictionStore(store).chrom_sizes
    plan = dict(names=["A", "B", "C"], out=tmp_path / "x.bw", chrom_sizes=sizes, n_entries=10_000,
                covered_bp=1_280_000, min_entries=10_000)
    assert export.track_groups(**plan) == [["A", "B", "C"]]
    monkeypatch.setattr(export, "MEMORY_BUDGET", 1)
    assert export.track_groups(**plan) == [["A"], ["B"], ["C"]]
    steps = []
    alone = export.export_bigwig(store=store, out=tmp_path / "alone.bw",
                                 progress=lambda n, total=None: steps.append(total if total is not None else n))
    assert steps[0] == 3 * len(PredictionStore(store).chunks) == sum(steps[1:])  # the store read once per group
    for track in together.outputs:
        assert alone.outputs[track].read_bytes() == together.outputs[track].read_bytes()


def test_free_space_check_refuses_early_but_never_a_fitting_export(tmp_path, monkeypatch):
    """The check uses a low estimate (2 bytes a bin): constant values, the most compressible, still
    take more than that, so an export that fits is never refused."""
    store = synthetic_store(tmp_path / "store", constant=True)
    (tmp_path / "a").mkdir()
    first = export.export_bigwig(store=store, out=tmp_path / "a" / "p.bw")
    total = sum(p.stat().st_size for p in first.outputs.values())
    (tmp_path / "b").mkdir()
    monkeypatch.setattr(faults, "free_bytes", lambda folder: total)  # exactly enough
    export.export_bigwig(store=store, out=tmp_path / "b" / "p.bw")
    monkeypatch.setattr(faults, "free_bytes", lambda folder: 1_000)
    (tmp_path / "c").mkdir()
    with pytest.raises(StorageError, match=r"exporting 3 bigWig\(s\) .* needs .* free"):
        export.export_bigwig(store=store, out=tmp_path / "c" / "p.bw")
    assert _files(tmp_path / "c") == []
