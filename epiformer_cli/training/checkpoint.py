"""Training checkpoints (``last.pt``): written atomically, read back with ``weights_only=True``.

A checkpoint holds plain types and tensors only (weights, optimizer state, RNG states as uint8
tensors, counters, options), so loading it never runs pickled code and works on any device.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from epiformer_cli.errors import InputFileError
from epiformer_cli.io.files import atomic_path

CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` so that it is never half-written, even when a signal stops the
    process during the write (see ``io.files.atomic_path``)."""
    with atomic_path(path) as tmp:
        torch.save(obj, str(tmp))


def rng_state() -> Dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain types (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(plain):
    version, internal, gauss = plain
    return (version, tuple(internal), gauss)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a checkpoint onto the CPU with ``weights_only=True``; refuses other formats."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputFileError(f"{path} does not exist: there is no run to resume here") from None
    except Exception as exc:  # truncated or not a checkpoint
        raise InputFileError(f"{path} is not a readable training checkpoint ({exc}): start over with --force") from None
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != CHECKPOINT_FORMAT:
        raise InputFileError(f"{path}: not an epiformer training checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt
