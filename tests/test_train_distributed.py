"""Multi-process training under torchrun (gloo on the CPU): the ranks stay in sync, and 2 processes
with batch b train exactly what 1 process with batch b and 2-step accumulation trains.

That equivalence holds because the sampler gives rank r the micro-batch a single process would see
as accumulation step r, and dropout masks depend on (seed, step, that chunk) only.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from epiformer_cli.training.checkpoint import load_checkpoint
from tests.helpers import make_tiny_store

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")


def _run(args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    env.pop("WORLD_SIZE", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_match_one_process_with_accumulation(tmp_path):
    store = make_tiny_store(tmp_path / "data")
    config = tmp_path / "data" / "model.json"
    common = ["train", "--data", str(store), "--config", str(config), "--batch-size", "2", "--workers", "0",
              "--device", "cpu", "--max-steps", "3", "--warmup-steps", "1", "--seed", "1"]
    ddp = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "epiformer_cli", "-v",
                *common, "--out", str(tmp_path / "ddp")])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "weights identical on all 2 processes" in ddp.stderr
    # one closing line (rank 0's), and one process of the node read the store's arrays
    assert ddp.stderr.count("best valid Pearson") == 1, ddp.stderr[-3000:]
    assert ddp.stderr.count("checked against the store's checksums") == 1, ddp.stderr[-3000:]
    single = _run(["-m", "epiformer_cli", *common, "--accumulate", "2", "--out", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-3000:]

    a = load_checkpoint(tmp_path / "ddp" / "last.pt")
    b = load_checkpoint(tmp_path / "one" / "last.pt")
    assert a["step"] == b["step"] == 3 and a["world_size"] == 2
    names = {n for n, _ in _parameter_names(a["config"])}
    assert names
    for name in names:  # parameters, not BatchNorm running statistics (averaged over ranks under DDP)
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=1e-4, atol=1e-5, msg=name)
    # only rank 0 writes: one metrics file, with one header and one row per validation
    lines = (tmp_path / "ddp" / "metrics.tsv").read_text().splitlines()
    assert lines[0].startswith("split\tepoch\tstep") and len(lines) == 1 + 2  # step-3 validation and the test row
    assert not list((tmp_path / "ddp").glob(".*tmp*"))


def test_only_rank_0_speaks_without_v(tmp_path):
    """Without -v, the other process says only warnings and errors: each line of the combined stderr
    is rank 0's, once, the closing line among them."""
    store = make_tiny_store(tmp_path / "data")
    ddp = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "epiformer_cli",
                "train", "--data", str(store), "--config", str(tmp_path / "data" / "model.json"), "--batch-size", "2",
                "--workers", "0", "--device", "cpu", "--max-steps", "1", "--warmup-steps", "1",
                "--out", str(tmp_path / "run")])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    lines = [line for line in ddp.stderr.splitlines() if line.startswith("epiformer:")]
    assert len(lines) == len(set(lines)) == 5, ddp.stderr[-3000:]  # plan, validation, sync, test, closing
    assert [line for line in lines if "best valid Pearson" in line] == [lines[-1]]
    assert lines[-1].startswith(f"epiformer: {tmp_path / 'run'}/model.pt: best valid Pearson ")


def _parameter_names(config):
    from epiformer_cli.model.config import ModelConfig
    from epiformer_cli.model.network import Epiformer

    return Epiformer(ModelConfig.from_dict(config)).named_parameters()


def test_a_damaged_store_stops_every_process_in_one_line(tmp_path):
    """LOCAL_RANK 0 verifies the store while the other process waits: both stop with its error (no
    process is left waiting), and no run folder is made."""
    import json
    import shutil

    store = make_tiny_store(tmp_path / "data")
    damaged = tmp_path / "damaged"
    shutil.copytree(store, damaged)
    name = next(iter(json.loads((damaged / "manifest.json").read_text())["checksums"]))
    data = bytearray((damaged / name).read_bytes())
    data[0] ^= 0xFF
    (damaged / name).write_bytes(bytes(data))
    ddp = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "epiformer_cli",
                "train", "--data", str(damaged), "--config", str(tmp_path / "data" / "model.json"),
                "--batch-size", "2", "--workers", "0", "--device", "cpu", "--max-steps", "1",
                "--out", str(tmp_path / "run")])
    assert ddp.returncode != 0
    errors = [line for line in ddp.stderr.splitlines() if line.startswith("epiformer: error:")]
    assert len(errors) == 2 and all(f"{damaged / name} fails its checksum" in line for line in errors), ddp.stderr[-3000:]
    assert not (tmp_path / "run").exists()
