"""Track and cell-type names (epiformer_cli/names.py): the one check where names enter (--tracks of
import-model, the targets sheet, a model file) and the one file-name part they become, so that no
name breaks a TSV column and no two names write the same file."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import InputFileError, ModelFileError, UsageError
from epiformer_cli.explain.outputs import track_file_names
from epiformer_cli.explain.plots import plot_name
from epiformer_cli.io.targets import read_targets
from epiformer_cli.jobs.export import output_paths
from epiformer_cli.model.checkpoint import parse_track_names
from epiformer_cli.model.modelfile import load_model, save_model
from epiformer_cli.names import MAX_LENGTH, check_names, file_part
from tests.helpers import random_model, write_fasta
from tests.published_reference import published_checkpoint, published_param, published_state_dict

runner = CliRunner()


# ---- the check ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("names, message", [
    (["ok", "a\tb"], r"--tracks: track name 'a\tb' contains a tab: track names must be printable, without tabs "
                     "or newlines"),
    (["a\nb"], r"track name 'a\nb' contains a newline"),
    (["a\rb"], r"track name 'a\rb' contains a carriage return"),
    (["a\x0bb"], r"track name 'a\x0bb' contains the unprintable character '\x0b'"),
    (["a\x1b[31m"], r"track name 'a\x1b[31m' contains the unprintable character '\x1b'"),
    (["a\u2028b"], r"track name 'a\u2028b' contains the unprintable character '\u2028'"),
    (["zero\u200bwidth"], r"'zero\u200bwidth' contains the unprintable character '\u200b'"),
    (["n\udce9uron"], r"track name 'n\udce9uron' holds the byte b'\xe9', which is not UTF-8"),
    ([""], "track name '' is empty: give every track a name"),
    (["L2/3,IT"], "track name 'L2/3,IT' contains a comma: track names are chosen with comma-separated lists"),
    ([" ASCT"], "track name ' ASCT' starts or ends with a space"),
    (["ASCT "], "track name 'ASCT ' starts or ends with a space"),
    (["x" * (MAX_LENGTH + 1)], f"takes {MAX_LENGTH + 1} bytes as UTF-8: track names must take at most {MAX_LENGTH}"),
    (["é" * 101], "takes 202 bytes as UTF-8"),
    (["ASCT", "OPC", "ASCT"], "track name 'ASCT' appears twice: track names must be unique"),
    (["a;b", "a_b"], "track names 'a;b' and 'a_b' both become 'a_b' in file names"),
    (["a b", "a/b"], "track names 'a b' and 'a/b' both become 'a_b' in file names"),
    (["ASCT", "asct"], "track names 'ASCT' and 'asct' differ only in case"),
])
def test_each_refusal_is_one_line_naming_the_offender(names, message):
    with pytest.raises(UsageError) as caught:
        check_names(names, "--tracks")
    text = str(caught.value)
    assert message in text, text  # raw strings: the message shows the escapes, not the characters
    assert text.startswith("--tracks: ") and "\n" not in text and "\r" not in text and text.isprintable()


def test_the_message_escapes_the_name_as_repr_does():
    with pytest.raises(UsageError) as caught:
        check_names(["a\tb"], "--tracks")
    assert str(caught.value) == ("--tracks: track name 'a\\tb' contains a tab: track names must be printable, "
                                 "without tabs or newlines")


def test_the_caller_chooses_the_error_and_the_fix():
    with pytest.raises(InputFileError, match=r"^t\.tsv: .*'a;b' and 'a_b'.*: rename one: do this$"):
        check_names(["a;b", "a_b"], "t.tsv", error=InputFileError, fix=": do this")
    with pytest.raises(UsageError, match="cell type name 'x\\\\ty' contains a tab: cell type names"):
        check_names(["x\ty"], "--cell-types", what="cell type")


@pytest.mark.parametrize("names", [
    ["ASCT", "OPC", "neuron"],
    ["CD4+", "CD4-", "CD4_"],  # '+' and '-' stay: three files
    ["H3K27ac (rep 1)", "H3K27ac.rep1"],
    ["神经元", "星形胶质细胞", "Müller glia"],  # letters of any script stay, so they do not all become '___'
    ["x" * MAX_LENGTH],
])
def test_good_names_pass_unchanged_and_get_one_file_each(names):
    assert check_names(names, "--tracks") == names
    files = track_file_names(names)
    assert len({f.casefold() for f in files.values()}) == len(names)
    assert len({plot_name("r1", n).casefold() for n in names}) == len(names)


def test_file_part_is_what_every_output_file_uses():
    """The check and the file names cannot disagree: explain's bigWigs, its plots and export's
    bigWigs all take their track part from file_part."""
    assert file_part("a;b") == "a_b" and file_part("ATAC/rep 1") == "ATAC_rep_1" and file_part("CD4+") == "CD4+"
    assert file_part("Müller") == "Müller"
    names = ["a;b", "ATAC/rep 1", "CD4+", "Müller"]
    assert track_file_names(names) == {n: f"contrib.{file_part(n)}.bw" for n in names}
    assert {n: plot_name("r1", n) for n in names} == {n: f"r1.{file_part(n)}.png" for n in names}
    assert {n: p.name for n, p in output_paths("/x/pred.bw", names).items()} == {
        n: f"pred.{file_part(n)}.bw" for n in names}


def test_plot_names_stay_within_the_file_name_limit_in_bytes():
    """120 bytes before '.png' even for letters of several bytes (a file system counts bytes)."""
    name = plot_name("区" * 100, "星形胶质细胞")
    assert len(name.encode()) - len(".png") <= 120 and name.endswith(".星形胶质细胞.png")
    assert plot_name("区" * 100 + "a", "t") != plot_name("区" * 100 + "b", "t")


# ---- where names enter: import-model --tracks ----------------------------------------------------------
def test_parse_track_names_refuses_a_tab_and_a_collision():
    with pytest.raises(UsageError, match=r"^--tracks: track name 'a\\tb' contains a tab"):
        parse_track_names(["a\tb"], 1, "checkpoint c")
    with pytest.raises(UsageError, match="'a;b' and 'a_b' both become 'a_b'"):
        parse_track_names("a;b,a_b", 2, "checkpoint c")
    assert parse_track_names(" ASCT , OPC", 2, "checkpoint c") == ["ASCT", "OPC"]  # list spacing is trimmed


def test_a_track_file_with_a_byte_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    (tmp_path / "names.txt").write_bytes(b"ASCT\nn\xe9uron\n")
    with pytest.raises(UsageError, match=r"track file .*names\.txt: track name 'n\\udce9uron' holds the byte"):
        parse_track_names(str(tmp_path / "names.txt"), 2, "checkpoint c")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny published checkpoint of 2 output tracks."""
    param = published_param(seq_len=16_384, max_len=128, embed_size=128, num_heads=8, num_encoder_layers=1,
                            multiout_dim=2, crop_size=16, dim_feedforward=256)
    path = tmp_path_factory.mktemp("ckpt") / "m.pth.tar"
    torch.save(published_checkpoint(param, published_state_dict(param, stem_channels=16, width=32)), path)
    return path


@pytest.mark.parametrize("tracks, says", [
    ("ASCT,a\tb", "--tracks: track name 'a\\tb' contains a tab: track names must be printable"),
    ("a;b,a_b", "--tracks: track names 'a;b' and 'a_b' both become 'a_b' in file names"),
])
def test_import_model_refuses_a_bad_name_with_exit_2_and_one_line(tmp_path, checkpoint, tracks, says):
    out = tmp_path / "m.pt"
    result = runner.invoke(app, ["import-model", str(checkpoint), "--out", str(out), "--tracks", tracks])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"epiformer: error: {says}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


# ---- where names enter: the targets sheet ----------------------------------------------------------
@pytest.mark.parametrize("sheet, says", [
    (b"name\tpath\nASCT\ta.bw\nOP\x0bC\tb.bw\n", r"t.tsv:3: track name 'OP\x0bC' contains the unprintable character"),
    (b"name\tpath\nn\xe9uron\ta.bw\n", r"t.tsv:2: track name 'n\udce9uron' holds the byte b'\xe9', which is not UTF-8"),
    (b"name\tpath\na;b\ta.bw\na_b\tb.bw\n", "t.tsv: track names 'a;b' and 'a_b' both become 'a_b' in file names"),
    (b"name\tpath\nASCT\ta.bw\nasct\tb.bw\n", "t.tsv: track names 'ASCT' and 'asct' differ only in case"),
    (b"a b.bw\na;b.bw\n", "t.tsv: track names 'a b' and 'a;b' both become 'a_b'"),
    (b"ok.bw\nx\x1by.bw\n", r"t.tsv:2: track name 'x\x1by' contains the unprintable character '\x1b'"),
])
def test_a_targets_sheet_with_a_bad_name_is_refused(tmp_path, sheet, says):
    (tmp_path / "t.tsv").write_bytes(sheet)
    with pytest.raises(InputFileError) as caught:
        read_targets(tmp_path / "t.tsv")
    text = str(caught.value)
    assert says in text, text
    assert "\n" not in text and text.isprintable()


def test_prepare_refuses_colliding_names_in_one_line(tmp_path):
    (tmp_path / "t.tsv").write_text("name\tpath\na;b\ta.bw\na_b\tb.bw\n")
    write_fasta(tmp_path / "g.fa", {c: "ACGT" * 1000 for c in ("chr1", "chr8", "chr9")})
    result = runner.invoke(app, ["-q", "prepare", "--targets", str(tmp_path / "t.tsv"), "--out", str(tmp_path / "st"),
                                 "--fasta", str(tmp_path / "g.fa"), "--no-cons"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "'a;b' and 'a_b'" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


# ---- where names enter: a model file -------------------------------------------------------------
def test_save_model_refuses_colliding_names(tmp_path):
    model = random_model()
    with pytest.raises(UsageError, match="'a;b' and 'a_b' both become 'a_b'"):
        save_model(tmp_path / "m.pt", model, model.config, ["a;b", "a_b"])
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("tracks, says", [
    (["a;b", "a_b"], "track names 'a;b' and 'a_b' both become 'a_b' in file names"),
    (["ASCT", "a\tb"], "track name 'a\\tb' contains a tab"),
])
def test_a_model_file_saved_before_the_check_is_refused_with_the_fix(tmp_path, tracks, says):
    """A model file written before the check holds names that would lose a file or break a column:
    every command refuses it at load, before any work, and says how to rename."""
    model = random_model()
    path = save_model(tmp_path / "m.pt", model, model.config, ["A", "B"])
    payload = torch.load(path, weights_only=True)
    payload["tracks"] = tracks  # the weights' digest covers the weights only: the file still loads
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="re-import the checkpoint with --tracks"):
        load_model(path)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"epiformer: error: model file {path}: ") and says in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
