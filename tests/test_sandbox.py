"""The tool in a sandbox: no network, no writes outside its output folder and the temp dir.

:class:`Sandbox` runs a command as a subprocess with

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
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import epiformer_cli

PACKAGE_DIR = Path(epiformer_cli.__file__).resolve().parent
REPO_DIR = Path(__file__).resolve().parent.parent

#: Names never compared in the repository snapshot: written by the test harness and by other
#: processes in a shared checkout (git, pytest, hypothesis, coverage of this very run), never by
#: the tool. Bytecode is not written at all in the sandbox (PYTHONDONTWRITEBYTECODE).
HARNESS_NAMES = (".git", ".pytest_cache", ".hypothesis", "__pycache__")
HARNESS_PREFIXES = (".coverage",)

#: Environment variables that move caches or configuration away from HOME: removed, so a cache the
#: tool (or matplotlib, torch, ...) writes lands under the watched HOME and is caught.
CACHE_VARIABLES = ("MPLCONFIGDIR", "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "HF_HOME",
                   "PYTHONPYCACHEPREFIX", "PYTHONUSERBASE", "PYTHONSTARTUP", "CUDA_CACHE_PATH")

# AF_UNIX is allowed: it is local inter-process communication, not network (multiprocessing and
# torch DataLoader workers pass file descriptors over AF_UNIX sockets). Allowed calls are recorded
# too (``"allowed": true``, once per process and address). Everything else -- AF_INET/AF_INET6 even
# to localhost, name resolution -- raises and is recorded.
#
# The guard also records, through an audit hook (PEP 578), every Python-level write: open() or
# os.open() for writing, mkdir, rename/replace, remove, rmtree, symlink. That sees what a snapshot
# cannot (a temp file made and removed again, anywhere on the machine) and is not fooled by other
# processes; the snapshots in turn see writes made from C (htslib, libBigWig) with no Python call.
SITECUSTOMIZE = r'''
"""Test guard (tests/test_sandbox.py): block and record network access; record file writes."""
import json as _json
import os as _os
import socket as _socket
import sys as _sys

_NET_LOG = _os.environ.get("EPIFORMER_TEST_NET_LOG")
_WRITE_LOG = _os.environ.get("EPIFORMER_TEST_WRITE_LOG")
# opened once, before the audit hook exists; os.write is not audited, so logging cannot recurse
_net_fd = _os.open(_NET_LOG, _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644) if _NET_LOG else None
_write_fd = _os.open(_WRITE_LOG, _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND, 0o644) if _WRITE_LOG else None
_seen = set()


def _line(fd, **fields):
    if fd is not None:
        _os.write(fd, (_json.dumps(dict(pid=_os.getpid(), **fields)) + "\n").encode())


def _record(call, target, allowed=False):
    if allowed:
        key = (_os.getpid(), call, repr(target))
        if key in _seen:
            return
        _seen.add(key)
    _line(_net_fd, call=call, target=repr(target), allowed=allowed)


class NetworkBlockedError(ConnectionRefusedError):
    """Raised instead of any network access in the test sandbox."""


def _blocked(call, target):
    _record(call, target)
    raise NetworkBlockedError(f"network access blocked by the test sandbox: {call}({target!r})")


def _is_unix(sock):
    return getattr(_socket, "AF_UNIX", None) is not None and sock.family == _socket.AF_UNIX


_connect, _connect_ex, _sendto = _socket.socket.connect, _socket.socket.connect_ex, _socket.socket.sendto


def connect(self, address):
    if _is_unix(self):
        _record("connect", address, allowed=True)
        return _connect(self, address)
    _blocked("connect", address)


def connect_ex(self, address):
    if _is_unix(self):
        _record("connect_ex", address, allowed=True)
        return _connect_ex(self, address)
    _blocked("connect_ex", address)


def sendto(self, *args):
    if _is_unix(self):
        return _sendto(self, *args)
    _blocked("sendto", args[-1])


def _module_blocker(name):
    def blocked(*args, **kwargs):
        _blocked(name, args[:2])
    blocked.__name__ = name
    return blocked


_socket.socket.connect = connect
_socket.socket.connect_ex = connect_ex
_socket.socket.sendto = sendto
for _name in ("getaddrinfo", "create_connection", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
    setattr(_socket, _name, _module_blocker(_name))
_record("guard-installed", _os.getpid(), allowed=True)

_WRITE_FLAGS = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_APPEND | _os.O_TRUNC
#: audit events that write: (argument holding a path written, argument holding its dir_fd or None)
_PATH_EVENTS = {"os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)), "os.remove": ((0, 1),),
                "os.rmdir": ((0, 1),), "shutil.rmtree": ((0, 1),), "os.symlink": ((1, 2),),
                "os.link": ((1, 3),), "os.truncate": ((0, None),), "shutil.copyfile": ((1, None),),
                "shutil.move": ((0, None), (1, None))}


def _path(value, dir_fd=None):
    if isinstance(value, int):
        return None  # a file descriptor: its opening was recorded
    try:
        path = _os.fsdecode(value)
        # relative to an open folder (rmtree); no dir_fd is None or AT_FDCWD (-100)
        if isinstance(dir_fd, int) and dir_fd >= 0 and not _os.path.isabs(path):
            path = _os.path.join(_os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        return _os.path.abspath(path)
    except (TypeError, ValueError, OSError):
        return None


def _audit(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
        if not writes:
            return
        paths = [_path(path)]
    elif event in _PATH_EVENTS:
        paths = [_path(args[i], args[d] if d is not None and d < len(args) else None)
                 for i, d in _PATH_EVENTS[event] if i < len(args)]
    else:
        return
    for p in paths:
        if p is not None:
            _line(_write_fd, event=event, path=p)


if _write_fd is not None:
    _sys.addaudithook(_audit)
'''

Snapshot = Dict[str, Tuple[str, int, int]]


def _measuring_coverage() -> bool:
    coverage = sys.modules.get("coverage")
    return coverage is not None and coverage.Coverage.current() is not None


def snapshot(root: Path, skip_names: Sequence[str] = (), skip_prefixes: Sequence[str] = (),
             skip_paths: Sequence[Path] = (), root_mtime: bool = True) -> Snapshot:
    """Every entry under ``root``: relative path -> (kind, size, mtime_ns); symlinks not followed.

    A folder's mtime changes when an entry is created or deleted in it, so a file made and removed
    again between two snapshots still shows. ``root_mtime=False`` leaves out the root's own mtime
    (for a root the command legitimately adds its output folder to).
    """
    root = Path(root)
    skipped = {Path(p).resolve() for p in skip_paths}
    out: Snapshot = {}
    st = root.lstat()
    out["."] = ("dir", 0, st.st_mtime_ns if root_mtime else 0)
    for folder, dirs, files in os.walk(root):
        keep = []
        for name in dirs:
            path = Path(folder, name)
            if name in skip_names or name.startswith(tuple(skip_prefixes)) or path.resolve() in skipped:
                continue
            keep.append(name)
        dirs[:] = keep
        for name in keep + files:
            if name in skip_names or name.startswith(tuple(skip_prefixes)):
                continue
            path = Path(folder, name)
            try:
                st = path.lstat()
            except FileNotFoundError:  # vanished while we looked: will show as a difference
                continue
            kind = "dir" if path.is_dir() and not path.is_symlink() else "link" if path.is_symlink() else "file"
            out[str(path.relative_to(root))] = (kind, 0 if kind == "dir" else st.st_size, st.st_mtime_ns)
    return out


def differences(before: Snapshot, after: Snapshot) -> List[str]:
    """``created X``, ``deleted X``, ``modified X`` lines, sorted."""
    lines = [f"created {p}" for p in after.keys() - before.keys()]
    lines += [f"deleted {p}" for p in before.keys() - after.keys()]
    lines += [f"modified {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(lines)


class Sandbox:
    """A fresh HOME, TMPDIR and working directory under ``base``, and a network guard.

    Args:
        base: an empty folder (``tmp_path``).
        output: the folder the command may write: by default ``base/out``, beside the working
            directory, which must then stay untouched down to its own mtime; a relative name is a
            folder inside the working directory (e.g. a command's default output folder), and then
            only the working directory's other entries are compared.
    """

    def __init__(self, base: Path, output: Optional[str] = None) -> None:
        self.base = Path(base)
        self.home = self.base / "home"
        self.tmp = self.base / "tmp"
        self.cwd = self.base / "cwd"
        self.guard = self.base / "guard"
        for folder in (self.home, self.tmp, self.cwd, self.guard):
            folder.mkdir(parents=True)
        (self.guard / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.net_log = self.base / "network.jsonl"
        self.write_log = self.base / "writes.jsonl"
        self.output = self.base / "out" if output is None else self.cwd / output
        self._output_in_cwd = output is not None
        self._before: Dict[str, Snapshot] = {}

    def env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XDG_", "EPIFORMER_")) and k not in CACHE_VARIABLES}
        # no bytecode: a stale .pyc rewritten in the checkout is the interpreter's doing, not the tool's
        env.update(HOME=str(self.home), TMPDIR=str(self.tmp), TMP=str(self.tmp), TEMP=str(self.tmp),
                   PYTHONDONTWRITEBYTECODE="1", EPIFORMER_TEST_NET_LOG=str(self.net_log),
                   EPIFORMER_TEST_WRITE_LOG=str(self.write_log),
                   PYTHONPATH=os.pathsep.join([str(self.guard)] + ([os.environ["PYTHONPATH"]]
                                                                  if os.environ.get("PYTHONPATH") else [])))
        return env

    def _snapshots(self) -> Dict[str, Snapshot]:
        harness = dict(skip_names=HARNESS_NAMES, skip_prefixes=HARNESS_PREFIXES)
        snaps = {
            "HOME": snapshot(self.home),
            "working directory": snapshot(self.cwd, skip_paths=[self.output], root_mtime=not self._output_in_cwd),
            # coverage (CI runs --cov, and measures subprocesses) writes the subprocesses' data
            # files into the repository root: its own mtime then changes; new entries still show
            "repository": snapshot(REPO_DIR, root_mtime=not _measuring_coverage(), **harness),
        }
        if REPO_DIR not in PACKAGE_DIR.parents:  # a non-editable install: watch the package too
            snaps["package"] = snapshot(PACKAGE_DIR, **harness)
        return snaps

    def run(self, args: Sequence[str], timeout: float = 600, env: Optional[Dict[str, str]] = None,
            **kwargs) -> subprocess.CompletedProcess:
        """Run ``args`` in the sandbox (snapshots taken just before); ``env`` replaces :meth:`env`."""
        self._before = self._snapshots()
        return subprocess.run(list(args), cwd=self.cwd, env=self.env() if env is None else env,
                              capture_output=True, text=True, timeout=timeout, **kwargs)

    def changes_outside(self) -> List[str]:
        """What changed since :meth:`run` outside the output folder and the temp dir.

        A repository change no sandboxed process was seen writing (see :meth:`writes_outside`) is
        marked: in a checkout shared with people editing it, that is most likely one of them (a
        write from C code is the other possibility, so it still counts).
        """
        after = self._snapshots()
        written = {Path(e["path"]) for e in self._write_entries()}
        out = []
        for label, before in self._before.items():
            for line in differences(before, after[label]):
                if label == "repository":
                    path = (REPO_DIR / line.split(" ", 1)[1]).resolve()
                    if not any(w == path or path in w.parents for w in written):
                        line += " (no write seen from the sandboxed command: someone editing the checkout?)"
                out.append(f"{label}: {line}")
        return out

    def writes_outside(self) -> List[str]:
        """Python-level writes (audit hook) of any sandboxed process outside the output folder and
        the temp dir, anywhere on the machine; ``/dev`` and ``/proc`` (``/dev/null``, shared
        memory) are left out."""
        out = []
        for entry in self._write_entries():
            path = Path(entry["path"])
            if path.parts[1:2] in (("dev",), ("proc",)):
                continue
            if path.name.startswith(HARNESS_PREFIXES) and REPO_DIR in path.parents:
                continue  # coverage data of the measured subprocess itself (pytest --cov)
            if any(path == root or root in path.parents for root in (self.output, self.tmp)):
                continue
            out.append(f"{entry['event']} {path}")
        return sorted(set(out))

    def _write_entries(self) -> List[dict]:
        if not self.write_log.exists():
            return []
        return [json.loads(line) for line in self.write_log.read_text().splitlines()]

    def network_attempts(self, allowed: Optional[bool] = False) -> List[dict]:
        """Recorded socket calls: blocked ones (default), allowed ones (True), or all (None)."""
        if not self.net_log.exists():
            return []
        calls = [json.loads(line) for line in self.net_log.read_text().splitlines()]
        calls = [c for c in calls if c["call"] != "guard-installed"]
        return calls if allowed is None else [c for c in calls if c["allowed"] is allowed]

    def guarded_pids(self) -> List[int]:
        """Processes in which the guard was installed."""
        if not self.net_log.exists():
            return []
        return [json.loads(line)["pid"] for line in self.net_log.read_text().splitlines()
                if json.loads(line)["call"] == "guard-installed"]


def epiformer_command() -> List[str]:
    """The installed ``epiformer`` console script of this interpreter (else ``python -m``)."""
    script = Path(sys.executable).with_name("epiformer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "epiformer_cli"]


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
