"""The run layer (``epiformer_cli.runs``): checksums, the reuse-or-refuse decision, placement of a
process among shards and ranks, the claim loop every resumable job runs, and bigWigs that appear
together."""

import threading
import zlib

import numpy as np
import pytest

from epiformer_cli.errors import UsageError
from epiformer_cli.runs import (
    FOREIGN, Crc32, ResumableRun, TRAILER_SIZE, checked_content, place, reuse_or_replace, trailer,
)
from epiformer_cli.runs.checksums import file_has_trailer


# ---- checksums --------------------------------------------------------------------------------
def test_crc32_is_zlibs_over_any_buffer_and_round_trips_its_record():
    data = np.arange(1000, dtype=np.float16)
    total = Crc32().update(data[:400]).update(data[400:].tobytes())
    assert (total.crc, total.length) == (zlib.crc32(data.tobytes()), 2000)
    assert total.record() == {"crc32": f"{zlib.crc32(data.tobytes()):08x}", "bytes": 2000}
    assert Crc32.from_record(total.record()) == total
    assert Crc32.from_record([zlib.crc32(data.tobytes()), 2000]) == total  # done-markers of older builds
    assert Crc32.of(b"x") != total
    assert total.trailer() == trailer(total.crc, 2000) and len(total.trailer()) == TRAILER_SIZE


def test_a_piece_with_a_changed_or_missing_byte_fails_its_checksum(tmp_path):
    body = b"chrom\tstart\n" * 1000
    path = tmp_path / "piece"
    path.write_bytes(body + Crc32.of(body).trailer())
    assert file_has_trailer(path) and checked_content(path.read_bytes(), path) == body
    assert Crc32.of_file(path, limit=len(body)) == Crc32.of(body)
    damaged = bytearray(path.read_bytes())
    damaged[5] ^= 1
    path.write_bytes(bytes(damaged))
    assert not file_has_trailer(path)
    path.write_bytes(body[:-1] + Crc32.of(body).trailer())
    assert not file_has_trailer(path)
    assert not file_has_trailer(tmp_path / "missing")


# ---- reuse, rebuild or refuse ---------------------------------------------------------------------
def decide(found, force=False, **kwargs):
    return reuse_or_replace("out", what="store", found=found, wanted={"a": 1, "b": {"c": 2}}, force=force,
                            fix="use --force", **kwargs)


def test_a_finished_output_is_reused_only_when_made_from_the_same_settings():
    assert decide(None) is False  # nothing there: build
    assert decide({"a": 1, "b": {"c": 2}}) is True
    assert decide({"a": 1, "b": {"c": 2}}, force=True) is False  # --force rebuilds
    assert decide({"a": 1, "b": {"c": 2}}, force=True, rebuild_on_force=False) is True  # a cache is kept
    with pytest.raises(UsageError, match=r"out already holds a store made with other settings "
                                         r"\(b\.c: 3 in the store, 2 now\): use --force"):
        decide({"a": 1, "b": {"c": 3}})
    assert decide({"a": 1, "b": {"c": 3}}, force=True) is False


def test_something_that_is_not_our_output_is_never_replaced_unless_allowed():
    for force in (False, True):
        with pytest.raises(UsageError, match="out exists and is not a store: use --force"):
            decide(FOREIGN, force=force)
    with pytest.raises(UsageError, match="not ours"):
        decide(FOREIGN, foreign="not ours", replace_foreign=True)
    assert decide(FOREIGN, force=True, replace_foreign=True) is False


def test_a_run_folder_of_other_settings_is_refused_naming_them(tmp_path):
    ResumableRun(tmp_path / "run", kind="k", format_version=1, settings={"x": 1, "y": [1]}, what="test run")
    with pytest.raises(UsageError, match=r"already holds a test run made with other settings "
                                         r"\(x: 1 in the earlier run, 2 now; y: 1 in the earlier run, 2 now\)"):
        ResumableRun(tmp_path / "run", kind="k", format_version=1, settings={"x": 2, "y": [2]}, what="test run")


def test_publishing_a_run_folder_replaces_the_output_whole(tmp_path):
    out = tmp_path / "store"
    out.mkdir()
    (out / "old").write_text("old")
    run = ResumableRun(tmp_path / ".store.partial", kind="k", format_version=1, settings={}, what="build",
                       owned=("done", "data"))
    run.path("done").mkdir()
    run.write_text("data", "new")
    with run.claims() as claims:
        assert claims.take("data")
    run.publish_as(out, drop=("done",))
    assert sorted(p.name for p in out.iterdir()) == ["data"]
    assert checked_content((out / "data").read_bytes(), out / "data") == b"new"
    assert not run.root.exists() and [p.name for p in tmp_path.iterdir()] == ["store"]


# ---- placement ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, environ, shard, part, finishes", [
    (None, {}, "1/1", "1/1", True),
    ("2/3", {}, "2/3", "2/3", False),
    (None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}, "3/4", "3/4",
     False),
    ("1/1", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4"}, "1/1", "1/1", True),
    (None, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "1/1", "2/2", False),
    (None, {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "1/1", "1/2", True),
    ("2/3", {"WORLD_SIZE": "2", "RANK": "1"}, "2/3", "4/6", False),
])
def test_placement_combines_the_shard_the_array_and_the_rank(spec, environ, shard, part, finishes):
    placement = place(spec, environ)
    assert (placement.shard.label, placement.part.label, placement.finishes) == (shard, part, finishes)


def test_torchrun_variables_are_read_once_and_malformed_ones_ignored():
    t = place(None, {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}).torchrun
    assert (t.rank, t.world, t.local_rank, t.node_rank, t.active, t.is_main) == (3, 4, 1, 1, True, False)
    t = place(None, {"WORLD_SIZE": "four"}).torchrun
    assert (t.rank, t.world, t.active) == (0, 1, False)


# ---- the claim loop ------------------------------------------------------------------------------
def test_work_through_waits_for_a_piece_another_process_holds(tmp_path):
    """Two claim sets on one folder behave as two processes (each flock is its own open file)."""
    run = ResumableRun(tmp_path / "run", kind="k", format_version=1, settings={}, what="test run")
    other = run.claims()
    assert other.take("b")
    made = []

    def attempt(name):
        with mine.holding(name) as held:
            if not held:
                return False
            if not run.is_done(name):
                run.write_text(name, name)
                made.append(name)
        return True

    def finish_b():  # the other process writes its piece, then lets go of its claim
        run.write_text("b", "b")
        other.release("b")

    timer = threading.Timer(0.3, finish_b)
    timer.start()
    with run.claims() as mine:
        mine.work_through(["a", "b", "c"], attempt, lambda name: name, run.is_done, poll=0.05)
    timer.join()
    assert made == ["a", "c"] and all(run.verify(n) for n in "abc")


def test_a_claim_whose_holder_died_is_taken_over(tmp_path):
    run = ResumableRun(tmp_path / "run", kind="k", format_version=1, settings={}, what="test run")
    other = run.claims()
    assert other.take("a")
    threading.Timer(0.2, other.release, ["a"]).start()  # dies without writing its piece
    made = []

    def attempt(name):
        with mine.holding(name) as held:
            if held:
                run.write_text(name, name)
                made.append(name)
            return held

    with run.claims() as mine:
        mine.work_through(["a"], attempt, lambda name: name, run.is_done, poll=0.05)
    assert made == ["a"]


# ---- bigWigs that appear together ------------------------------------------------------------------
def test_a_batch_of_bigwigs_appears_together_or_not_at_all(tmp_path):
    pytest.importorskip("pyBigWig")
    from epiformer_cli.io.bigwig import BigWig, BigWigBatch

    sizes = {"chr1": 1000}
    values = np.arange(10, dtype=np.float32)
    with pytest.raises(KeyboardInterrupt):
        with BigWigBatch() as batch:
            with batch.writer(tmp_path / "a.bw", sizes) as writer:
                writer.add_bins("chr1", 0, values, span=100)
            assert not (tmp_path / "a.bw").exists()  # finished, not yet published
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the finished one was removed too
    with BigWigBatch() as batch:
        for name in ("a", "b"):
            with batch.writer(tmp_path / f"{name}.bw", sizes) as writer:
                writer.add_bins("chr1", 0, values, span=100)
        assert list(tmp_path.glob("*.bw")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bw", "b.bw"]
    with BigWig(tmp_path / "b.bw") as bw:
        assert np.array_equal(bw.values("chr1", 0, 1000)[::100], values)


def test_an_output_of_the_older_input_identities_is_named_as_such(tmp_path):
    """Before issue 21 an input was its name, size and the hash of its ends; such an output cannot
    be reused (nothing says it is the same input) and the refusal says why, not 'name differs'."""
    from epiformer_cli.runs import reuse_or_replace

    old = {"inputs": {"fasta": {"name": "g.fa", "size": 10, "sha256_ends": "ab"}}}
    new = {"inputs": {"fasta": {"size": 10, "sha256": "cd"}}}
    with pytest.raises(UsageError, match=r"made by an earlier epiformer release.*: use --force to rebuild it$"):
        reuse_or_replace(tmp_path, what="prepared store", found=old, wanted=new, force=False,
                         fix="use --force to rebuild it")
    assert reuse_or_replace(tmp_path, what="prepared store", found=old, wanted=new, force=True,
                            fix="use --force to rebuild it") is False
