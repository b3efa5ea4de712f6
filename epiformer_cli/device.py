"""Compute device and numeric precision, chosen in one place for every command.

``--device auto`` picks the best accelerator present (CUDA, then Apple MPS) and falls back to the
CPU with a notice, never a crash. ``--precision`` selects autocast: bf16 works on CUDA and on CPUs
(where recent Intel CPUs run it on AMX tiles); fp16 is meant for GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING, Iterator, Optional

from epiformer_cli.errors import DeviceError, UsageError
from epiformer_cli.options import PRECISIONS, check_precision  # noqa: F401 - re-exported

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str = "auto") -> "torch.device":
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a :class:`torch.device` that exists on this machine.

    ``auto`` chooses CUDA device 0, else MPS, else the CPU, and logs which. An explicit device
    that is not present raises :class:`DeviceError` with what to use instead.
    """
    import torch

    spec = (spec or "auto").strip().lower()
    if not _DEVICE_PATTERN.match(spec):
        raise UsageError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    if spec == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", 0)
            log.info("using %s (%s)", device, torch.cuda.get_device_name(0))
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
            log.info("using Apple MPS")
        else:
            device = torch.device("cpu")
            log.info("no GPU found: using the CPU (%d threads)", torch.get_num_threads())
        return device
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {spec} was asked for but no CUDA GPU is visible here: "
                "use --device cpu (or auto, which falls back to the CPU)"
            )
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    if spec == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise DeviceError("--device mps was asked for but MPS is not available: use --device cpu")
        return torch.device("mps")
    return torch.device("cpu")


def precision_dtype(precision: str) -> "torch.dtype":
    """The torch dtype that a ``--precision`` value computes in."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        check_precision(precision)
    ]


def check_device_precision(device: "torch.device", precision: str) -> str:
    """The one rule for precision on a device: fp16 needs a CUDA GPU (on a CPU it is slow and
    poorly supported; training in fp16 needs CUDA's gradient scaler). Returns the canonical name.

    Raises:
        UsageError: an unknown precision; DeviceError: fp16 anywhere but on CUDA.
    """
    precision = check_precision(precision)
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(f"--precision fp16 is meant for CUDA GPUs, not {device.type}: use bf16 (or fp32) here")
    if precision == "bf16" and device.type == "cpu" and not cpu_runs_bf16():
        _warn_once("bf16", "this CPU lacks what fast bf16 needs (AVX-512 or AMX): --precision bf16 runs "
                           "emulated here, tens of times slower than fp32; use --precision fp32")
    return precision


_WARNED: set = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning("%s", message)


def cpu_runs_bf16() -> bool:
    """Whether oneDNN's bf16 kernels run on this CPU (they need AVX-512 BW/VL/DQ, AVX512-BF16 or AMX).
    Without them (e.g. AVX2-only CPUs) torch emulates bf16 matrix multiplies, one thread at a time:
    measured ~1 GFLOP/s against ~150 in fp32 on a 2-core Zen 3 (benchmarks/README.md)."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None and torch.backends.mkldnn.is_available() else True
    except RuntimeError:  # an old build without the check: assume it is fine, as before
        return True


def compute_device(spec: str = "auto", precision: str = "fp32", local_rank: Optional[int] = None,
                   world_size: int = 1) -> "torch.device":
    """The device a command computes on, resolved and checked before any work (a bad ``--device``
    or ``--precision`` leaves nothing behind).

    Under torchrun (``world_size > 1`` with a ``local_rank``), every CUDA device (``auto``,
    ``cuda``, ``cuda:N``) means this rank's own GPU: ranks never share one (an explicit index is
    overridden, with a notice). ``precision`` is checked against the device
    (:func:`check_device_precision`).
    """
    import torch

    spec = (spec or "auto").strip().lower()
    if local_rank is not None and world_size > 1 and (spec == "auto" or spec.startswith("cuda")) \
            and torch.cuda.is_available():
        own = f"cuda:{local_rank % torch.cuda.device_count()}"
        if spec.startswith("cuda:") and spec != own:
            log.info("--device %s under torchrun: rank with local rank %d uses its own GPU, %s", spec, local_rank, own)
        spec = own
    device = resolve_device(spec)
    check_device_precision(device, precision)
    return device


@contextlib.contextmanager
def autocast(device: "torch.device", precision: str) -> Iterator[None]:
    """Autocast context for ``precision`` on ``device``; fp32 is a no-op.

    Raises :class:`DeviceError` for fp16 off CUDA (:func:`check_device_precision`).
    """
    import torch

    precision = check_device_precision(device, precision)
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=precision_dtype(precision)):
        yield
