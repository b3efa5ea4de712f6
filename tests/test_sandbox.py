"""The tool in a sandbox: no network, no writes outside its output folder and the temp dir.

:class:`~tests.helpers.Sandbox` (in tests/helpers.py, shared with the demo test) runs a command as a subprocess with

* every outgoing socket blocked and recorded, and every Python-level file write recorded (a
  ``sitecustomize.py`` on ``PYTHONPATH``, so every Python process the command starts is guarded);
* ``HOME`` a fresh empty folder, watched; ``XDG_*``, ``MPLCONFIGDIR``, ``TORCH_HOME`` and the like
  removed, so a cache or configuration file the tool or a library writes lands under that ``HOME``
  (where a user's would) and is caught -- the tool must cope without them being set;
* ``TMPDIR`` a fresh folder: writes there are allowed (temp files are what it is for);
* the working directory a fresh empty folder, watched.

Afterwards :meth:`Sandbox.writes_outside` lists recorded writes anywhere outside the output folder
and the temp dir, and :meth:`Sandbox.changes_outside` what was created, modified or deleted in
``HOME``, the working directory and the repository (the package folder, for an editable install).

The full pipeline runs in the sandbox once per suite, in ``tests/test_demo_pipeline.py`` (the demo
takes ~45 s: it is not run twice). This file checks the sandbox itself -- a guard that never fired
proves nothing unless it is shown to fire -- and the quick commands.
"""

from __future__ import annotations

import json
import os
import sys

from tests.helpers import Sandbox, epiformer_command


# ---- the sandbox itself ----------------------------------------------------------------------
def test_guard_blocks_and_records_every_kind_of_network_access(tmp_path):
    box = Sandbox(tmp_path)
    code = (
        "import socket, urllib.request\n"
        "def attempt(f):\n"
        "    try:\n"
        "        f()\n"
        "    except OSError as exc:\n"
        "        print(type(exc).__name__)\n"
        "attempt(lambda: socket.create_connection(('192.0.2.1', 80), timeout=1))\n"
        "attempt(lambda: socket.socket().connect(('127.0.0.1', 9)))\n"
        "attempt(lambda: socket.socket(socket.AF_INET6).connect_ex(('::1', 9)))\n"
        "attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 53)))\n"
        "attempt(lambda: socket.getaddrinfo('example.org', 443))\n"
        "attempt(lambda: urllib.request.urlopen('http://example.org', timeout=1))\n"
        # a local AF_UNIX pair is allowed and recorded as such
        "import multiprocessing.connection as mc, threading\n"
        "listener = mc.Listener(family='AF_UNIX')\n"
        "threading.Thread(target=lambda: listener.accept().send('hi'), daemon=True).start()\n"
        "print(mc.Client(listener.address, family='AF_UNIX').recv())\n"
    )
    proc = box.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["NetworkBlockedError"] * 5 + ["URLError", "hi"]
    blocked = [c["call"] for c in box.network_attempts()]
    assert blocked == ["create_connection", "connect", "connect_ex", "sendto", "getaddrinfo", "create_connection"]
    assert [c["call"] for c in box.network_attempts(allowed=True)] == ["connect"]
    assert box.guarded_pids() == [json.loads(box.net_log.read_text().splitlines()[0])["pid"]]


def test_child_processes_are_guarded_too(tmp_path):
    box = Sandbox(tmp_path)
    code = ("import subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'import socket; socket.getaddrinfo(\"example.org\", 80)'])\n")
    box.run([sys.executable, "-c", code], timeout=60)
    assert len(set(box.guarded_pids())) == 2
    assert [c["call"] for c in box.network_attempts()] == ["getaddrinfo"]


def test_writes_outside_the_output_are_caught_and_inside_are_not(tmp_path):
    box = Sandbox(tmp_path)
    code = ("import os, pathlib, sys, tempfile\n"
            "out = pathlib.Path(sys.argv[1]); out.mkdir(); (out / 'result.txt').write_text('ok')\n"
            "tempfile.NamedTemporaryFile(delete=False).write(b'x')\n"  # the temp dir is allowed
            "open('/dev/null', 'w').write('x')\n"
            "os.makedirs(os.path.expanduser('~/.cache/thing')); open(os.path.expanduser('~/.cache/thing/c'), 'w')\n"
            "open('made-and-removed', 'w').close(); os.remove('made-and-removed')\n")
    proc = box.run([sys.executable, "-c", code, str(box.output)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert box.changes_outside() == ["HOME: created .cache", "HOME: created .cache/thing",
                                     "HOME: created .cache/thing/c", "HOME: modified .",
                                     "working directory: modified ."]
    made = box.cwd / "made-and-removed"
    cache = box.home / ".cache"
    assert box.writes_outside() == sorted([f"os.mkdir {cache}", f"os.mkdir {cache / 'thing'}",
                                           f"open {cache / 'thing' / 'c'}", f"open {made}", f"os.remove {made}"])
    # an output folder inside the working directory: only the other entries count
    inside = Sandbox(tmp_path / "inside", output="results")
    code = ("import pathlib; pathlib.Path('results').mkdir(); pathlib.Path('results/r.txt').write_text('ok')\n"
            "pathlib.Path('stray.txt').write_text('no')\n")
    proc = inside.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert inside.changes_outside() == ["working directory: created stray.txt"]
    assert inside.writes_outside() == [f"open {inside.cwd / 'stray.txt'}"]


def test_writes_from_c_code_are_seen_by_the_snapshots(tmp_path):
    """htslib writes the .fai itself: no Python call to audit, but the snapshot sees the file."""
    box = Sandbox(tmp_path)
    (box.home / "g.fa").write_text(">c\nACGT\n")
    proc = box.run([sys.executable, "-c", "import os, pysam; pysam.faidx(os.path.expanduser('~/g.fa'))"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HOME: created g.fa.fai" in box.changes_outside()


def test_a_command_in_the_sandbox_sees_the_sandbox(tmp_path):
    box = Sandbox(tmp_path)
    code = ("import os, tempfile, pathlib\n"
            "print(os.path.expanduser('~')); print(tempfile.gettempdir()); print(pathlib.Path.cwd())\n"
            "print(os.environ.get('MPLCONFIGDIR'), os.environ.get('XDG_CACHE_HOME'))\n")
    proc = box.run([sys.executable, "-c", code], timeout=60)
    home, tmp, cwd, caches = proc.stdout.splitlines()
    assert (home, tmp, cwd) == (str(box.home), str(box.tmp), str(box.cwd))
    assert caches == "None None"


def test_epiformer_help_stays_inside(tmp_path):
    box = Sandbox(tmp_path)
    proc = box.run(epiformer_command() + ["--help"], timeout=120)
    assert proc.returncode == 0 and "demo" in proc.stdout, proc.stderr
    assert box.network_attempts() == [] and box.changes_outside() == [] and box.writes_outside() == []


PLOT = (
    "import sys; from pathlib import Path\n"
    "from epiformer_cli.training.plots import plot_learning_curve\n"
    "rows = [dict(split='valid', epoch=e, step=10 * e, train_loss=1 / e, loss=1.2 / e, pearson=0.2 * e)\n"
    "        for e in (1, 2, 3)]\n"
    "out = Path(sys.argv[1]); out.mkdir()\n"
    "assert plot_learning_curve(rows, out / 'learning_curve.png')\n"
)


def test_learning_curve_leaves_no_matplotlib_cache_in_home(tmp_path):
    """matplotlib writes its font cache to ~/.cache/matplotlib (and makes ~/.config/matplotlib)
    unless MPLCONFIGDIR is set: the tool gives it a temp folder, removed at exit."""
    box = Sandbox(tmp_path)
    proc = box.run([sys.executable, "-c", PLOT, str(box.output)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (box.output / "learning_curve.png").stat().st_size > 0
    assert box.changes_outside() == [] and box.writes_outside() == [] and box.network_attempts() == []
    assert os.listdir(box.tmp) == []  # the temp folder went at exit
    # a folder the user chose is used, not replaced
    chosen = Sandbox(tmp_path / "chosen")
    env = dict(chosen.env(), MPLCONFIGDIR=str(chosen.base / "mpl"))
    proc = chosen.run([sys.executable, "-c", PLOT, str(chosen.output)], timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert any((chosen.base / "mpl").glob("fontlist*.json")) and chosen.changes_outside() == []
