"""Refusals in the user's words, and output folders made the same way by every command (issue 22,
parts 3 and 4).

A store, null or run folder made with other settings is refused naming each option as the user
types it, with both values ("--step: 2048 in the store, 1024 now"), never a key of the record
("fingerprint.options.inference.rc_average"); the table of names is checked against every key the
real records hold. Every command makes the missing folders of its outputs (mkdir -p) once its
checks pass, and refuses in one line a path through a file or a folder it cannot write into.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest
from typer.testing import CliRunner

import epiformer_cli.jobs.prepare as prepare_job
from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.options import SETTING_NAMES, TrainOptions
from epiformer_cli.runs import ResumableRun, plain
from epiformer_cli.runs.destination import (
    describe_differences,
    other_inputs,
    setting_changes,
)
from epiformer_cli.variants import null_run
from tests.helpers import (
    FAST,
    HEADER,
    make_tiny_store,
    other,
    predict,
    predict_inputs,
    read_only_folder,
    score_files,
)


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """score-variants' tiny inputs (genome, conservation, 3-track model) and a VCF of two SNVs."""
    folder = tmp_path_factory.mktemp("score")
    made = score_files(folder)
    s = made["seqs"]["chr1"]
    made["vcf"] = folder / "v.vcf"
    made["vcf"].write_text(HEADER + "".join(f"chr1\t{p}\tv{p}\t{s[p - 1]}\t{other(s[p - 1])}\t.\t.\t.\n"
                                            for p in (20_001, 20_501)))
    made["bed"] = folder / "regions.bed"
    made["bed"].write_text("chr1\t20000\t20010\tr1\n")
    return made


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """predict's tiny inputs (2-track model, 3 chromosomes)."""
    return predict_inputs(tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="module")
def predicted(genome, tmp_path_factory):
    """A prediction store of chr2 (one track), for export-bigwig."""
    out = tmp_path_factory.mktemp("predicted") / "p.bw"
    predict(**genome, out=out, chroms=["chr2"], tracks=["ASCT"], **FAST)
    return out.with_name(".p.bw.store")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared store (tests/helpers.py), for train."""
    return make_tiny_store(tmp_path_factory.mktemp("prepared"))


def capture(patch: pytest.MonkeyPatch) -> List[Dict[str, Any]]:
    """Keep, as they are stored, the settings every run folder (ResumableRun) and every finished
    output (prepare's store, the null file) is opened with, from now on."""
    records: List[Dict[str, Any]] = []
    real_init, real_reuse = ResumableRun.__init__, prepare_job.reuse_or_replace

    def keep_run(self, root, *, kind, format_version, settings, **kw):
        records.append({"kind": kind, "format_version": format_version, **plain(dict(settings))})
        real_init(self, root, kind=kind, format_version=format_version, settings=settings, **kw)

    def keep_output(path, *, wanted, **kw):
        records.append(plain(dict(wanted)))
        return real_reuse(path, wanted=wanted, **kw)

    patch.setattr(ResumableRun, "__init__", keep_run)
    patch.setattr(prepare_job, "reuse_or_replace", keep_output)
    patch.setattr(null_run, "reuse_or_replace", keep_output)
    return records


#: score-variants' null and its scoring options, shared by the runs of this module (one null of
#: 100 SNVs is scored, once)
NULL_ARGS = ("--tracks", "glia", "--null-blacklist")


@pytest.fixture(scope="module")
def scored(files, tmp_path_factory):
    """One score-variants run with a null, its output, null and plots each in folders that did not
    exist, then a second one reusing the null; and the settings records both opened."""
    root = tmp_path_factory.mktemp("scored")
    made = {"out": root / "s1" / "s2" / "s.tsv", "null": root / "n1" / "n2" / "n.tsv.gz", "plots": root / "q1" / "q2"}
    with pytest.MonkeyPatch.context() as patch:
        made["records"] = capture(patch)
        made["first"] = invoke(score_args(files, made["out"], *NULL_ARGS, files["bed"], "--null", made["null"],
                                          "--plots", made["plots"], null_size=100))
        made["again"] = invoke(score_args(files, root / "again.tsv", *NULL_ARGS, files["bed"], "--null", made["null"],
                                          null_size=100))
    return made


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, code: int) -> str:
    """The one error line of a refused command (exit ``code``, no traceback), without the pointer
    to the command's help that ends a usage error's line."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("epiformer: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return re.sub(r" \(see epiformer [a-z-]+ -h\)$", "", lines[0])


def identity(path: Path) -> str:
    """A file as the refusals show it: size and the first 8 hex of its SHA-256."""
    data = Path(path).read_bytes()
    return f"{len(data):,} bytes {hashlib.sha256(data).hexdigest()[:8]}..."


def score_args(files, out, *more, null_size=0):
    return ["score-variants", files["vcf"], "--fasta", files["fasta"], "--cons", files["cons"], "--model",
            files["model"], "--device", "cpu", "--null-size", null_size, "--out", out, *more]


def predict_args(genome, out, *more):
    return ["predict", "--fasta", genome["fasta"], "--cons", genome["cons"], "--model", genome["model"], "--device",
            "cpu", "--no-rc-average", "--chroms", "chr2", "--chunk-windows", "2", "--out", out, *more]


# ---- the table covers every key a real record holds ------------------------------------------------
def _changed(value: Any, in_record: bool = False) -> Any:
    """``value`` with every setting in it changed (names of records kept, so records are compared
    one by one, and file identities kept identities), to walk all its keys through the real rules."""
    if isinstance(value, dict):
        if set(value) <= {"size", "sha256", "path"} and value:
            return {"size": -1, "sha256": "0" * 64}
        return {k: (v if in_record and k == "name" else _changed(v)) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        return [_changed(v, in_record=True) for v in value]
    return ["<changed>", repr(value)]


def _unnamed(record: Dict[str, Any]) -> List[str]:
    """The keys of ``record`` that no entry of SETTING_NAMES names."""
    record = plain(record)
    found = setting_changes(record, _changed(record))
    assert found, record
    return [f"{ns}.{key}" if ns else key for key, ns, _, _, _ in found
            if SETTING_NAMES.get(f"{ns}.{key}") is None and SETTING_NAMES.get(key) is None]


def test_every_key_of_every_real_record_has_a_name(files, genome, scored, tmp_path, monkeypatch):
    """Each record is built by the code that builds it for a real run (predict's store, prepare's
    store and build, score-variants' parts, null parts and null file, explain's parts, train's
    resumed options)."""
    records = capture(monkeypatch)
    bed = tmp_path / "r.bed"
    bed.write_text("chr2\t0\t5000\n")
    predict(**genome, out=tmp_path / "p.bw", regions=bed, chroms=["chr2"], tracks=["ASCT"], **FAST)
    make_tiny_store(tmp_path / "prep")
    assert invoke(["explain", "--fasta", files["fasta"], "--cons", files["cons"], "--model", files["model"],
                   "--device", "cpu", "--method", "gradient", "--plot", "0", "--regions", files["bed"],
                   "--out", tmp_path / "ex"]).exit_code == 0

    assert scored["first"].exit_code == 0 and scored["again"].exit_code == 0
    records += scored["records"]
    kinds = {r.get("kind") for r in records}
    assert {"epiformer-predictions", "epiformer-prepare-build", "epiformer-parts", "epiformer-explain",
            "epiformer-null"} <= kinds, kinds
    assert any("targets_sheet" in r for r in records)  # the prepared store's own record
    assert any("null" in r for r in records)  # the null's parts folder
    for record in records:
        assert _unnamed(record) == [], record
    train = {name: getattr(TrainOptions(), name) for name in TrainOptions.fixed_on_resume()}
    assert _unnamed(train) == []


# ---- the words ------------------------------------------------------------------------------------
def test_a_store_of_other_options_names_them_as_typed_with_both_values(genome, tmp_path):
    out = tmp_path / "p.bw"
    predict(**genome, out=out, chroms=["chr2"], **FAST)
    store = tmp_path / ".p.bw.store"
    with pytest.raises(UsageError) as refused:
        predict(**genome, out=out, chroms=["chr2"], **dict(FAST, rc_average=True, chunk_windows=3))
    assert str(refused.value) == (
        f"{store} already holds a prediction store made with other options (--chunk-windows: 2 in the store, "
        "3 now; --rc-average: the store has it off, this run on): use another --store (or --out), or --force "
        "to discard it")
    with pytest.raises(UsageError) as refused:
        predict(**genome, out=out, chroms=["chr1"], tracks=["OPC"], **FAST)
    assert str(refused.value) == (
        f"{store} already holds a prediction store made with other options (--chroms: chr2 in the store, "
        "chr1 now; --tracks: all in the store, OPC now): use another --store (or --out), or --force to discard it")


def test_another_input_file_is_named_by_size_and_hash(genome, tmp_path):
    out = tmp_path / "p.bw"
    predict(**genome, out=out, chroms=["chr2"], **FAST)
    fasta = tmp_path / "longer.fa"
    fasta.write_text(Path(genome["fasta"]).read_text() + ">chrX\nACGT\n")
    result = invoke(predict_args(dict(genome, fasta=fasta), out))
    assert one_error(result, 2) == (
        f"epiformer: error: {tmp_path / '.p.bw.store'} already holds a prediction store made from other inputs "
        f"(--fasta: another file (size/sha256 differ: {identity(genome['fasta'])} in the store, {identity(fasta)} "
        "now)): use another --store (or --out), or --force to discard it")


def test_prepare_names_the_step_and_a_changed_target_track(tmp_path):
    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.options import PrepareOptions
    from tests.helpers import CHROMS, WINDOW, write_bigwig

    store = make_tiny_store(tmp_path)
    args = (tmp_path / "g.fa", tmp_path / "cons.bw", tmp_path / "targets.tsv", store)
    with pytest.raises(UsageError) as refused:
        prepare_store(*args, options=PrepareOptions(window_bp=WINDOW, step_bp=WINDOW // 4))
    assert str(refused.value) == (f"{store} already holds a prepared store made with other options "
                                  "(--step: 2048 in the store, 1024 now): use --force to rebuild it")
    before = identity(tmp_path / "a.bw")
    write_bigwig(tmp_path / "a.bw", CHROMS, {c: [(0, 64, 1.0)] for c in CHROMS})
    with pytest.raises(UsageError) as refused:
        prepare_store(*args, options=PrepareOptions(window_bp=WINDOW, step_bp=WINDOW // 2))
    assert str(refused.value) == (
        f"{store} already holds a prepared store made from other inputs (--targets: A's file: another file "
        f"(size/sha256 differ: {before} in the store, {identity(tmp_path / 'a.bw')} now)): use --force to rebuild it")


def test_score_variants_parts_and_null_name_their_options(files, scored, tmp_path):
    out = tmp_path / "s.tsv"
    # shard 1 of 2 leaves the parts folder (the other shard has not run)
    assert invoke(score_args(files, out, "--shard", "1/2", "--chunk-size", "1")).exit_code == 0
    line = one_error(invoke(score_args(files, out, "--shard", "1/2", "--chunk-size", "1", "--score-bins", "3",
                                       "--no-rc-average")), 2)
    assert line == (f"epiformer: error: {out}.parts already holds a parts folder made with other options "
                    "(--no-rc-average: the earlier run has it on, this run off; --score-bins: 5 in the earlier run, "
                    "3 now): run the same command to resume, or --force to discard the parts")
    null = scored["null"]
    line = one_error(invoke(score_args(files, tmp_path / "b.tsv", *NULL_ARGS, files["bed"], "--null", null, "--seed",
                                       "3", null_size=100)), 2)
    assert line == (f"epiformer: error: {null} already holds a null made with other options (--seed: 0 in the null, "
                    "3 now): give another --null FILE, or --force to replace it")


def test_at_most_four_differences_are_named_then_counted():
    old = {"options": {"score_bins": 5, "window_mode": "grid", "chunk_size": 10, "seed": 0, "null_size": 100,
                       "on_ref_mismatch": "skip"}}
    new = {"options": {"score_bins": 3, "window_mode": "centered", "chunk_size": 20, "seed": 1, "null_size": 200,
                       "on_ref_mismatch": "error"}}
    lead, items = describe_differences(old, new, "parts folder")
    assert lead == "made with other options"
    assert items == ("--chunk-size: 10 in the earlier run, 20 now; --null-size: 100 in the earlier run, 200 now; "
                     "--on-ref-mismatch: skip in the earlier run, error now; --score-bins: 5 in the earlier run, 3 now; "
                     "and 2 more")


def test_a_changed_model_is_one_item_and_a_new_format_is_said_alone():
    old = {"inputs": {"model_sha256": "a" * 64, "model_tracks": ["x"]}, "options": {"precision": "fp32"}}
    new = {"inputs": {"model_sha256": "b" * 64, "model_tracks": ["y"]}, "options": {"precision": "bf16"}}
    assert str(other_inputs("o", "parts folder", old, new, "fix")) == (
        "o already holds a parts folder made from other inputs and options (--model: aaaaaaaa... in the earlier run, "
        "bbbbbbbb... now; --precision: fp32 in the earlier run, bf16 now): fix")
    assert str(other_inputs("o", "prediction store", dict(old, format_version=1), dict(new, format_version=2), "fix")) \
        == "o already holds a prediction store of another format (the format version: 1 in the store, 2 now): fix"
    assert str(other_inputs("o", "test run", {}, new, "fix")) == "o already holds a test run whose settings cannot be read: fix"
    # a null's own keys read in its namespace: its size is --null-size, its blacklist --null-blacklist
    null = {"kind": "epiformer-null", "size": 100, "blacklist": None}
    assert describe_differences(null, dict(null, size=200, blacklist={"size": 3, "sha256": "c" * 64}), "null") == (
        "made from other inputs and options",
        "--null-blacklist: none in the null, 3 bytes cccccccc... now; --null-size: 100 in the null, 200 now")


def test_records_of_a_list_are_compared_by_name():
    track = {"name": "A", "path": "/d/a.bw", "scale": 1.0, "clip": None, "stat": "mean",
             "file": {"size": 5, "sha256": "d" * 64}}
    renamed = {"tracks": [dict(track, name="B")]}
    assert describe_differences({"tracks": [track]}, renamed, "prepared store") == (
        "made from other inputs", "--targets: tracks A in the store, B now")
    rescaled = {"tracks": [dict(track, scale=2.0)]}
    assert describe_differences({"tracks": [track]}, rescaled, "prepared store") == (
        "made from other inputs", "--targets: A's scale: 1 in the store, 2 now")


def test_resume_names_the_options_as_typed():
    with pytest.raises(UsageError) as refused:
        TrainOptions(batch_size=16, lr=0.02).resumed(TrainOptions(lr=0.01).to_dict(), given={"lr", "batch_size"})
    assert str(refused.value) == ("--resume continues a run with its own settings, and these differ (--batch-size: 8 "
                                  "in the run, 16 now; --lr: 0.01 in the run, 0.02 now): drop them, or start a new "
                                  "run with --force")


# ---- output folders: made when missing, by every command, only once its checks pass ----------------
def test_every_command_makes_the_missing_folders_of_its_output(files, genome, scored, tmp_path):
    import torch

    from tests.published_reference import (
        published_checkpoint,
        published_param,
        published_state_dict,
    )

    out = tmp_path / "x" / "y" / "p.bw"
    assert invoke(predict_args(genome, out)).exit_code == 0
    assert out.with_name("p.ASCT.bw").is_file() and out.with_name("p.OPC.bw").is_file()
    assert scored["first"].exit_code == 0, scored["first"].stderr  # --out, --null and --plots in new folders
    assert scored["out"].is_file() and scored["null"].is_file() and any(scored["plots"].iterdir())
    exported = tmp_path / "e1" / "e2" / "e.bw"
    assert invoke(["export-bigwig", out.with_name(".p.bw.store"), "--out", exported, "--tracks", "ASCT"]).exit_code == 0
    assert exported.is_file()
    param = published_param(seq_len=16_384, max_len=160, embed_size=140, num_heads=8, num_encoder_layers=1,
                            multiout_dim=2, crop_size=16, dim_feedforward=256)
    checkpoint = tmp_path / "m.pth.tar"
    torch.save(published_checkpoint(param, published_state_dict(param, stem_channels=64, width=128)), checkpoint)
    model = tmp_path / "i1" / "i2" / "m.pt"
    result = invoke(["import-model", checkpoint, "--out", model, "--tracks", "a,b"])
    assert result.exit_code == 0, result.stderr
    assert model.is_file()


@pytest.mark.parametrize("command", ["predict", "score-variants", "export-bigwig", "import-model", "--null",
                                     "--plots", "explain", "prepare", "train"])
def test_a_path_through_a_file_is_refused_naming_the_file(files, genome, predicted, prepared, tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    target = blocker / "sub" / "out.bw"
    args = {
        "predict": predict_args(genome, target),
        "score-variants": score_args(files, target),
        "export-bigwig": ["export-bigwig", predicted, "--out", target],
        "import-model": ["import-model", tmp_path / "m.pth.tar", "--out", target],
        "--null": score_args(files, tmp_path / "s.tsv", "--null", target, null_size=100),
        "--plots": score_args(files, tmp_path / "s.tsv", "--plots", target, null_size=100),
        "explain": ["explain", "--fasta", files["fasta"], "--cons", files["cons"], "--model", files["model"],
                    "--regions", files["bed"], "--out", target],
        "prepare": ["prepare", "--fasta", files["fasta"], "--cons", files["cons"], "--targets", files["bed"],
                    "--out", target],
        "train": ["train", "--data", prepared, "--out", target],
    }[command]
    line = one_error(invoke(args), 2)
    assert f"{blocker} is a file, not a folder (choose another" in line, line
    assert blocker.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_a_refused_run_leaves_no_new_folder(files, genome, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert invoke(predict_args(dict(genome, model=bad), tmp_path / "x" / "y" / "p.bw")).exit_code == 1
    assert invoke(score_args(dict(files, model=bad), tmp_path / "s1" / "s.tsv")).exit_code == 1
    assert invoke(["import-model", bad, "--out", tmp_path / "i1" / "m.pt"]).exit_code != 0
    assert invoke(["export-bigwig", tmp_path / "nostore", "--out", tmp_path / "e1" / "e.bw"]).exit_code != 0
    assert sorted(os.listdir(tmp_path)) == ["bad.pt"]


def test_a_folder_that_cannot_be_made_is_refused_naming_the_unwritable_one(genome, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only_folder(locked):
        line = one_error(invoke(predict_args(genome, locked / "x" / "p.bw")), 2)
        assert line == (f"epiformer: error: cannot write {locked / 'x' / 'p.bw'}: cannot create folder {locked / 'x'}: "
                        f"folder {locked} is not writable (choose another --out)")
        assert os.listdir(locked) == []
