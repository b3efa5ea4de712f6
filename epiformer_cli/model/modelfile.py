"""The Epiformer model file: one ``torch.save`` file of plain data, never code.

Contents (a dict of tensors, strings, numbers, lists and dicts only)::

    {"format_version": 1, "config": {...ModelConfig fields...}, "tracks": ["ASCT", ...],
     "normalization": {...}, "provenance": {...}, "state_dict": {name: tensor}}

It is read with ``torch.load(weights_only=True, map_location="cpu")``: the restricted unpickler
refuses anything but tensors and plain containers, so loading a file never runs code, and a file
saved from a GPU loads on a CPU-only machine. Files are written atomically (temporary file in the
same folder, fsync, rename), so a crash never leaves a half-written model under the real name.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import nn

from epiformer_cli.errors import ModelFileError, UsageError
from epiformer_cli.io.files import atomic_path, check_input_file
from epiformer_cli.model.config import ModelConfig
from epiformer_cli.model.families import build_network
from epiformer_cli.model.tower import NetworkBase

FORMAT_VERSION = 1
log = logging.getLogger(__name__)

_KEYS = ("format_version", "config", "tracks", "normalization", "provenance", "state_dict")


@dataclass
class LoadedModel:
    """A model file read back: the network in eval mode plus everything that travels with it.

    Attributes:
        model: the network of ``config``'s family (e.g. :class:`Epiformer`), eval mode, on the
            requested device.
        config: its :class:`ModelConfig`.
        tracks: track (cell type) names, in output order: ``model(x)[:, i]`` is ``tracks[i]``.
        normalization: how targets were scaled for training (free-form, JSON-like).
        provenance: where the model came from (free-form, JSON-like).
        format_version: the file's format version.
    """

    model: NetworkBase
    config: ModelConfig
    tracks: List[str]
    normalization: Dict[str, Any] = field(default_factory=dict)
    provenance: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def _check_tracks(tracks: Any, config: ModelConfig, where: str, error: type) -> List[str]:
    if not isinstance(tracks, (list, tuple)) or not all(isinstance(t, str) and t for t in tracks):
        raise error(f"{where}: tracks must be a list of non-empty names")
    if len(tracks) == 0:
        raise error(f"{where}: the model has no tracks: give at least one track name")
    if len(tracks) != config.n_tracks:
        raise error(f"{where}: {len(tracks)} track names for a model with n_tracks={config.n_tracks}: "
                    "give one name per output track")
    if len(set(tracks)) != len(tracks):
        raise error(f"{where}: track names must be unique")
    return list(tracks)


def save_model(
    path: Union[str, Path],
    model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]],
    config: ModelConfig,
    tracks: List[str],
    normalization: Dict[str, Any] | None = None,
    provenance: Dict[str, Any] | None = None,
) -> Path:
    """Write a model file atomically and return its path.

    Args:
        path: destination file (conventionally ``*.pt``); its folder must exist.
        model_or_state: a network of any family (e.g. :class:`Epiformer`) or its ``state_dict()``.
        config: the model's configuration.
        tracks: one name per output track, in output order.
        normalization, provenance: JSON-like dicts (str, int, float, bool, None, lists, dicts).

    Raises:
        UsageError: tracks do not match ``config.n_tracks``, or the weights do not fit ``config``.
    """
    path = Path(path)
    tracks = _check_tracks(tracks, config, f"cannot save {path}", UsageError)
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    if not (isinstance(model_or_state, NetworkBase) and model_or_state.config == config):
        # weights from elsewhere: build the model the config describes (plain CPU tensors; the
        # meta device would pull in torch's compiler stack and cost seconds) and compare shapes
        _check_state(state, build_network(config).state_dict(), f"cannot save {path}", UsageError)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "tracks": tracks,
        "normalization": dict(normalization or {}),
        "provenance": dict(provenance or {}),
        # detached CPU copies: the file is device-neutral and holds no autograd state
        "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
    }
    if not path.parent.is_dir():
        raise UsageError(f"cannot save {path}: folder {path.parent} does not exist")
    with atomic_path(path) as tmp:  # torch.save to a name: interruptible without breaking its writer
        torch.save(payload, str(tmp))
    return path


def _check_state(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], where: str, error: type) -> None:
    """Refuse weights whose names or shapes differ from ``expected`` (the state of the model the
    config builds)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (config needs {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and (not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(v.shape))
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch " + ", ".join(wrong[:3]))
        if missing:
            parts.append("missing " + ", ".join(missing[:3]))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:3]))
        raise error(f"{where}: the weights do not match the model config ({'; '.join(parts)}); "
                    "the file was edited or written by another program: re-export it from its checkpoint")


def _refusal(path: Path, why: str) -> str:
    return (f"refusing to load {path}: it is not a plain-data epiformer model file ({why}): give a model "
            "file written by `epiformer train` or `epiformer import-model`, or, only if you trust its source, re-export its weights with "
            "epiformer_cli.model.modelfile.save_model")


def _is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive: a zip whose record folder holds ``constants.pkl`` and ``code/``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Read a model file safely (no code runs) and return the eval-mode model and its metadata.

    Args:
        path: a file written by :func:`save_model`.
        device: where to put the model (tensors are first mapped to the CPU, so a file saved on
            a GPU loads anywhere).

    Raises:
        ModelFileError: the file is missing, truncated or corrupt, of another format version,
            carries code, or its config, tracks and weights disagree.
    """
    path = check_input_file(path, "model file", ModelFileError)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text says how to load the file unsafely: for -v only. Its first refused global
        # (a class of the user's, or a pickled module) tells the user what they saved.
        log.debug("torch.load(weights_only=True) refused %s: %s", path, exc)
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"an object of class {found.group(1)}" if found else "Python objects"
        raise ModelFileError(_refusal(path, f"it holds {what}, and loading it could run code")) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        log.debug("torch.load could not read %s: %s: %s", path, type(exc).__name__, exc)
        if _is_torchscript(path):
            raise ModelFileError(_refusal(path, "it is a TorchScript archive, which holds code")) from None
        raise ModelFileError(
            f"cannot read model file {path}: it is truncated or corrupt ({type(exc).__name__}); "
            "copy or download it again"
        ) from None
    if isinstance(payload, dict) and "state_dict" in payload and "param" in payload:
        raise ModelFileError(f"{path} is a published Epiformer checkpoint, not an epiformer model file: "
                             f"convert it once with: epiformer import-model {path} --out model.pt")
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ModelFileError(f"{path} is not an epiformer model file (no format_version): "
                             "give a file written by epiformer train or epiformer import-model")
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"model file {path} has format version {version!r}, this epiformer reads version "
            f"{FORMAT_VERSION}: use the epiformer release that wrote it, or re-export it"
        )
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise ModelFileError(f"model file {path} lacks {', '.join(missing)}: it is damaged; re-export it")
    where = f"model file {path}"
    config = ModelConfig.from_dict(payload["config"], error=ModelFileError, source=where)
    tracks = _check_tracks(payload["tracks"], config, where, ModelFileError)
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise ModelFileError(f"{where}: state_dict is not a dict of tensors; re-export it")
    model = build_network(config)
    _check_state(state, model.state_dict(), where, ModelFileError)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return LoadedModel(
        model=model,
        config=config,
        tracks=tracks,
        normalization=dict(payload["normalization"] or {}),
        provenance=dict(payload["provenance"] or {}),
        format_version=version,
    )
