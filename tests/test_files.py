"""io/files.py: atomic outputs, the leftovers of killed writers, and the checks of inputs and outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from epiformer_cli.errors import InputFileError, ModelFileError, UsageError
from epiformer_cli.io import files
from epiformer_cli.runs import check_output
from epiformer_cli.io.files import (
    atomic_output,
    atomic_write_text,
    check_input_file,
    remove_stale_temporaries,
    temporary_name,
)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_output_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(path, "w") as handle:
            handle.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_temporary_names_are_hidden_beside_the_file_and_unique(tmp_path):
    a, b = temporary_name(tmp_path / "x.bw"), temporary_name(tmp_path / "x.bw")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(f".x.bw.{files._HOST}-{os.getpid()}.") and a.name.endswith(".tmp")


def test_a_killed_writers_leftovers_go_when_the_file_is_written_again(tmp_path):
    path = tmp_path / "last.pt"
    stale = tmp_path / f".last.pt.{files._HOST}-{dead_pid()}.0123abcd.tmp"
    live = tmp_path / f".last.pt.{files._HOST}-{os.getpid()}.4567abcd.tmp"  # a writer still running
    other_host = tmp_path / f".last.pt.elsewhere-{dead_pid()}.89abcdef.tmp"  # can't judge its pid here
    other_file = tmp_path / f".model.pt.{files._HOST}-{dead_pid()}.0123abcd.tmp"
    for p in (stale, live, other_host, other_file):
        p.write_text("partial")
    atomic_write_text(path, "whole")
    assert not stale.exists()
    assert live.exists() and other_host.exists() and other_file.exists()
    assert path.read_text() == "whole"
    assert remove_stale_temporaries(tmp_path / "model.pt") == 1 and not other_file.exists()


def test_bigwig_writer_cleans_up_the_same_way(tmp_path):
    from epiformer_cli.io.bigwig import BigWigWriter

    stale = tmp_path / f".p.bw.{files._HOST}-{dead_pid()}.0123abcd.tmp"
    stale.write_bytes(b"partial")
    with BigWigWriter(tmp_path / "p.bw", {"chr1": 1000}) as writer:
        writer.add_bins("chr1", 0, [1.0, 2.0], span=128)
    assert sorted(os.listdir(tmp_path)) == ["p.bw"]


def test_check_input_file(tmp_path):
    with pytest.raises(InputFileError, match=r"missing\.bed: BED file not found: check the path"):
        check_input_file(tmp_path / "missing.bed", "BED file")
    with pytest.raises(ModelFileError, match="model file is a folder"):
        check_input_file(tmp_path, "model file", ModelFileError)
    present = tmp_path / "x.bed"
    present.write_text("chr1\t0\t1\n")
    assert check_input_file(present, "BED file") == present


def test_check_input_file_unreadable(tmp_path, monkeypatch):
    locked = tmp_path / "locked.tsv"
    locked.write_text("name\tpath\n")
    locked.chmod(0)
    real_access = os.access
    # root reads anything: let os.access say what it would say to a normal user
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    try:
        with pytest.raises(InputFileError, match=r"locked\.tsv: targets sheet is not readable: check its permissions"):
            check_input_file(locked, "targets sheet")
    finally:
        locked.chmod(0o600)


def test_check_output(tmp_path):
    existing = tmp_path / "scores.tsv"
    existing.write_text("old")
    with pytest.raises(UsageError, match="already exists: choose another --out, or pass --force"):
        check_output(existing, force=False)
    check_output(existing, force=True)
    with pytest.raises(UsageError, match="is also an input of this command"):
        check_output(existing, inputs=[tmp_path / "a.vcf", existing], force=True)
    check_output(tmp_path / "no" / "x.tsv")  # a missing folder is made by the writer, not by the check
    assert not (tmp_path / "no").exists()
    with pytest.raises(UsageError, match=f"{existing} is a file, not a folder"):
        check_output(existing / "x.tsv")
    with pytest.raises(UsageError, match="is a folder"):
        check_output(tmp_path)
    assert existing.read_text() == "old"


def test_a_resumed_run_removes_dead_writers_temporaries_anywhere_in_its_folder(tmp_path):
    """A write that failed because its folder turned read-only could neither rename nor remove its
    temporary; the resumed run may never write that piece again, so opening the run sweeps them."""
    from epiformer_cli.runs.folder import ResumableRun

    def open_run():
        return ResumableRun(tmp_path / "run", kind="k", format_version=1, settings={"a": 1}, what="test run")

    open_run()
    (tmp_path / "run" / "chunks" / "0").mkdir(parents=True)
    stale = tmp_path / "run" / "chunks" / "0" / f".1.npy.{files._HOST}-{dead_pid()}.0123abcd.tmp"
    live = tmp_path / "run" / "chunks" / "0" / f".2.npy.{files._HOST}-{os.getpid()}.4567abcd.tmp"
    other_host = tmp_path / "run" / f".3.npy.elsewhere-{dead_pid()}.89abcdef.tmp"
    for p in (stale, live, other_host):
        p.write_text("partial")
    assert open_run().resumed
    assert not stale.exists() and live.exists() and other_host.exists()
