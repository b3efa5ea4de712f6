"""The threads a command computes with (epiformer_cli/threads.py): the CPUs this process may use
(affinity, cgroup v1/v2 CPU quota read from fake folders), --threads > EPIFORMER_THREADS > usable
CPUs, bad values refused in one line (exit 2), --threads honoured by a real command, and the OpenMP
wait policy set before torch loads in a child process, unless the user chose one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import UsageError
from epiformer_cli.threads import (
    THREADS_ENV, UsableCpus, busy_cpus, cgroup_quota, set_wait_policy, thread_count, usable_cpus, use_threads, wait_policy,
)
from tests.helpers import (
    assert_imports_none_of, clear_launcher_environment, epiformer_command, random_model, unmeasured,
)

runner = CliRunner()
COMMANDS = dict(typer.main.get_command(app).commands)
#: what a user may set to choose how OpenMP threads wait; children of these tests start without them
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    clear_launcher_environment(monkeypatch)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def fake_root(tmp_path: Path, proc_cgroup: str, files: dict) -> Path:
    """A folder standing for ``/``: proc/self/cgroup and the given files under sys/fs/cgroup."""
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(proc_cgroup)
    (root / "sys/fs/cgroup").mkdir(parents=True)
    for name, text in files.items():
        path = root / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


# ---- the CPUs this process may use -----------------------------------------------------------------
def test_cgroup_v2_quota_rounds_up_and_wins_over_a_larger_affinity(tmp_path):
    root = fake_root(tmp_path, "0::/user.slice/job.scope\n", {
        "cpu.max": "max 100000",
        "user.slice/cpu.max": "max 100000",
        "user.slice/job.scope/cpu.max": "150000 100000",
    })
    cpus = usable_cpus(root, affinity=64)
    assert cpus == UsableCpus(2, 64, 1.5, "cgroup quota", str(root / "sys/fs/cgroup/user.slice/job.scope"))
    assert cpus.describe() == "2 (cgroup quota 1.5 CPUs; affinity 64)"


def test_cgroup_v2_takes_the_smallest_quota_on_the_way_up(tmp_path):
    root = fake_root(tmp_path, "0::/a/b\n", {
        "a/b/cpu.max": "400000 100000",   # 4 CPUs for the job...
        "a/cpu.max": "300000 200000",     # ...inside a parent limited to 1.5
    })
    assert cgroup_quota(root) == (1.5, root / "sys/fs/cgroup/a")
    assert usable_cpus(root, affinity=8).cpus == 2


@pytest.mark.parametrize("text, cpus", [("100000 100000", 1), ("250000 100000", 3), ("50000 100000", 1),
                                        ("200000 100000", 2), ("max 100000", 8), ("max", 8)])
def test_cgroup_v2_cpu_max_values(tmp_path, text, cpus):
    root = fake_root(tmp_path, "0::/\n", {"cpu.max": text})
    assert usable_cpus(root, affinity=8).cpus == cpus


def test_the_affinity_wins_when_smaller_than_the_quota(tmp_path):
    root = fake_root(tmp_path, "0::/job\n", {"job/cpu.max": "400000 100000"})
    assert usable_cpus(root, affinity=2) == UsableCpus(2, 2, 4.0, "affinity", str(root / "sys/fs/cgroup/job"))
    assert usable_cpus(root, affinity=2).describe() == "2 (affinity; cgroup quota 4 CPUs)"


def test_cgroup_v1_quota(tmp_path):
    root = fake_root(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1",
        "cpu,cpuacct/cpu.cfs_period_us": "100000",
    })
    assert usable_cpus(root, affinity=16) == UsableCpus(3, 16, 2.5, "cgroup quota",
                                                        str(root / "sys/fs/cgroup/cpu,cpuacct/docker/abc"))


def test_cgroup_v1_inside_a_container_reads_its_own_mount(tmp_path):
    """/proc/self/cgroup names the host's path; the container sees its own cgroup at the mount."""
    root = fake_root(tmp_path, "3:cpu:/kubepods/pod1/c1\n", {"cpu/cpu.cfs_quota_us": "100000",
                                                               "cpu/cpu.cfs_period_us": "100000"})
    assert usable_cpus(root, affinity=32).cpus == 1


def test_no_quota_leaves_the_affinity(tmp_path):
    root = fake_root(tmp_path, "4:cpu,cpuacct:/\n0::/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1",
                                                           "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert usable_cpus(root, affinity=6) == UsableCpus(6, 6, None, "affinity", None)
    assert usable_cpus(tmp_path / "nothing-here", affinity=3) == UsableCpus(3, 3, None, "affinity", None)


def test_this_process_has_at_least_one_usable_cpu():
    cpus = usable_cpus()
    assert 1 <= cpus.cpus <= cpus.affinity == len(os.sched_getaffinity(0))


# ---- --threads > EPIFORMER_THREADS > usable CPUs -----------------------------------------------------
FOUR = UsableCpus(4, 4, None, "affinity")


def test_precedence():
    assert thread_count(3, {THREADS_ENV: "5"}, cpus=FOUR) == 3
    assert thread_count(None, {THREADS_ENV: "5"}, cpus=FOUR) == 5
    assert thread_count(None, {THREADS_ENV: " "}, cpus=FOUR) == 4
    assert thread_count(None, {}, cpus=FOUR) == 4


def test_torchrun_processes_share_the_node():
    assert thread_count(None, {"LOCAL_WORLD_SIZE": "2"}, cpus=FOUR) == 2
    assert thread_count(None, {"LOCAL_WORLD_SIZE": "8"}, cpus=FOUR) == 1
    assert thread_count(3, {"LOCAL_WORLD_SIZE": "8"}, cpus=FOUR) == 3  # asked for: as given


@pytest.mark.parametrize("requested, environ, message", [
    (0, {}, "--threads 0: too few threads (give a whole number of threads, at least 1)"),
    (-2, {}, "--threads -2: too few threads (give a whole number of threads, at least 1)"),
    ("many", {}, "--threads many: not a whole number (give a whole number of threads, at least 1)"),
    (None, {THREADS_ENV: "0"}, "EPIFORMER_THREADS=0: too few threads (give a whole number of threads, at least 1, "
                                "or unset it)"),
    (None, {THREADS_ENV: "1.5"}, "EPIFORMER_THREADS=1.5: not a whole number (give a whole number of threads, at "
                                  "least 1, or unset it)"),
])
def test_bad_values_name_where_they_came_from(requested, environ, message):
    with pytest.raises(UsageError) as caught:
        thread_count(requested, environ, cpus=FOUR)
    assert str(caught.value) == message


THREAD_COMMANDS = sorted(name for name, command in COMMANDS.items()
                         if any("--threads" in getattr(p, "opts", ()) for p in command.params))


def test_the_commands_that_compute_take_threads():
    assert THREAD_COMMANDS == sorted(["demo", "evaluate", "explain", "info", "predict", "pseudobulk",
                                      "score-variants", "train"])


def _placeholders(name: str, tmp_path: Path) -> list:
    """Values for a command's required options and arguments (never read: --threads is checked first)."""
    given = [] if name != "info" else [str(tmp_path / "model.pt")]
    for param in COMMANDS[name].params:
        if param.required:
            value = str(tmp_path / f"{param.name}.x")
            given += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return given


@pytest.mark.parametrize("name", THREAD_COMMANDS)
@pytest.mark.parametrize("args, env, says", [
    (["--threads", "0"], {}, "epiformer: error: --threads 0: too few threads (give a whole number of threads, at "
                             "least 1) (see epiformer {name} -h)"),
    ([], {THREADS_ENV: "two"}, "epiformer: error: EPIFORMER_THREADS=two: not a whole number (give a whole number of "
                               "threads, at least 1, or unset it) (see epiformer {name} -h)"),
    (["--threads", "two"], {}, "epiformer: error: invalid value for --threads: 'two' is not a valid integer "
                               "(see epiformer {name} -h)"),
])
def test_a_bad_thread_count_is_one_usage_line_before_any_work(tmp_path, monkeypatch, name, args, env, says):
    monkeypatch.chdir(tmp_path)  # demo's default --out: nothing may be written there either
    result = runner.invoke(app, [name, *_placeholders(name, tmp_path), *args], env=env)
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert result.stderr.splitlines() == [says.format(name=name)]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_use_threads_is_idempotent():
    import torch

    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
        assert use_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_are_not_part_of_a_runs_identity(tmp_path):
    """The same predict with another --threads is the same run: it finds its finished store and
    needs no --force (the threads change the speed, not the values)."""
    import torch

    from tests.helpers import predict_inputs, read_bw

    inputs = predict_inputs(tmp_path)
    args = ["predict", "--fasta", str(inputs["fasta"]), "--cons", str(inputs["cons"]), "--model", str(inputs["model"]),
            "--out", str(tmp_path / "p.bw"), "--device", "cpu", "--chroms", "chr2", "--no-rc-average"]
    before = torch.get_num_threads()
    try:
        first = runner.invoke(app, [*args, "--threads", "1"])
        assert first.exit_code == 0, first.stderr
        assert torch.get_num_threads() == 1
        values = read_bw(tmp_path / "p.ASCT.bw")["chr2"][2]
        again = runner.invoke(app, ["-v", *args, "--threads", "2"])
        assert again.exit_code == 0, again.stderr
        assert torch.get_num_threads() == 2
        assert "epiformer: CPU threads: 2 (usable CPUs: " in again.stderr
    finally:
        torch.set_num_threads(before)
    assert read_bw(tmp_path / "p.ASCT.bw")["chr2"][2].tolist() == values.tolist()


# ---- in a real process: --threads honoured, the wait policy set before torch loads --------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from epiformer_cli.model.modelfile import save_model

    model = random_model(seed=1)
    return save_model(tmp_path_factory.mktemp("threads") / "model.pt", model, model.config, ["a", "b"])


def _child_env(**extra) -> dict:
    env = {k: v for k, v in unmeasured(dict(os.environ)).items()
           if k not in WAIT_VARIABLES and not k.startswith(("EPIFORMER_", "OMP_"))}
    env.update(extra)
    return env


def _info(command: list, model: Path, env: dict, *args: str):
    done = subprocess.run([*command, "info", str(model), "--json", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=model.parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["machine"], done.stderr


def test_threads_and_the_wait_policy_in_a_child_process(model_file):
    """python -m epiformer_cli with another process busy on one of its CPUs: --threads 1 is what torch
    computes with, and OMP_WAIT_POLICY=PASSIVE was in the environment when the OpenMP runtime loaded
    (libgomp shows its spin count: 0)."""
    cpu = min(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        time.sleep(0.5)
        machine, stderr = _info([sys.executable, "-m", "epiformer_cli"], model_file,
                                _child_env(OMP_DISPLAY_ENV="VERBOSE"), "--threads", "1")
    finally:
        spinner.kill()
        spinner.wait()
    assert machine["threads"] == 1
    assert machine["wait_policy"] == "OMP_WAIT_POLICY=PASSIVE"
    assert machine["usable_cpus"] == usable_cpus().cpus
    if machine["openmp"] == "libgomp":
        assert re.search(r"GOMP_SPINCOUNT = '0'", stderr), stderr


def test_a_users_wait_policy_and_env_threads_are_kept(model_file):
    """The console script: EPIFORMER_THREADS=1 is honoured, and a wait policy the user chose stays
    (libgomp's spin count is then its own, not 0)."""
    machine, stderr = _info(epiformer_command(), model_file,
                            _child_env(GOMP_SPINCOUNT="12345", EPIFORMER_THREADS="1", OMP_DISPLAY_ENV="VERBOSE"))
    assert machine["threads"] == 1
    assert machine["wait_policy"] == "GOMP_SPINCOUNT=12345"
    if machine["openmp"] == "libgomp":
        assert re.search(r"GOMP_SPINCOUNT = '12345'", stderr), stderr


def test_set_wait_policy_keeps_a_users_choice_and_the_spin_of_idle_cpus():
    assert set_wait_policy(env := {}, busy=lambda: 1) == "OMP_WAIT_POLICY=PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert set_wait_policy(env := {}, busy=lambda: 0) is None and env == {}  # idle CPUs: the runtime's spin
    assert set_wait_policy(env := {}, busy=lambda: None) == "OMP_WAIT_POLICY=PASSIVE"  # cannot tell: the safe one
    assert set_wait_policy(env := {"EPIFORMER_THREADS": "1"}, busy=lambda: 1) is None  # one thread waits for none
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000"), ("KMP_BLOCKTIME", "0")):
        env = {name: value}
        assert set_wait_policy(env, busy=lambda: 1) is None and env == {name: value}
        assert wait_policy(env) == f"{name}={value}"
    assert wait_policy({}) == "the runtime's default (spinning)"


def test_the_entry_points_do_not_import_torch_before_the_policy():
    """The policy is set in main() and __main__, which must not have loaded torch by then."""
    assert_imports_none_of(["epiformer_cli.__main__", "epiformer_cli.cli.app", "epiformer_cli.threads"], ["torch"])


def test_busy_cpus_counts_the_cpus_others_keep_busy(tmp_path):
    """Two looks at /proc/stat around a sleep: cpu0 95% busy, cpu1 idle, cpu2 busy but not ours."""
    stat = tmp_path / "stat"

    def write(ticks):
        lines = ["cpu  1 2 3 4 5 6 7 8 9 10"]
        for cpu, (user, idle) in enumerate(ticks):
            lines.append(f"cpu{cpu} {user} 0 0 {idle} 0 0 0 0 0 0")
        stat.write_text("\n".join(lines) + "\nintr 1 2 3\n")

    write([(100, 100), (100, 100), (100, 100)])
    assert busy_cpus([0, 1], stat=stat, sleep=lambda s: write([(195, 105), (101, 199), (200, 100)])) == 1
    write([(100, 100), (100, 100), (100, 100)])
    assert busy_cpus([0, 1, 2], stat=stat, sleep=lambda s: write([(195, 105), (101, 199), (200, 100)])) == 2
    assert busy_cpus([0], stat=tmp_path / "missing") is None
