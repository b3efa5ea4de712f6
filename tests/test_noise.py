"""No raw library text on the terminal, and ``-q`` really quiet.

What torch, numpy and matplotlib warn, and what htslib (pysam) and libBigWig (pyBigWig) print to
the C stderr, is either said by epiformer in one ``epiformer:`` line or shown only with -v. The
real command runs as a process (C-level stderr included) and its WHOLE stderr is compared; the
routing itself is checked in-process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import List

import numpy as np
import pysam
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.cli.common import configure_logging
from epiformer_cli.model.modelfile import save_model
from tests.helpers import random_model, write_bigwig, write_fasta

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"chr1": 17_000, "chr2": 16_500, "chr3": 16_500}
TRACKS = ["ASCT", "OPC"]
SNVS = [("chr1", 6_001), ("chr2", 3_001)]
VCF_COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


class Note:
    """A class of the user's: a model file holding one of its objects is not plain data."""

    def __init__(self, text: str):
        self.text = text


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> SimpleNamespace:
    """Small valid inputs, and the bad ones each test needs, made once."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(7)
    seqs = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in SIZES.items()}
    f = SimpleNamespace(folder=folder, seqs=seqs)
    f.fasta = write_fasta(folder / "genome.fa", seqs)
    pysam.faidx(str(f.fasta))  # indexed already: "indexing ..." is an INFO line, not what is tested here
    f.cons = write_bigwig(folder / "cons.bw", SIZES, {c: [(0, n, 0.5)] for c, n in SIZES.items()})
    write_bigwig(folder / "a.bw", SIZES, {c: [(i, i + 100, float(i % 7)) for i in range(0, n - 100, 100)]
                                          for c, n in SIZES.items()})
    f.targets = folder / "targets.tsv"
    f.targets.write_text("name\tpath\nA\ta.bw\n")
    model = random_model(seed=3)
    f.model = save_model(folder / "model.pt", model, model.config, TRACKS)

    records = "".join(f"{c}\t{p}\t.\t{seqs[c][p - 1]}\t{'C' if seqs[c][p - 1] != 'C' else 'G'}\t.\t.\t.\n"
                      for c, p in SNVS)
    contigs = "".join(f"##contig=<ID={c},length={n}>\n" for c, n in SIZES.items())
    f.vcf = folder / "ok.vcf"
    f.vcf.write_text("##fileformat=VCFv4.2\n" + contigs + VCF_COLUMNS + records)
    f.no_contigs = folder / "no_contigs.vcf"
    f.no_contigs.write_text("##fileformat=VCFv4.2\n" + VCF_COLUMNS + records)
    f.stale = folder / "stale.vcf.gz"
    pysam.tabix_compress(str(f.vcf), str(f.stale))
    pysam.tabix_index(str(f.stale), preset="vcf")
    now = time.time()
    os.utime(f"{f.stale}.tbi", (now - 3600, now - 3600))  # indexed an hour before the VCF last changed
    os.utime(f.stale, (now, now))

    payload = torch.load(f.model, map_location="cpu", weights_only=True)
    payload["provenance"] = {"note": Note("trained on my laptop")}
    f.with_object = folder / "with_object.pt"
    torch.save(payload, f.with_object)
    f.pickled_module = folder / "pickled_module.pt"
    torch.save(model, f.pickled_module)
    f.torchscript = folder / "torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated: users still have such files
        torch.jit.save(torch.jit.script(Doubler()), str(f.torchscript))

    f.notes = folder / "notes.bw"
    f.notes.write_text("chr1\t0\t100\t0.5\n")
    data = f.cons.read_bytes()
    f.cut = folder / "cut.bw"
    f.cut.write_bytes(data[: len(data) // 2])
    return f


def epiformer(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The real command, as a user runs it: its own process, no EPIFORMER_* defaults, HOME and
    caches inside ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPIFORMER_")}
    env.update(HOME=str(cwd), XDG_CACHE_HOME=str(cwd / "cache"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "epiformer_cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def predict_args(f: SimpleNamespace, out: Path, model: Path = None, cons: Path = None) -> List:
    return ["predict", "--fasta", f.fasta, "--cons", cons or f.cons, "--model", model or f.model, "--out", out,
            "--device", "cpu", "--tracks", "ASCT", "--no-rc-average"]


def score_args(f: SimpleNamespace, vcf: Path, out: Path, model: Path = None) -> List:
    return ["score-variants", "--null-size", "0", vcf, "--fasta", f.fasta, "--cons", f.cons, "--model", model or f.model,
            "--tracks", "ASCT", "--device", "cpu", "--out", out]


# ---- model files that are not plain data ----------------------------------------------------
@pytest.mark.parametrize("name, command, why", [
    ("with_object", "predict", "it holds an object of class tests.test_noise.Note"),
    ("pickled_module", "score-variants", "it holds an object of class epiformer_cli.model.network.Epiformer"),
    ("torchscript", "predict", "it is a TorchScript archive"),
])
def test_a_model_file_that_is_not_plain_data_is_one_line(inputs, tmp_path, name, command, why):
    model = getattr(inputs, name)
    args = (predict_args(inputs, tmp_path / "pred.bw", model=model) if command == "predict"
            else score_args(inputs, inputs.vcf, tmp_path / "scores.tsv", model=model))
    proc = epiformer(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert lines[0].startswith(f"epiformer: error: refusing to load {model}: it is not a plain-data epiformer "
                               f"model file ({why}"), lines[0]
    assert "give a model file written by `epiformer train`" in lines[0] and "re-export" in lines[0], lines[0]
    # none of torch's text: its warning, its advice to load the file unsafely, its terminal escapes
    assert "torch" not in lines[0].replace(str(model), "") and "\x1b" not in lines[0], lines[0]
    assert proc.stdout == "" and not (tmp_path / "pred.bw").exists() and not (tmp_path / "scores.tsv").exists()


def test_a_torch_warning_inside_a_command_is_a_debug_line_shown_only_with_verbose(inputs, tmp_path):
    """torch.load warns (a UserWarning, 2 raw lines) before it refuses a TorchScript archive."""
    quiet = epiformer(*predict_args(inputs, tmp_path / "pred.bw", model=inputs.torchscript), cwd=tmp_path)
    assert quiet.stderr.count("\n") == 1 and "UserWarning" not in quiet.stderr, quiet.stderr
    verbose = epiformer("-v", *predict_args(inputs, tmp_path / "pred.bw", model=inputs.torchscript), cwd=tmp_path)
    said = [line for line in verbose.stderr.splitlines() if "TorchScript archive dispatching" in line]
    assert len(said) == 1 and said[0].startswith("epiformer: UserWarning ("), verbose.stderr
    assert "modelfile.py:" in said[0]  # where torch.load was called from, for a bug report
    assert "\n  payload = torch.load(" not in verbose.stderr  # warnings' own second (source) line


# ---- htslib (pysam) -------------------------------------------------------------------------
def test_a_vcf_newer_than_its_index_is_one_debug_line_of_ours(inputs, tmp_path):
    """epiformer never reads the index, so a stale one is no warning: one line with -v, else nothing."""
    proc = epiformer("-q", *score_args(inputs, inputs.stale, tmp_path / "scores.tsv"), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert len((tmp_path / "scores.tsv").read_text().splitlines()) == 1 + len(SNVS)
    verbose = epiformer("-v", *score_args(inputs, inputs.stale, tmp_path / "again.tsv"), cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    said = [line for line in verbose.stderr.splitlines() if "stale.vcf.gz.tbi" in line]
    assert said == [
        f"epiformer: {inputs.stale}: its index stale.vcf.gz.tbi is older than the file (was the VCF "
        "changed after it was indexed?): epiformer does not use the index, but other tools do: re-index it with: "
        f"tabix -f -p vcf {inputs.stale}"
    ]


def test_a_vcf_without_contig_lines_prints_nothing(inputs, tmp_path):
    proc = epiformer("-q", *score_args(inputs, inputs.no_contigs, tmp_path / "scores.tsv"), cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    rows = (tmp_path / "scores.tsv").read_text().splitlines()
    assert len(rows) == 1 + len(SNVS) and all("\tok\t" in r for r in rows[1:]), rows


# ---- libBigWig (pyBigWig) -------------------------------------------------------------------
@pytest.mark.parametrize("name, says", [
    ("notes", "conservation bigWig is not a bigWig file: convert bedGraph with bedGraphToBigWig"),
    ("cut", "conservation bigWig is damaged or truncated (its header or index cannot be read): copy or download"),
])
def test_a_file_that_pybigwig_cannot_open_is_one_line_of_ours(inputs, tmp_path, name, says):
    path = getattr(inputs, name)
    proc = epiformer(*predict_args(inputs, tmp_path / "pred.bw", cons=path), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"epiformer: error: {path}: {says}"), proc.stderr


# ---- -q: warnings and errors only -----------------------------------------------------------
def test_quiet_commands_print_nothing(inputs, tmp_path):
    runs = {
        "predict": epiformer("-q", *predict_args(inputs, tmp_path / "pred.bw"), cwd=tmp_path),
        "export-bigwig": epiformer("-q", "export-bigwig", tmp_path / ".pred.bw.store", "--out",
                                   tmp_path / "again.bw", cwd=tmp_path),
        "prepare": epiformer("-q", "prepare", "--fasta", inputs.fasta, "--cons", inputs.cons, "--targets",
                             inputs.targets, "--preset", "tiny", "--step", "4096", "--valid-chroms", "chr2",
                             "--test-chroms", "chr3", "--out", tmp_path / "store", cwd=tmp_path),
        "score-variants": epiformer("-q", *score_args(inputs, inputs.vcf, tmp_path / "scores.tsv"), cwd=tmp_path),
    }
    assert {k: (p.returncode, p.stderr) for k, p in runs.items()} == {k: (0, "") for k in runs}
    for output in ("pred.bw", "again.bw", "store/manifest.json", "scores.tsv"):
        assert (tmp_path / output).is_file(), output


def test_the_closing_line_is_an_info_line(inputs, tmp_path):
    """Without -q the summary still closes the command (in-process: no torch start-up to wait for)."""
    store = tmp_path / "store"
    args = ["prepare", "--fasta", inputs.fasta, "--cons", inputs.cons, "--targets", inputs.targets, "--preset",
            "tiny", "--step", "4096", "--valid-chroms", "chr2", "--test-chroms", "chr3", "--out", store]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"epiformer: {store}: written in "), result.stderr
    quiet = CliRunner().invoke(app, ["-q", *map(str, args), "--force"])
    assert (quiet.exit_code, quiet.stderr) == (0, "")


# ---- the routing, in-process ----------------------------------------------------------------
def _print_raw(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@pytest.fixture
def configure():
    """``configure(verbose, quiet)``: configure_logging where warnings and log records would reach
    stderr as they do outside pytest (which records warnings, and handles records on the root
    logger during the test); its process-wide changes are undone afterwards."""
    ours, python_root = logging.getLogger("epiformer_cli"), logging.getLogger()
    saved = (list(ours.handlers), ours.level, list(python_root.handlers), warnings.showwarning)

    def run(verbose: bool = False, quiet: bool = False) -> None:
        warnings.showwarning = _print_raw
        python_root.handlers[:] = []  # logging's last-resort handler prints what nobody handles
        configure_logging(verbose=verbose, quiet=quiet)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield run
    ours.handlers[:], python_root.handlers[:] = saved[0], saved[2]
    ours.setLevel(saved[1])
    warnings.showwarning = saved[3]


@pytest.mark.parametrize("verbose", [False, True])
def test_python_warnings_become_one_debug_line(configure, capsys, verbose):
    configure(verbose=verbose)
    warnings.warn("TypedStorage is deprecated.\nIt will be removed in the future", UserWarning)
    np.log(np.zeros(1))  # numpy's RuntimeWarning: divide by zero
    err = capsys.readouterr().err
    if not verbose:
        assert err == ""
        return
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("epiformer: UserWarning (") and lines[0].endswith(
        "): TypedStorage is deprecated. It will be removed in the future"), lines[0]
    assert lines[1].startswith("epiformer: RuntimeWarning (") and "divide by zero" in lines[1], lines[1]


@pytest.mark.parametrize("verbose", [False, True])
def test_other_libraries_log_warnings_become_one_debug_line(configure, capsys, verbose):
    """matplotlib says it builds its font cache through logging (Python's last-resort handler
    would print it raw)."""
    configure(verbose=verbose)
    logging.getLogger("matplotlib.font_manager").warning(
        "Matplotlib is building the font cache; this may take a moment.")
    expected = ("epiformer: matplotlib.font_manager warning: Matplotlib is building the font cache; this may take "
                "a moment.\n") if verbose else ""
    assert capsys.readouterr().err == expected


def test_quiet_still_says_warnings_and_every_record_is_one_line(configure, capsys):
    configure(quiet=True)
    log = logging.getLogger("epiformer_cli.test")
    log.info("a summary")
    log.warning("first\n\x1b[1msecond\x1b[0m line")
    assert capsys.readouterr().err == "epiformer: warning: first second line\n"


def test_libbigwig_capture_puts_stderr_back_even_on_error(configure, capfd):
    from epiformer_cli.io.bigwig import _libbigwig_messages_to_debug

    configure(verbose=True)
    with pytest.raises(RuntimeError):
        with _libbigwig_messages_to_debug():
            os.write(2, b"[bwHdrRead] There was an error while reading in the header!\n")
            os.write(2, b"another thread's line\n")
            raise RuntimeError("open failed")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == (
        "epiformer: libBigWig: [bwHdrRead] There was an error while reading in the header!\n"
        "another thread's line\n"
        "after\n"
    )


def test_our_code_logs_instead_of_warning():
    """Users see what epiformer says with log.warning; warnings.warn would reach them raw in a notebook
    and only with -v on the command line."""
    package = ROOT / "epiformer_cli"
    offenders = [str(p.relative_to(ROOT)) for p in package.rglob("*.py") if "warnings.warn(" in p.read_text()]
    assert offenders == []
