"""Faults of the machine, in the layers every command shares: checksummed pieces, claims, one-line
storage errors, free-space checks. (Whole commands under a file-size limit, on damaged stores and
run twice at once: tests/test_fault_injection.py.)"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from epiformer_cli.runs import TRAILER_SIZE, CorruptPiece, ResumableRun
from epiformer_cli.errors import StorageError
from epiformer_cli.io import faults
from epiformer_cli.io.faults import human_bytes, require_free_space, storage_error
from epiformer_cli.io.files import atomic_output
from tests.helpers import unmeasured

ROOT = Path(__file__).resolve().parents[1]


def run(root: Path) -> ResumableRun:
    return ResumableRun(root, kind="test", format_version=1, settings={"a": 1}, what="test run")


# ---- checksummed pieces ----------------------------------------------------------------------
def test_a_piece_ends_with_its_checksum_line_and_reads_back_without_it(tmp_path):
    r = run(tmp_path / "r")
    r.write("p/1.bin", lambda h: h.write(b"x" * 1000))
    r.write("p/2.txt", lambda h: h.write("héllo\n"), "w")
    raw = r.path("p/1.bin").read_bytes()
    assert len(raw) == 1000 + TRAILER_SIZE and raw.endswith(b"\n")
    assert raw[1000:] == b"#epiformer-crc32 %08x %016d\n" % (__import__("zlib").crc32(b"x" * 1000), 1000)
    assert r.read_bytes("p/1.bin") == b"x" * 1000 and r.verify("p/1.bin")
    assert r.read_text("p/2.txt") == "héllo\n" and r.verify("p/2.txt")


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:500] + bytes([d[500] ^ 1]) + d[501:], "checksum mismatch"),  # a flipped bit
    (lambda d: d[:700], "no checksum line"),  # truncated
    (lambda d: d[:-TRAILER_SIZE - 10] + d[-TRAILER_SIZE:], "990 bytes where 1000 were written"),  # bytes lost
    (lambda d: d[:-2] + (b"1" if d[-2:-1] != b"1" else b"2") + b"\n", "bytes where"),  # the line itself
    (lambda d: b"", "no checksum line"),  # emptied
])
def test_a_damaged_piece_is_found_not_used(tmp_path, damage, message):
    r = run(tmp_path / "r")
    r.write("p/1.bin", lambda h: h.write(bytes(range(250)) * 4))
    path = r.path("p/1.bin")
    path.write_bytes(damage(path.read_bytes()))
    assert r.is_done("p/1.bin") and not r.verify("p/1.bin")
    with pytest.raises(CorruptPiece, match=message) as caught:
        r.read_bytes("p/1.bin")
    assert str(path) in str(caught.value) and isinstance(caught.value, StorageError)


def test_a_damaged_piece_is_dropped_with_one_warning_naming_it(tmp_path, caplog):
    r = run(tmp_path / "r")
    r.write("p/1.bin", lambda h: h.write(b"abc"))
    r.path("p/1.bin").write_bytes(b"abd" + r.path("p/1.bin").read_bytes()[3:])
    r.drop_damaged("p/1.bin", "piece one")
    assert not r.is_done("p/1.bin")
    assert [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"] == [
        f"{r.path('p/1.bin')}: piece one failed its checksum (a damaged disk or copy?): it is computed again"]


def test_discard_renames_the_folder_away_before_removing_it(tmp_path):
    r = run(tmp_path / "r")
    r.write("p/1.bin", lambda h: h.write(b"abc"))
    r.discard()
    assert list(tmp_path.iterdir()) == []
    r.discard()  # nothing left: a no-op


# ---- claims ----------------------------------------------------------------------------------
HOLDER = """
import sys, time
from epiformer_cli.runs import ResumableRun
r = ResumableRun(sys.argv[1], kind="test", format_version=1, settings={"a": 1}, what="test run")
claims = r.claims()
assert claims.take("p/1.bin")
print("held", flush=True)
if sys.argv[2] == "write":
    time.sleep(0.5)
    r.write("p/1.bin", lambda h: h.write(b"done"))
    claims.release("p/1.bin")
    time.sleep(0.5)
else:
    time.sleep(60)
"""


def _holder(root: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), mode], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_claim_is_exclusive_and_released(tmp_path):
    r = run(tmp_path / "r")
    a, b = r.claims(), r.claims()
    assert a.take("p/1.bin") and a.take("p/1.bin")  # taking one's own claim again is fine
    assert not b.take("p/1.bin") and b.held_elsewhere("p/1.bin")
    assert b.take("p/2.bin")
    a.release("p/1.bin")
    assert not b.held_elsewhere("p/1.bin") and b.take("p/1.bin")
    b.release_all()
    with a:
        assert a.take("p/2.bin")
    assert b.take("p/2.bin")  # leaving the block released it


def test_a_claim_dies_with_its_holder_and_wait_says_so(tmp_path):
    r = run(tmp_path / "r")
    proc = _holder(tmp_path / "r", "sleep")
    mine = r.claims()
    try:
        assert not mine.take("p/1.bin")
    finally:
        proc.kill()
        proc.wait()
    # the holder died without writing: wait returns the piece for this process to compute
    assert mine.wait(["p/1.bin"], r.is_done, poll=0.05) == ["p/1.bin"]
    assert mine.take("p/1.bin")


def test_wait_returns_when_the_holder_has_written_the_piece(tmp_path):
    r = run(tmp_path / "r")
    proc = _holder(tmp_path / "r", "write")
    started = time.monotonic()
    assert r.claims().wait(["p/1.bin"], r.is_done, poll=0.05) == []
    assert r.read_bytes("p/1.bin") == b"done" and time.monotonic() - started < 30
    proc.wait(timeout=30)


# ---- storage errors --------------------------------------------------------------------------
@pytest.mark.parametrize("code, what, fix", [
    (errno.ENOSPC, "no space left on the device (ENOSPC)", "free space there"),
    (errno.EDQUOT, "disk quota exceeded (EDQUOT)", "free space in your quota"),
    (errno.EFBIG, "file size limit exceeded (EFBIG)", "ulimit -f unlimited"),
    (errno.EROFS, "read-only file system (EROFS)", "choose an output folder you can write"),
])
def test_a_full_disk_in_an_atomic_write_is_one_line_naming_the_file(tmp_path, code, what, fix):
    out = tmp_path / "out.bin"
    with pytest.raises(StorageError) as caught:
        with atomic_output(out) as handle:
            handle.write(b"abc")
            raise OSError(code, "os text")
    text = str(caught.value)
    assert text.startswith(f"cannot write {out}: {what}: ") and fix in text
    assert text.endswith("then run the same command again to resume") and "\n" not in text
    assert list(tmp_path.iterdir()) == []  # no temporary left


def test_a_read_error_of_an_input_inside_a_write_keeps_its_own_message(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_output(tmp_path / "out.bin"):
            raise PermissionError(errno.EACCES, "Permission denied", "/data/input.bw")
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_reports_a_stray_storage_fault_in_one_line(capsys):
    from epiformer_cli.cli.common import handle_errors

    @handle_errors
    def command():
        raise OSError(errno.EDQUOT, "Disk quota exceeded", "/scratch/u/out.tsv")

    with pytest.raises(typer.Exit) as caught:
        command()
    assert caught.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["epiformer: error: cannot write /scratch/u/out.tsv: disk quota exceeded (EDQUOT): free "
                                "space in your quota (`quota -s`) or choose another output folder; then run the same "
                                "command again to resume"]


def test_storage_error_without_resume():
    exc = storage_error(OSError(errno.ENOSPC, "x"), "/o/p.bw", resume=False)
    assert str(exc) == ("cannot write /o/p.bw: no space left on the device (ENOSPC): free space there or choose "
                        "another output folder")


# ---- free space ------------------------------------------------------------------------------
def test_free_space_is_checked_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(faults, "free_bytes", lambda folder: 1000)
    monkeypatch.setattr(faults, "file_size_limit", lambda: None)
    require_free_space(tmp_path, 1000, "the store")  # exactly fits
    with pytest.raises(StorageError) as caught:
        require_free_space(tmp_path / "not" / "yet", 5000, "the store X")
    assert str(caught.value) == (f"the store X needs 4.9 KB (5,000 bytes) in {tmp_path}, which has 1000 bytes free: "
                                 "free space there or choose another output folder")


def test_the_file_size_limit_is_checked_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(faults, "file_size_limit", lambda: 4096)
    require_free_space(tmp_path, 10, "the store", largest_file=4096)
    with pytest.raises(StorageError, match=r"writes a file of 4.0 KB \(4,097 bytes\), over this shell's file-size "
                                           r"limit of 4,096 bytes: raise it \(`ulimit -f unlimited`\)"):
        require_free_space(tmp_path, 10, "the store", largest_file=4097)


def test_file_size_limit_reads_ulimit_f():
    code = ("import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (123456, 123456)); "
            "from epiformer_cli.io.faults import file_size_limit; print(file_size_limit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env=unmeasured(dict(os.environ))).stdout
    assert out.strip() == "123456"


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 << 20, 3 << 40)] == [
        "0 bytes", "1023 bytes", "1.0 KB", "1.5 KB", "5.0 MB", "3.0 TB"]
