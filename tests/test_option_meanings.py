"""One meaning per option across commands (epiformer_cli/cli/common.py): list options (--tracks,
--chroms) parsed by one parser and described in one wording, --force described the same way, and
help texts that say when an option is required. Read from the app itself, so a new command is
checked as soon as it is registered."""

from __future__ import annotations

import pytest
import typer.core
import typer.main
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.cli.common import CHROMS_HELP, FORCE_HELP, TRACKS_HELP, names_syntax, split_names
from epiformer_cli.errors import UsageError
from tests.helpers import HEADER, clear_launcher_environment, predict_inputs, read_bw, score_files

runner = CliRunner()
#: the Click that Typer runs on (newer Typer vendors its own copy, whose classes are not ``click``'s)
CLICK = getattr(typer.core, "_click", None) or __import__("click")
GROUP = typer.main.get_command(app)
COMMANDS = dict(GROUP.commands)


def _option(command, name: str):
    return next((p for p in command.params if p.param_type_name == "option" and name in p.opts), None)


def _with(name: str):
    """The (command name, option) pairs of every command that has option ``name``."""
    return [(cmd, opt) for cmd, command in COMMANDS.items() if (opt := _option(command, name)) is not None]


def _help(command, param) -> str:
    """What ``epiformer CMD -h`` shows for ``param``: its help and Click's extras ([required])."""
    with CLICK.Context(command, info_name="epiformer") as ctx:
        record = param.get_help_record(ctx)
    return " ".join(record[1].split()) if record else ""


def _parse(name: str, args):
    """The values Click parses for command ``name`` from ``args``, its required options and
    arguments given placeholder values (nothing runs)."""
    command = COMMANDS[name]
    given = []
    for param in command.params:
        if param.required:
            given += ["x"] if param.param_type_name == "argument" else [param.opts[0], "x"]
    return command.make_context(name, given + list(args)).params


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    clear_launcher_environment(monkeypatch)


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("epiformer: error:")]


# ---- the parser -------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, names", [
    (["a,b"], ["a", "b"]),
    (["a", "b"], ["a", "b"]),
    ([" a , b", "c"], ["a", "b", "c"]),
    ("b,a", ["b", "a"]),           # one string: as one --tracks
    (["a", "a,b"], ["a", "a", "b"]),  # repeats kept: import-model reports them, the jobs drop them
    (["ATAC rep1"], ["ATAC rep1"]),   # a space inside a name is part of it
    (None, None),
    ([], None),
])
def test_split_names(values, names):
    assert split_names(values) == names


@pytest.mark.parametrize("value", ["", " ", ",", "a,", ",a", "a,,b", "a, ,b"])
def test_an_empty_name_is_refused_naming_the_option(value):
    with pytest.raises(UsageError) as caught:
        split_names(["ok", value], "--chroms")
    assert str(caught.value) == (f"empty name in {value!r}: separate names by single commas, as in --chroms a,b")


# ---- every command: the same parse and the same words -----------------------------------------------
TRACK_COMMANDS = [cmd for cmd, _ in _with("--tracks")]


def test_the_commands_with_tracks_are_the_known_ones():
    assert TRACK_COMMANDS == ["evaluate", "predict", "score-variants", "explain", "motifs", "export-bigwig", "import-model"]


@pytest.mark.parametrize("command", TRACK_COMMANDS)
def test_tracks_comma_separated_and_repeated_parse_the_same(command):
    assert _parse(command, ["--tracks", "a,b"])["tracks"] == ["a", "b"]
    assert _parse(command, ["--tracks", "a", "--tracks", "b"])["tracks"] == ["a", "b"]
    assert _parse(command, ["--tracks", " a, b", "--tracks", "c "])["tracks"] == ["a", "b", "c"]
    assert _parse(command, [])["tracks"] is None
    with pytest.raises(CLICK.exceptions.UsageError, match="empty name in 'a,,b'"):
        _parse(command, ["--tracks", "a,,b"])


def test_predict_chroms_parse_as_tracks_do():
    assert _parse("predict", ["--chroms", "chr1,chr2"])["chroms"] == ["chr1", "chr2"]
    assert _parse("predict", ["--chroms", "chr1", "--chroms", "chr2"])["chroms"] == ["chr1", "chr2"]
    with pytest.raises(CLICK.exceptions.UsageError, match="empty name in 'chr1,'"):
        _parse("predict", ["--chroms", "chr1,"])


def test_import_model_keeps_a_file_of_names_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cell,types.txt").write_text("ASCT\nOPC\n")
    assert _parse("import-model", ["--tracks", "cell,types.txt"])["tracks"] == ["cell,types.txt"]
    assert _parse("import-model", ["--tracks", "cell,other.txt"])["tracks"] == ["cell", "other.txt"]


def test_the_tracks_help_is_one_text():
    helps = {cmd: _help(COMMANDS[cmd], opt) for cmd, opt in _with("--tracks")}
    choosing = {cmd: text for cmd, text in helps.items() if cmd != "import-model"}
    assert set(choosing.values()) == {TRACKS_HELP}, choosing
    # import-model names the tracks instead of choosing them, in the same syntax
    assert names_syntax("--tracks") in helps["import-model"] and "a file of one name per line" in helps["import-model"]
    assert TRACKS_HELP == "Only these tracks, comma-separated or repeated (--tracks a,b is --tracks a --tracks b) [default: all]."
    assert {opt.metavar for _, opt in _with("--tracks")} == {"<names>"}


def test_the_chroms_help_of_predict():
    assert _help(COMMANDS["predict"], _option(COMMANDS["predict"], "--chroms")) == CHROMS_HELP


# ---- end to end: the same outputs --------------------------------------------------------------------
@pytest.fixture(scope="module")
def predict_files(tmp_path_factory):
    return predict_inputs(tmp_path_factory.mktemp("predict"))


def test_predict_writes_the_same_bigwigs_either_way(predict_files, tmp_path):
    base = ["predict", "--fasta", str(predict_files["fasta"]), "--cons", str(predict_files["cons"]),
            "--model", str(predict_files["model"]), "--chroms", "chrM", "--device", "cpu", "--no-rc-average"]
    results = {}
    for how, tracks in (("comma", ["--tracks", "OPC, ASCT"]), ("repeated", ["--tracks", "OPC", "--tracks", "ASCT"])):
        (tmp_path / how).mkdir()
        result = runner.invoke(app, base + tracks + ["--out", str(tmp_path / how / "pred.bw")])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / how).glob("*.bw")) == ["pred.ASCT.bw", "pred.OPC.bw"]
        results[how] = {t: read_bw(tmp_path / how / f"pred.{t}.bw") for t in ("ASCT", "OPC")}
    for track in ("ASCT", "OPC"):
        one, other = results["comma"][track], results["repeated"][track]
        assert one["header"] == other["header"] and len(one["chrM"][2]) == 1
        for column in range(3):
            assert one["chrM"][column].tolist() == other["chrM"][column].tolist()
    # another track's values: the two tracks really differ, so the comparison above can fail
    assert results["comma"]["ASCT"]["chrM"][2].tolist() != results["comma"]["OPC"]["chrM"][2].tolist()


def test_predict_refuses_an_empty_track_name_in_one_line(predict_files, tmp_path):
    result = runner.invoke(app, ["predict", "--fasta", str(predict_files["fasta"]), "--model",
                                 str(predict_files["model"]), "--out", str(tmp_path / "p.bw"), "--tracks", "ASCT,"])
    assert result.exit_code == 2
    assert _error_lines(result) == [
        "epiformer: error: invalid value for --tracks: empty name in 'ASCT,': separate names by single commas, "
        "as in --tracks a,b (see epiformer predict -h)"], result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def variant_files(tmp_path_factory):
    files = score_files(tmp_path_factory.mktemp("score"))
    s = files["seqs"]["chr1"]
    vcf = files["folder"] / "v.vcf"
    vcf.write_text(HEADER + "".join(f"chr1\t{p + 1}\t.\t{s[p]}\t{'ACGT'[('ACGT'.index(s[p]) + 1) % 4]}\t.\t.\t.\n"
                                    for p in (12_000, 12_300)))
    return files, vcf


def test_score_variants_writes_the_same_rows_either_way(variant_files):
    files, vcf = variant_files
    base = ["score-variants", str(vcf), "--fasta", str(files["fasta"]), "--cons", str(files["cons"]), "--model",
            str(files["model"]), "--null-size", "0", "--device", "cpu", "--no-rc-average"]
    comma = runner.invoke(app, base + ["--tracks", "glia,neuron"])
    repeated = runner.invoke(app, base + ["--tracks", "glia", "--tracks", " neuron"])
    assert comma.exit_code == 0 and repeated.exit_code == 0, comma.output + repeated.output
    rows = [line.split("\t") for line in comma.stdout.splitlines()[1:]]
    assert [row[5] for row in rows] == ["glia", "neuron", "glia", "neuron"]  # the tracks, in the order given
    assert repeated.stdout == comma.stdout


# ---- --force: replaces outputs, never an input -------------------------------------------------------
@pytest.mark.parametrize("command", [cmd for cmd, _ in _with("--force")])
def test_force_says_it_never_replaces_an_input(command):
    text = _help(COMMANDS[command], _option(COMMANDS[command], "--force"))
    assert text.startswith(FORCE_HELP + ": ") and len(text) > len(FORCE_HELP) + 10, text
    assert FORCE_HELP == "Replace existing outputs (never an input)"


def test_predict_force_names_both_the_bigwigs_and_the_store():
    text = _help(COMMANDS["predict"], _option(COMMANDS["predict"], "--force"))
    assert "bigWigs already at --out" in text and "a --store made with other inputs or options" in text


# ---- required options say so -------------------------------------------------------------------------
@pytest.mark.parametrize("command", list(COMMANDS))
def test_options_click_requires_show_required(command):
    required = [p for p in COMMANDS[command].params if p.required]
    for param in required:
        assert _help(COMMANDS[command], param).endswith("[required]"), (command, param.name)


#: options needed unless something else stands in, and the words their help says it in
CONDITIONAL = {
    "--fasta": "Required unless EPIFORMER_FASTA is set.",
    "--model": "Required unless EPIFORMER_MODEL is set.",
}


@pytest.mark.parametrize("name, words", list(CONDITIONAL.items()))
def test_an_option_required_unless_its_variable_says_so_in_the_same_words(name, words):
    pairs = _with(name)
    assert len(pairs) >= 3
    helps = {_help(COMMANDS[cmd], opt) for cmd, opt in pairs}
    assert len(helps) == 1 and words in helps.pop()


@pytest.mark.parametrize("command, args, needed, says", [
    ("predict", [], "--fasta", "missing option --fasta (or set EPIFORMER_FASTA)"),
    ("predict", ["--fasta", "g.fa"], "--model", "missing option --model (or set EPIFORMER_MODEL)"),
    ("score-variants", ["v.vcf"], "--fasta", "missing option --fasta (or set EPIFORMER_FASTA)"),
    ("score-variants", ["v.vcf", "--fasta", "g.fa"], "--model", "missing option --model (or set EPIFORMER_MODEL)"),
    ("explain", ["--out", "e"], "--fasta", "missing option --fasta (or set EPIFORMER_FASTA)"),
    ("explain", ["--out", "e", "--fasta", "g.fa"], "--model", "missing option --model (or set EPIFORMER_MODEL)"),
    ("explain", ["--out", "e", "--fasta", "g.fa", "--model", "m.pt"], "--regions", "give --regions BED or --variants VCF"),
    ("explain", ["--out", "e", "--fasta", "g.fa", "--model", "m.pt"], "--variants", "give --regions BED or --variants VCF"),
    ("predict", ["--fasta", "g.fa", "--model", "m.pt"], "--out", "missing option --out"),
    ("predict", ["--fasta", "g.fa", "--model", "m.pt", "--store", "s"], "--out", "missing option --out"),
    ("info", [], "model", "no model file: give one (epiformer info brain.pt) or set EPIFORMER_MODEL"),
])
def test_a_missing_conditional_option_is_one_line_and_its_help_says_required(command, args, needed, says, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [command, *args])
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"epiformer: error: {says}"), result.stderr
    assert not list(tmp_path.iterdir())
    param = _option(COMMANDS[command], needed) or next(p for p in COMMANDS[command].params if p.name == needed)
    assert "Required unless" in _help(COMMANDS[command], param), (command, needed)


def test_predict_out_help_says_when_store_alone_will_do():
    predict = COMMANDS["predict"]
    out, store = _help(predict, _option(predict, "--out")), _help(predict, _option(predict, "--store"))
    for text in (out, store):
        assert "--shard I/N, or a SLURM array task" in text and "`epiformer export-bigwig STORE --out pred.bw`" in text
    assert out.startswith("bigWig to write.") and "Required unless this run is a shard" in out


def test_predict_without_out_names_the_fix_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["predict", "--fasta", "g.fa", "--model", "m.pt", "--store", "s"])
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert len(lines) == 1 and "--out" in lines[0] and "--shard I/N" in lines[0], result.stderr
    assert "export-bigwig" in lines[0], result.stderr


def test_cons_is_required_for_a_model_trained_with_it(predict_files, tmp_path):
    result = runner.invoke(app, ["predict", "--fasta", str(predict_files["fasta"]), "--model",
                                 str(predict_files["model"]), "--out", str(tmp_path / "p.bw")])
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert len(lines) == 1 and "pass --cons (or set EPIFORMER_CONS), or --no-cons" in lines[0], result.stderr
    helps = {cmd: _help(COMMANDS[cmd], opt) for cmd, opt in _with("--cons")}
    running = {text for cmd, text in helps.items() if cmd != "prepare"}
    assert running == {"Conservation (phastCons) bigWig. Required unless EPIFORMER_CONS is set, --no-cons is given "
                       "or the model was trained without conservation."}
    assert helps["prepare"] == "Conservation (phastCons) bigWig. Required unless EPIFORMER_CONS is set or --no-cons is given."


def test_the_core_parses_names_the_same_way_for_notebooks():
    """options.split_names is the one parser: the command line keeps repeats, the options objects
    drop them, and both refuse an empty name (a notebook's tracks="" no longer means every track)."""
    from epiformer_cli.options import InferenceOptions
    from epiformer_cli.options import split_names as core_split_names

    assert core_split_names(["a", "a,b"]) == ("a", "b")
    assert core_split_names(["a", "a,b"], unique=False) == ("a", "a", "b")
    assert InferenceOptions(tracks="b, a,b").tracks == ("b", "a")
    with pytest.raises(UsageError, match="empty name in 'a,,b'"):
        InferenceOptions(tracks="a,,b")
