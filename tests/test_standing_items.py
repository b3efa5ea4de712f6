"""Standing items of issue 20: `train`'s refusals leave no run folder, a non-finite loss is exit 1,
options typed at their default count on --resume, one closing line and one checksum pass under
torchrun; VCFs with a byte-order mark, VCFs without ##contig lines on another assembly, a stale
index at debug level, the FASTA's compression told by io/hts.py, and help texts that say which
compressed inputs are read.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import numpy as np
import pysam
import pytest
import typer
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import InputFileError, StorageError, UsageError
from epiformer_cli.io import hts
from epiformer_cli.io.genome import Genome
from epiformer_cli.io.vcf import read_vcf
from epiformer_cli.options import TrainOptions
from epiformer_cli.training import distributed as D
from epiformer_cli.training.trainer import TrainSummary
from tests.helpers import (
    TEST_CONFIG, WINDOW, bgzip_text, clear_launcher_environment, fifo, make_tiny_store, other, score_files,
    write_bigwig, write_fasta,
)

runner = CliRunner()
COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    clear_launcher_environment(monkeypatch)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("epiformer: error:")]


# ---- train ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("standing")
    return make_tiny_store(root), root / "model.json"


@pytest.fixture(scope="module")
def no_valid_store(tmp_path_factory):
    """A store whose validation chromosome (chr8) is shorter than one window: no validation windows."""
    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.options import PrepareOptions

    root = tmp_path_factory.mktemp("novalid")
    sizes = {"chr1": 48_000, "chr8": 1_000, "chr9": 14_000}
    rng = np.random.default_rng(0)
    write_fasta(root / "g.fa", {c: "".join(rng.choice(list("ACGT"), n)) for c, n in sizes.items()})
    signal = {c: [(s, s + 64, 1.0) for s in range(0, n - 64, 64)] for c, n in sizes.items()}
    write_bigwig(root / "cons.bw", sizes, signal)
    write_bigwig(root / "a.bw", sizes, signal)
    (root / "targets.tsv").write_text("name\tpath\nA\ta.bw\nB\ta.bw\n")
    prepare_store(root / "g.fa", root / "cons.bw", root / "targets.tsv", root / "store",
                  options=PrepareOptions(window_bp=WINDOW, step_bp=WINDOW // 2))
    (root / "model.json").write_text(json.dumps(TEST_CONFIG))
    return root / "store"


def train(store, config, out, *extra):
    return runner.invoke(app, ["train", "--data", str(store), "--out", str(out), "--config", str(config),
                               "--batch-size", "2", "--workers", "0", "--device", "cpu", "--warmup-steps", "1",
                               *map(str, extra)])


def test_a_store_without_validation_windows_leaves_no_run_folder_and_the_fixed_rerun_works(
        tiny, no_valid_store, tmp_path):
    store, config = tiny
    out = tmp_path / "run"
    refused = train(no_valid_store, config, out, "--max-steps", "1")
    assert refused.exit_code == 1, refused.output
    assert len(error_lines(refused)) == 1 and "no validation windows" in error_lines(refused)[0]
    assert not out.exists()
    fixed = train(store, config, out, "--max-steps", "1")  # the same command on a good store
    assert fixed.exit_code == 0, fixed.output
    assert (out / "last.pt").exists() and (out / "model.pt").exists()


def test_fewer_windows_than_one_batch_leaves_no_run_folder(tiny, tmp_path):
    store, config = tiny
    result = train(store, config, tmp_path / "run", "--accumulate", "100")
    assert result.exit_code == 2 and "fewer than one global batch" in result.stderr, result.output
    assert not (tmp_path / "run").exists()


def test_a_non_finite_training_loss_exits_1_with_one_line(tiny, tmp_path, monkeypatch):
    import torch

    from epiformer_cli.training import trainer

    monkeypatch.setattr(trainer, "get_loss", lambda name: lambda pred, target: pred.sum() * torch.tensor(float("nan")))
    result = train(*tiny, tmp_path / "run", "--max-steps", "2")
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert lines == ["epiformer: error: the training loss became nan at step 0: lower --lr (now 0.002)"], result.stderr
    assert "Traceback" not in result.output


def test_resume_checks_an_option_typed_at_its_default_value(tiny, tmp_path):
    store, config = tiny
    out = tmp_path / "run"
    assert train(store, config, out, "--max-steps", "1", "--lr", "0.01").exit_code == 0
    typed = train(store, config, out, "--max-steps", "2", "--resume", "--lr", "0.002")  # --lr's default
    assert typed.exit_code == 2, typed.output
    assert error_lines(typed) == [
        "epiformer: error: --resume continues a run with its own settings, and these differ (--lr: 0.01 in the "
        "run, 0.002 now): drop them, or start a new run with --force (see epiformer train -h)"]
    same = train(store, config, out, "--max-steps", "2", "--resume", "--lr", "0.01")  # typed, and the run's
    assert same.exit_code == 0, same.output


def test_resumed_options_compare_what_was_given_even_at_its_default():
    run = TrainOptions(lr=0.01, seed=4).to_dict()
    with pytest.raises(UsageError, match=r"\(--lr: 0.01 in the run, 0.002 now\)"):
        TrainOptions().resumed(run, given={"lr"})
    kept = TrainOptions(device="cpu").resumed(run, given={"device"})  # not a fixed option
    assert (kept.lr, kept.seed, kept.device) == (0.01, 4, "cpu")
    assert TrainOptions().resumed(run).lr == 0.01  # a notebook: values at their default are "as before"


def test_given_options_are_those_typed_or_from_the_environment(monkeypatch):
    from epiformer_cli.cli.train import given_options

    seen = {}
    command = typer.Typer()

    @command.command()
    def run(ctx: typer.Context, lr: float = typer.Option(2e-3, "--lr"), seed: int = 0,
            device: str = typer.Option("auto", "--device", envvar="EPIFORMER_DEVICE")) -> None:
        seen["given"] = given_options(ctx, ["lr", "seed", "device"])

    @command.command()
    def other() -> None:
        pass

    monkeypatch.setenv("EPIFORMER_DEVICE", "cpu")
    assert runner.invoke(command, ["run", "--lr", "0.002"]).exit_code == 0
    assert seen["given"] == {"lr", "device"}


@pytest.mark.parametrize("rank, lines", [(0, 1), (1, 0)])
def test_only_rank_0_prints_the_closing_line(monkeypatch, tmp_path, rank, lines):
    import epiformer_cli.jobs.train as job

    summary = TrainSummary(out=tmp_path, steps=3, epochs_done=1.0, best_pearson=0.5, best_step=3, rank=rank)
    monkeypatch.setattr(job, "train_model", lambda **kw: summary)
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert sum("best valid Pearson 0.500 at step 3" in line for line in result.stderr.splitlines()) == lines


class _Store:
    def __init__(self, error=None):
        self.root, self.error, self.calls = Path("store"), error, 0

    def verify(self):
        self.calls += 1
        if self.error:
            raise self.error
        return 10


def test_one_process_per_node_verifies_the_store_and_hands_its_error_to_the_others(monkeypatch):
    from epiformer_cli.jobs.train import _verify_store

    handed = []

    def first_of(obj, env):  # the collective, as rank 0 (local rank 0) of two would see it
        handed.append(obj)
        return handed[0]

    monkeypatch.setattr(D, "first_of", first_of)
    node_first, node_second = D.DistEnv(0, 2, 0), D.DistEnv(1, 2, 1)
    damaged = _Store(StorageError("store/seq.npy fails its checksum: rebuild it"))
    with pytest.raises(StorageError, match="fails its checksum"):
        _verify_store(damaged, node_first)
    trusting = _Store()
    with pytest.raises(StorageError, match="fails its checksum"):  # rank 1 never reads: it gets rank 0's error
        _verify_store(trusting, node_second)
    assert (damaged.calls, trusting.calls) == (1, 0)
    handed.clear()
    good, waiting = _Store(), _Store()
    _verify_store(good, node_first)
    _verify_store(waiting, node_second)
    assert (good.calls, waiting.calls) == (1, 0)
    alone = _Store()
    _verify_store(alone, D.DistEnv())
    assert alone.calls == 1


def test_first_of_one_process_is_its_own_value():
    assert D.first_of(None, D.DistEnv()) is None
    assert D.first_of("x", D.DistEnv()) == "x"


# ---- VCF -----------------------------------------------------------------------------------------
def vcf_text(contigs=True, chroms=("chr1", "chr2")) -> str:
    head = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c}>\n" for c in chroms if contigs) + COLUMNS + "\n"
    return head + "".join(f"{c}\t{10 * (i + 1)}\tv{i}\tA\tC\t.\t.\t.\n" for i, c in enumerate(chroms * 3))




def alleles(path):
    with read_vcf(path) as reader:
        return [(a.record, a.chrom, a.start, a.ref, a.alt, a.id) for r in reader.records() for a in r.alleles]


@pytest.mark.parametrize("compression", ["plain", "gzip", "bgzip"])
def test_a_vcf_with_a_byte_order_mark_reads_like_the_clean_one(tmp_path, compression):
    clean = tmp_path / "clean.vcf"
    clean.write_text(vcf_text())
    text = "\ufeff" + vcf_text()
    if compression == "plain":
        path = tmp_path / "bom.vcf"
        path.write_bytes(text.encode())
    elif compression == "gzip":
        path = tmp_path / "bom.vcf.gz"
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path = bgzip_text(text, tmp_path / "bom.vcf.gz")
    assert len(alleles(clean)) == 6 and alleles(path) == alleles(clean)
    with read_vcf(path) as reader, read_vcf(clean) as want:
        assert reader.header_text() == want.header_text() and reader.contigs == ["chr1", "chr2"]


@pytest.mark.parametrize("cut", ["mid-stream", "at-a-flush"])
def test_a_cut_short_gzip_vcf_with_a_byte_order_mark_is_refused(tmp_path, cut):
    """Never fewer records without an error: damaged data met by the thread that strips the mark
    is told at the end of the records (or at the header)."""
    import zlib

    text = ("\ufeff##fileformat=VCFv4.2\n" + COLUMNS + "\n"
            + "".join(f"chr1\t{i + 1}\t.\tA\tC\t.\t.\t.\n" for i in range(200_000)))
    if cut == "mid-stream":
        data = gzip.compress(text.encode(), mtime=0)
        data = data[: len(data) // 2]
    else:  # the bytes up to a full flush: whole lines, then no end-of-stream marker
        packer = zlib.compressobj(6, zlib.DEFLATED, 31)
        data = packer.compress(text.encode()) + packer.flush(zlib.Z_FULL_FLUSH)
    path = tmp_path / "cut.vcf.gz"
    path.write_bytes(data)
    with pytest.raises(InputFileError, match=r"damaged .*after record \d+"):
        alleles(path)


def test_a_vcf_without_contig_lines_names_the_chromosomes_of_its_records(tmp_path):
    path = tmp_path / "nocontig.vcf.gz"
    path.write_bytes(gzip.compress(vcf_text(contigs=False, chroms=("2", "1", "MT")).encode()))
    with read_vcf(path) as reader:
        assert reader.contigs == ["2", "1", "MT"]
        assert len(list(reader.records())) == 9  # the names pass read another handle




def test_a_stream_without_contig_lines_is_read_ahead_and_given_whole(tmp_path):
    text = vcf_text(contigs=False, chroms=("chrZ", "chr1"))
    with read_vcf(fifo(tmp_path / "in.vcf", text.encode())) as reader:
        assert reader.contigs == ["chrZ", "chr1"]
        assert "##contig" not in reader.header_text()  # as declared, as from a file
        got = [(a.record, a.chrom, a.start) for r in reader.records() for a in r.alleles]
    clean = tmp_path / "clean.vcf"
    clean.write_text(text)
    assert got == [(a[0], a[1], a[2]) for a in alleles(clean)]


@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    return score_files(tmp_path_factory.mktemp("standing-score"))


def score_cli(files, vcf, out):
    return runner.invoke(app, ["score-variants", str(vcf), "--fasta", str(files["fasta"]), "--cons",
                               str(files["cons"]), "--model", str(files["model"]), "--device", "cpu",
                               "--null-size", "0", "--out", str(out)])


def test_a_vcf_without_contig_lines_on_another_assembly_is_one_error(scoring, tmp_path):
    names = ["NC_000001.11", "NC_000002.12", "NC_000003.12", "NC_000004.12", "NC_000005.10", "NC_000006.12"]
    vcf = tmp_path / "refseq.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n" + COLUMNS + "\n"
                   + "".join(f"{n}\t{100 + i}\t.\tA\tC\t.\t.\t.\n" for i, n in enumerate(names)))
    out = tmp_path / "out.tsv"
    result = score_cli(scoring, vcf, out)
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"epiformer: error: no chromosome names in common between {vcf}"), lines[0]
    assert "NC_000001.11, NC_000002.12, NC_000003.12, NC_000004.12, NC_000005.10, ... (6 in all)" in lines[0]
    assert f"{scoring['fasta']} (chr1, chr2)" in lines[0] and "same genome assembly" in lines[0]
    assert not out.exists()


def test_a_vcf_without_contig_lines_with_some_names_of_the_fasta_is_scored(scoring, tmp_path):
    s1 = scoring["seqs"]["chr1"]
    vcf = tmp_path / "some.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n" + COLUMNS + "\n" + f"chrUn_decoy\t5\t.\tA\tC\t.\t.\t.\n"
                   f"1\t101\t.\t{s1[100]}\t{other(s1[100])}\t.\t.\t.\n")
    out = tmp_path / "out.tsv"
    result = score_cli(scoring, vcf, out)
    assert result.exit_code == 0, result.output
    statuses = {line.split("\t")[0]: line for line in out.read_text().splitlines()[1:]}
    assert "\tunknown_chrom\t" in statuses["chrUn_decoy"] and "\tok\t" in statuses["1"]


def test_an_index_older_than_its_vcf_is_a_debug_line_not_a_warning(tmp_path, caplog):
    vcf = Path(pysam.tabix_index(str(_write_sorted(tmp_path / "a.vcf")), preset="vcf", force=True))
    tbi = Path(f"{vcf}.tbi")
    os.utime(tbi, (1, 1))
    with caplog.at_level(logging.DEBUG, logger="epiformer_cli"):
        with read_vcf(vcf):
            pass
    said = [r for r in caplog.records if "is older than the file" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.DEBUG]
    assert "tabix -f -p vcf" in said[0].getMessage()


def _write_sorted(path: Path) -> Path:
    path.write_text(vcf_text(chroms=("chr1",)))
    return path


# ---- FASTA ---------------------------------------------------------------------------------------
def test_the_genome_tells_its_compression_with_io_hts(tmp_path, monkeypatch):
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 50})
    asked = []
    real = hts.compression
    monkeypatch.setattr(hts, "compression", lambda path: asked.append(Path(path)) or real(path))
    assert Genome(fasta).compression == "plain" and asked == [fasta]
    gz = tmp_path / "g.fa.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    with pytest.raises(InputFileError, match="gzip-compressed, which cannot be indexed"):
        Genome(gz)


def test_a_fasta_that_is_a_pipe_is_refused_as_such(tmp_path):
    pipe = tmp_path / "g.fa"
    os.mkfifo(pipe)
    with pytest.raises(InputFileError, match="FASTA is not a regular file"):
        Genome(pipe)


# ---- help ----------------------------------------------------------------------------------------
def _help(command: str, option: str) -> str:
    click_app = typer.main.get_command(app)
    params = {p.name: p for p in click_app.commands[command].params}
    return params[option].help


@pytest.mark.parametrize("command, option, says", [
    ("score-variants", "vcf", "VCF (plain, bgzip or gzip), BCF"),
    ("explain", "variants", "VCF (plain, bgzip or gzip) or BCF"),
    ("explain", "regions", "BED (plain, gzip or bgzip)"),
    ("predict", "regions", "BED (plain, gzip or bgzip)"),
    ("prepare", "blacklist", "BED (plain, gzip or bgzip)"),
    ("prepare", "targets", "TSV, plain, gzip or bgzip"),
    ("score-variants", "null_blacklist", "BED (plain, gzip or bgzip)"),
    ("predict", "fasta", "plain or bgzipped (not plain gzip, which cannot be indexed)"),
])
def test_help_names_the_compressions_each_input_takes(command, option, says):
    assert says in _help(command, option)
