"""Outputs never touch inputs, folders are owned, every step is checked first and resumable, and a
closed standard output ends a command quietly (issue 21).

Each case was a way to lose data or meet a dead end before: an input replaced with ``--force``, a
FIFO or device unlinked, a folder of the user's written over, a read-only folder found after the
scoring, a rerun refused after a Ctrl-C in ``--explain-top``, a traceback from ``| head -1``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path
from typing import Dict, Sequence

import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.runs import check_companion, check_output, check_output_dir
from tests.helpers import HEADER, epiformer_command, make_tiny_store, other, read_only_folder, score_files, unmeasured


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny genome, conservation, model and a VCF of four SNVs, made once."""
    folder = tmp_path_factory.mktemp("inputs")
    made = score_files(folder)
    s = made["seqs"]["chr1"]
    rows = "".join(f"chr1\t{pos}\tv{pos}\t{s[pos - 1]}\t{other(s[pos - 1])}\t.\t.\t.\n"
                   for pos in (20_001, 20_501, 21_001, 21_501))
    made["vcf"] = folder / "v.vcf"
    made["vcf"].write_text(HEADER + rows)
    made["bed"] = folder / "regions.bed"
    made["bed"].write_text("chr1\t20000\t20010\tr1\n")
    return made


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digests(files: Dict) -> Dict[str, str]:
    return {k: digest(v) for k, v in files.items() if k in ("fasta", "cons", "model", "vcf", "bed")}


def invoke(args: Sequence):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result, code: int, *says: str) -> str:
    """Exit ``code`` with exactly one error line holding every text of ``says``, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("epiformer: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in errors[0], result.stderr
    for text in says:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def score_args(files, out, *more):
    return ["score-variants", files["vcf"], "--fasta", files["fasta"], "--cons", files["cons"], "--model",
            files["model"], "--device", "cpu", "--out", out, *more]


def explain_args(files, out, *more):
    return ["explain", "--fasta", files["fasta"], "--cons", files["cons"], "--model", files["model"], "--device",
            "cpu", "--method", "gradient", "--out", out, *more]


# ---- the rule, in the run layer -------------------------------------------------------------------
def test_an_output_is_never_an_input_through_links_and_dots(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("data")
    (tmp_path / "sub").mkdir()
    os.link(source, tmp_path / "hard.txt")
    (tmp_path / "soft.txt").symlink_to(source)
    for alias in (source, tmp_path / "hard.txt", tmp_path / "soft.txt", tmp_path / "sub" / ".." / "in.txt"):
        with pytest.raises(UsageError, match="is also an input"):
            check_output(alias, inputs=[source], force=True)
        with pytest.raises(UsageError, match="is the same file as --null"):
            check_companion(alias, inputs=[("--null", source)], option="--out")
    assert source.read_text() == "data"


def test_an_output_inside_an_input_folder_or_a_folder_holding_an_input_is_refused(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text("{}")
    with pytest.raises(UsageError, match="lies inside the input folder"):
        check_output(store / "manifest.json", inputs=[store], force=True)
    with pytest.raises(UsageError, match="holds the input"):
        check_output_dir(tmp_path, inputs=[store / "manifest.json"])


def test_force_never_replaces_a_fifo_a_device_or_a_socket(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(UsageError, match=r"is a FIFO \(named pipe\), not a file"):
        check_output(pipe, force=True)
    assert check_output(pipe, force=False, streams=True) is True
    with pytest.raises(UsageError, match="is a character device"):
        check_output("/dev/null", force=True)
    assert check_output("/dev/null", streams=True) is True
    assert pipe.exists() and Path("/dev/null").is_char_device()


def test_an_owned_folder_is_empty_or_holds_a_run_of_the_same_command(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    check_output_dir(folder, marks=("explain.json",))  # empty
    (folder / ".x.host-1.abc.tmp").write_text("")  # a dead writer's temporary is nobody's
    check_output_dir(folder, marks=("explain.json",))
    for name in ("a.bed", "b.txt", "c.tsv", "d.png"):
        (folder / name).write_text("mine")
    with pytest.raises(UsageError, match=r"holds files epiformer did not write \(a.bed, b.txt, c.tsv and 1 more\)"):
        check_output_dir(folder, marks=("explain.json",))
    (folder / "explain.json").write_text("{}")
    check_output_dir(folder, marks=("explain.json",))  # a run of the command: its to resume or replace


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path):
    folder = tmp_path / "plots"
    folder.mkdir()
    with read_only_folder(folder):
        with pytest.raises(UsageError, match="not writable"):
            check_output_dir(folder, option="--plots")
        with pytest.raises(UsageError, match="not writable"):
            check_output_dir(folder / "new", option="--plots")


# ---- score-variants -------------------------------------------------------------------------------
@pytest.mark.parametrize("null_is", ["vcf", "model", "fasta"])
def test_force_never_makes_an_input_the_null(files, tmp_path, null_is):
    before = digests(files)
    result = invoke(score_args(files, tmp_path / "s.tsv", "--null", files[null_is], "--null-size", "100", "--force"))
    refused(result, 2, "--null", "inputs are never overwritten")
    assert digests(files) == before and not (tmp_path / "s.tsv").exists()


def test_the_null_and_the_output_are_never_one_file(files, tmp_path):
    out = tmp_path / "s.tsv"
    out.write_text("my scores\n")
    result = invoke(score_args(files, out, "--null", out, "--null-size", "100", "--force"))
    refused(result, 2, f"--null {out} is the same file as --out")
    assert out.read_text() == "my scores\n"


def test_the_vcf_or_an_index_of_the_fasta_is_never_the_output(files, tmp_path):
    before = digests(files)
    refused(invoke(score_args(files, files["vcf"], "--force")), 2, "the same file as the VCF")
    fai = Path(f"{files['fasta']}.fai")
    if fai.exists():
        refused(invoke(score_args(files, fai, "--force")), 2, "the --fasta index")
    assert digests(files) == before


def test_a_fifo_output_is_written_into_as_a_stream(files, tmp_path):
    pipe = tmp_path / "scores.fifo"
    os.mkfifo(pipe)
    got = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_text()))
    reader.start()
    result = invoke(score_args(files, pipe, "--force", "--null-size", "0"))
    reader.join(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert pipe.exists() and not pipe.is_file()  # still the FIFO: written into, never unlinked
    lines = got[0].splitlines()
    assert lines[0].startswith("chrom\t") and len(lines) == 1 + 4 * 3  # four SNVs x three tracks
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.parts"))


def test_dev_null_is_a_stream_not_a_file_to_replace(files):
    result = invoke(score_args(files, "/dev/null", "--force", "--null-size", "0"))
    assert result.exit_code == 0, result.stderr
    assert Path("/dev/null").is_char_device()


def test_every_destination_is_checked_before_the_first_window(files, tmp_path, monkeypatch):
    import epiformer_cli.jobs.score_variants as job

    def never(*a, **k):
        raise AssertionError("scoring started before a destination was checked")

    monkeypatch.setattr(job, "_scorer", never)
    plots, top = tmp_path / "plots", tmp_path / "top"
    plots.mkdir()
    top.mkdir()
    with read_only_folder(plots):
        refused(invoke(score_args(files, tmp_path / "a.tsv", "--plots", plots)), 2, "--plots", "not writable")
    with read_only_folder(top):
        refused(invoke(score_args(files, tmp_path / "b.tsv", "--explain-top", "2", top)), 2, "not writable")
    (top / "notes.txt").write_text("mine")
    refused(invoke(score_args(files, tmp_path / "c.tsv", "--explain-top", "2", top)), 2,
            "--explain-top", "holds files epiformer did not write (notes.txt)")
    (plots / "qq.png").write_text("an older plot")
    refused(invoke(score_args(files, tmp_path / "d.tsv", "--plots", plots, "--null-size", "100")), 2,
            "qq.png already exists")
    (tmp_path / "f.vcf.gz.tbi").mkdir()
    refused(invoke(score_args(files, tmp_path / "f.vcf.gz")), 2, "f.vcf.gz.tbi is a folder")
    refused(invoke(score_args(files, tmp_path / "g.tsv", "--null-size", "100", "--null-blacklist",
                              tmp_path / "missing.bed")), 1, "missing.bed", "not found")
    assert (top / "notes.txt").read_text() == "mine" and (plots / "qq.png").read_text() == "an older plot"


def test_an_interrupted_explain_top_is_resumed_by_the_same_command(files, tmp_path, monkeypatch):
    import epiformer_cli.jobs.score_variants as job

    out, top = tmp_path / "s.tsv", tmp_path / "top"
    args = score_args(files, out, "--explain-top", "2", top, "--explain-method", "gradient", "--null-size", "0")
    real = job._explain_top
    monkeypatch.setattr(job, "_explain_top", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    first = invoke(args)
    assert first.exit_code == 130, first.stderr
    assert out.exists() and parts_exist_for(out)  # scored, and the run is still resumable
    scored = out.read_bytes()
    monkeypatch.setattr(job, "_explain_top", real)
    again = invoke(args)
    assert again.exit_code == 0, again.stderr
    assert "resumed 1 finished chunk(s)" in again.stderr  # no chunk was scored again
    assert out.read_bytes() == scored
    assert (top / "explain.json").exists() and not parts_exist_for(out)


def parts_exist_for(out: Path) -> bool:
    from epiformer_cli.runs import PartedOutput

    return PartedOutput.exists_for(out)


# ---- explain, predict, export, train -------------------------------------------------------------
def test_explain_never_writes_into_a_folder_of_the_users(files, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    regions = folder / "regions.tsv"
    regions.write_text(files["bed"].read_text())
    refused(invoke(explain_args(files, folder, "--regions", regions, "--force")), 2,
            f"holds the input {regions}")
    other_folder = tmp_path / "mine"
    other_folder.mkdir()
    (other_folder / "thesis.tex").write_text("years of work")
    refused(invoke(explain_args(files, other_folder, "--regions", files["bed"], "--force")), 2,
            "holds files epiformer did not write (thesis.tex)")
    assert regions.read_text() == files["bed"].read_text()
    assert (other_folder / "thesis.tex").read_text() == "years of work"
    empty = tmp_path / "empty"
    empty.mkdir()
    done = invoke(explain_args(files, empty, "--regions", files["bed"]))
    assert done.exit_code == 0, done.stderr
    again = invoke(explain_args(files, empty, "--regions", files["bed"], "--force"))  # its own run: replaced
    assert again.exit_code == 0, again.stderr


def test_predict_refuses_a_fifo_and_a_bigwig_inside_an_input_folder(files, tmp_path):
    pipe = tmp_path / "pred.bw"
    os.mkfifo(pipe)
    args = ["predict", "--fasta", files["fasta"], "--cons", files["cons"], "--model", files["model"], "--device", "cpu"]
    refused(invoke([*args, "--out", pipe, "--force"]), 2, "is a FIFO (named pipe), not a file")
    assert pipe.exists() and not pipe.is_file()


def test_export_never_writes_into_the_store_it_reads(tmp_path):
    store = make_tiny_store(tmp_path / "store")
    manifest = store / "manifest.json"
    before = digest(manifest)
    refused(invoke(["export-bigwig", store, "--out", manifest, "--force"]), 2, "lies inside the input folder")
    assert digest(manifest) == before


def test_train_never_writes_into_a_folder_of_the_users(tmp_path):
    store = make_tiny_store(tmp_path / "store")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.md").write_text("keep")
    refused(invoke(["train", "--data", store, "--out", folder, "--preset", "tiny", "--device", "cpu",
                    "--max-steps", "1", "--force"]), 2, "holds files epiformer did not write (notes.md)")
    refused(invoke(["train", "--data", store, "--out", store, "--preset", "tiny", "--device", "cpu",
                    "--max-steps", "1", "--force"]), 2, "is the same file as --data")
    assert (folder / "notes.md").read_text() == "keep"


# ---- pipes ----------------------------------------------------------------------------------------
def test_a_closed_standard_output_ends_the_command_quietly(files, tmp_path):
    """``epiformer score-variants x.vcf | head -1``: status 141 (128 + SIGPIPE), nothing on stderr."""
    big = tmp_path / "many.vcf"
    s = files["seqs"]["chr1"]
    big.write_text(HEADER + "".join(f"chr1\t{p}\t.\t{s[p - 1]}\t{other(s[p - 1])}\t.\t.\t.\n"
                                    for p in range(20_001, 22_001, 4)))
    args = [str(a) for a in score_args(files, "-", "--null-size", "0", "--chunk-size", "100")]
    args[1] = str(big)
    proc = subprocess.Popen([*epiformer_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=unmeasured(dict(os.environ)))
    first = proc.stdout.readline()
    proc.stdout.close()  # `head -1` exits
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert first.startswith(b"chrom\t")
    assert [line for line in err.splitlines() if not line.startswith("epiformer: ") or "error" in line] == [], err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err


def test_the_demo_never_writes_into_a_folder_of_the_users(tmp_path):
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    (home / "run" / "model.pt").write_text("a week of training")
    (home / "thesis.tex").write_text("years of work")
    refused(invoke(["demo", "--out", home, "--data-only"]), 2, "holds files epiformer did not write (thesis.tex)")
    assert (home / "run" / "model.pt").read_text() == "a week of training"
    demo = tmp_path / "demo"
    assert invoke(["demo", "--out", demo, "--data-only"]).exit_code == 0
    again = invoke(["demo", "--out", demo, "--data-only"])  # a demo's folder: made again
    assert again.exit_code == 0, again.stderr


def test_an_explain_top_too_large_for_ism_is_refused_before_the_scoring(files, tmp_path):
    out = tmp_path / "s.tsv"
    result = invoke(score_args(files, out, "--explain-top", "100", tmp_path / "top", "--explain-method", "ism",
                               "--null-size", "0"))
    refused(result, 2, "--explain-top 100", "ISM mutants", "--explain-method gradient")
    assert not out.exists() and not parts_exist_for(out) and not (tmp_path / "top").exists()
