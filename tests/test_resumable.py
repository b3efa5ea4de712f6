"""The one resumable-run layer: settings compared and named, pieces as their own markers, shards,
locks; and the typed options whose fingerprint it stores."""

from __future__ import annotations

import json

import pytest

from epiformer_cli.runs import ResumableRun, Shard, differences, exclusive, resolve_shard
from epiformer_cli.errors import UsageError
from epiformer_cli.options import InferenceOptions, PredictOptions, ScoreOptions, TrainOptions


def run(root, force=False, **settings):
    return ResumableRun(root, kind="test-run", format_version=1, settings=settings or {"a": 1},
                        what="test run", owned=("pieces",), force=force, fix="do X")


def test_same_settings_resume_and_other_settings_are_refused_naming_them(tmp_path):
    first = run(tmp_path / "r", options={"precision": "fp32", "rc": True}, inputs={"fasta": "a"})
    assert not first.resumed
    first.write_text("pieces/0.txt", "zero")
    again = run(tmp_path / "r", options={"precision": "fp32", "rc": True}, inputs={"fasta": "a"})
    assert again.resumed and again.is_done("pieces/0.txt")
    with pytest.raises(UsageError) as refused:
        run(tmp_path / "r", options={"precision": "bf16", "rc": True}, inputs={"fasta": "b"})
    message = str(refused.value)
    assert message.endswith("already holds a test run made from other inputs and options (--fasta: a in the earlier "
                            "run, b now; --precision: fp32 in the earlier run, bf16 now): do X"), message
    assert again.is_done("pieces/0.txt")  # a refusal changes nothing
    forced = run(tmp_path / "r", force=True, options={"precision": "bf16", "rc": True}, inputs={"fasta": "b"})
    assert not forced.resumed and not forced.is_done("pieces/0.txt")
    assert json.loads(forced.settings_path.read_text())["options"]["precision"] == "bf16"


def test_a_folder_that_is_not_a_run_is_refused_and_an_unreadable_settings_file_differs(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("keep me")
    with pytest.raises(UsageError, match="is not a test run"):
        run(tmp_path / "busy")
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "keep me"
    r = run(tmp_path / "r")
    r.settings_path.write_text("{not json")
    with pytest.raises(UsageError, match=r"already holds a test run whose settings cannot be read"):
        run(tmp_path / "r")


def test_pieces_appear_complete_or_not_at_all(tmp_path):
    r = run(tmp_path / "r")

    def half(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        r.write("pieces/1.bin", half)
    assert not r.is_done("pieces/1.bin") and not list((tmp_path / "r" / "pieces").iterdir())
    r.write("pieces/1.bin", lambda h: h.write(b"whole"))
    assert r.read_bytes("pieces/1.bin") == b"whole"
    assert r.path("pieces/1.bin").read_bytes().startswith(b"whole#epiformer-crc32 ")


def test_shard_records_name_the_shards_of_missing_pieces(tmp_path):
    r = run(tmp_path / "r")
    r.record_shard(Shard(1, 3), "started")
    r.record_shard(Shard(), "started")  # the whole run: nothing to record
    assert r.shard_counts() == [3]
    text = r.describe_missing([1, 4], 6, ["piece 1", "piece 4"])
    assert text == "2 of 6 chunks are missing: piece 1, piece 4; with --shard I/3 they belong to shard(s) 2/3"


def test_a_held_lock_is_not_taken_twice_and_dies_with_its_holder(tmp_path):
    r = run(tmp_path / "r")
    with r.lock("assemble.lock") as first:
        assert first
        with exclusive(r.path("assemble.lock")) as second:
            assert not second
    with r.lock("assemble.lock") as again:  # released: the lock file left behind locks nothing
        assert again


def test_differences_go_down_to_the_leaf():
    assert differences({"a": {"b": {"c": 1, "d": 2}}, "e": [1]}, {"a": {"b": {"c": 1, "d": 3}}, "e": [2]}) == \
        ["a.b.d", "e"]
    assert differences({"x": 1}, {"y": 1}) == ["x", "y"]


def test_shards_from_the_option_the_array_and_ranks():
    assert resolve_shard(" 2/4 ", {}) == Shard(1, 4)
    assert resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_MIN": "5"}).whole
    with pytest.raises(UsageError, match="not integers"):
        resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"})
    parts = [Shard(i, 2).split(rank, 3) for i in range(2) for rank in range(3)]
    owned = sorted(p for part in parts for p in part.take(list(range(20))))
    assert owned == list(range(20))  # every piece exactly once, whatever the split


# ---- the typed options ---------------------------------------------------------------------------
def test_options_are_normalised_once_and_checked():
    o = InferenceOptions(precision="bfloat16", device=" CPU ", tracks=["a,b", "a"], shifts="0,-3,3")
    assert (o.precision, o.device, o.tracks, o.shifts) == ("bf16", "cpu", ("a", "b"), (0, -3, 3))
    for bad, match in ((dict(batch_size=0), "--batch-size must be at least 1"),
                       (dict(precision="fp8"), "unknown precision"),
                       (dict(shifts="0,70"), "too large")):
        with pytest.raises(UsageError, match=match):
            InferenceOptions(**bad)
    with pytest.raises(UsageError, match="--window-mode"):
        ScoreOptions(window_mode="sliding")
    with pytest.raises(UsageError, match="input shifts"):
        ScoreOptions.of(shifts="0,3")
    with pytest.raises(UsageError, match="unknown option"):
        PredictOptions.of(shards="1/2")


def test_fingerprint_holds_what_decides_results_and_to_dict_everything():
    a = PredictOptions.of(device="cpu", batch_size=4, force=True, shard="1/2", rc_average=False)
    b = a.replace(device="cuda", batch_size=64, force=False, shard=None)
    assert a.fingerprint() == b.fingerprint()  # device, batch size, force, shard change no value
    assert a.to_dict() != b.to_dict() and a.to_dict()["inference"]["batch_size"] == 4
    assert a.replace(precision="bf16").fingerprint() != a.fingerprint()
    assert json.loads(json.dumps(a.to_dict()))["inference"]["shifts"] == [0]


def test_train_options_are_typed_too():
    assert TrainOptions().to_dict()["lr"] > 0
    with pytest.raises(UsageError, match="--lr must be positive"):
        TrainOptions(lr=0)
