import pytest
import torch

from epiformer_cli.device import autocast, check_precision, precision_dtype, resolve_device
from epiformer_cli.errors import DeviceError, UsageError


def test_auto_falls_back_to_cpu_with_a_notice(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with caplog.at_level("INFO", logger="epiformer_cli"):
        assert resolve_device("auto") == torch.device("cpu")
    assert any("CPU" in r.message for r in caplog.records)


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("cuda:1")


def test_bad_device_and_precision_names():
    with pytest.raises(UsageError):
        resolve_device("tpu")
    with pytest.raises(UsageError):
        check_precision("fp8")
    assert check_precision("bfloat16") == "bf16"
    assert precision_dtype("bf16") is torch.bfloat16


def test_bf16_autocast_runs_on_cpu():
    a = torch.randn(8, 8)
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32
    with pytest.raises(DeviceError):
        with autocast(torch.device("cpu"), "fp16"):
            pass


def test_under_torchrun_every_cuda_device_is_the_ranks_own(monkeypatch):
    """Ranks never share a GPU: auto, cuda and an explicit cuda:N all mean the rank's own device."""
    from epiformer_cli.device import compute_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "fake")
    for spec in ("auto", "cuda", "cuda:0", "cuda:3"):
        assert compute_device(spec, "fp32", local_rank=2, world_size=4) == torch.device("cuda", 2)
    assert compute_device("cuda:3", "fp32") == torch.device("cuda", 3)  # no torchrun: as asked
    assert compute_device("cpu", "bf16", local_rank=2, world_size=4) == torch.device("cpu")
    with pytest.raises(DeviceError, match="fp16 is meant for CUDA GPUs"):
        compute_device("cpu", "fp16")


def test_bf16_on_a_cpu_without_bf16_support_warns_once(monkeypatch, caplog):
    import epiformer_cli.device as device

    monkeypatch.setattr(device, "_WARNED", set())
    monkeypatch.setattr(device, "cpu_runs_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        for _ in range(3):
            assert device.check_device_precision(torch.device("cpu"), "bf16") == "bf16"
        device.check_device_precision(torch.device("cpu"), "fp32")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "--precision fp32" in warnings[0]
    monkeypatch.setattr(device, "_WARNED", set())
    monkeypatch.setattr(device, "cpu_runs_bf16", lambda: True)
    caplog.clear()
    device.check_device_precision(torch.device("cpu"), "bf16")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
