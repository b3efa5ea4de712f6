"""The Epiformer model file: one ``torch.save`` file of plain data, never code.

Contents (a dict of tensors, strings, numbers, lists and dicts only)::

    {"format_version": 1, "config": {...ModelConfig fields...}, "tracks": ["ASCT", ...],
     "normalization": {...}, "provenance": {...}, "state_dict": {name: tensor},
     "weights_sha256": "64 hex digits"}

``weights_sha256`` (:func:`weights_digest`) is a SHA-256 over the state_dict, its tensors in sorted
name order; for each, the UTF-8 JSON line ``["name", "torch.float32", [shape...], nbytes]`` and a
newline, then its ``nbytes`` bytes (contiguous, on the CPU, in the machine's byte order: little
endian on every platform torch ships for). Every load recomputes it: torch does not check the zip
records' CRCs, so without it a bit flipped in a weight loads and silently changes every score.
Weights that are not finite (NaN, +-inf) are neither written nor loaded. A file without the key
(written before it existed) still loads, with a warning: the key is optional within format
version 1, which a reader that does not know it ignores, so older epiformers still read new files.

It is read with ``torch.load(weights_only=True, map_location="cpu")``: the restricted unpickler
refuses anything but tensors and plain containers, so loading a file never runs code, and a file
saved from a GPU loads on a CPU-only machine. Files are written atomically (temporary file in the
same folder, fsync, rename), so a crash never leaves a half-written model under the real name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import nn

from epiformer_cli.errors import EpiformerError, ModelFileError, UsageError
from epiformer_cli.io.files import atomic_path, check_input_file
from epiformer_cli.model.config import ModelConfig
from epiformer_cli.model.families import build_network
from epiformer_cli.model.tower import NetworkBase

FORMAT_VERSION = 1
log = logging.getLogger(__name__)

_KEYS = ("format_version", "config", "tracks", "normalization", "provenance", "state_dict")
#: optional in format version 1 (files written before it have none)
DIGEST_KEY = "weights_sha256"


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state_dict's names, dtypes, shapes and bytes, in sorted name order.

    The same weights give the same digest bit for bit, whatever device or memory layout they
    are in and whatever order the dict lists them in. Each tensor enters as the UTF-8 JSON line
    ``["name", "torch.float32", [shape...], nbytes]\n`` followed by its ``nbytes`` contiguous
    CPU bytes (the length in the line keeps one tensor's bytes from passing for the next one's).
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        raw = tensor.reshape(-1).view(torch.uint8)  # bytes of any dtype (bfloat16, bool), no copy
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape), raw.numel()]).encode() + b"\n")
        digest.update(memoryview(raw.numpy()))
    return digest.hexdigest()


def first_non_finite(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor of ``state`` (in its order) holding NaN or
    +-inf, or None. Shared by the model file (save and load) and the checkpoint import."""
    for name, tensor in state.items():
        if not (isinstance(tensor, torch.Tensor) and tensor.is_floating_point()):
            continue
        # any NaN or inf makes the sum NaN or inf, so a finite sum clears the tensor in one pass
        # without a mask (7x faster at full size); a non-finite sum may also be finite values
        # overflowing (fp16 past 65504), which the element-wise check settles
        if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
            return name
    return None


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
    from epiformer_cli.names import check_names

    # the names become TSV columns and file names (explain's contrib.NAME.bw): a file saved before
    # this check with a name that would break them is refused here, before any work
    fix = "" if error is UsageError else (": rename the tracks (re-import the checkpoint with --tracks, or "
                                          "save the weights again with new names)")
    return check_names(tracks, where, error=error, fix=fix)


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
        path: destination file (conventionally ``*.pt``); a missing folder is made.
        model_or_state: a network of any family (e.g. :class:`Epiformer`) or its ``state_dict()``.
        config: the model's configuration.
        tracks: one name per output track, in output order.
        normalization, provenance: JSON-like dicts (str, int, float, bool, None, lists, dicts).

    The file stores :func:`weights_digest` of the weights, which every load checks.

    Raises:
        UsageError: tracks do not match ``config.n_tracks``, or the weights do not fit ``config``.
        EpiformerError: a weight holds NaN or +-inf (a diverged training): nothing is written,
            and a file already under ``path`` is left as it was.
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
    bad = first_non_finite(payload["state_dict"])
    if bad is not None:
        # a model that every load would refuse must not replace a good one (train's model.pt)
        raise EpiformerError(f"cannot save {path}: weight {bad} holds NaN or infinite values, which a model "
                             "file must not: the training diverged (train again with a lower --lr); nothing "
                             "was written")
    payload[DIGEST_KEY] = weights_digest(payload["state_dict"])
    # torch.save to a name: interruptible without breaking its writer; a missing folder is made
    # (mkdir -p), as every output's writer does
    with atomic_path(path) as tmp:
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


def _check_weights(path: Path, state: Mapping[str, torch.Tensor], stored: Any) -> None:
    """Refuse weights that differ from the digest stored with them, or that are not finite; warn
    when the file has no digest (written before there was one)."""
    if stored is None:
        log.warning("model file %s carries no weights digest (written by an older epiformer): it cannot be "
                    "checked; save it again with a current epiformer to add one", path)
    elif stored != weights_digest(state):
        raise ModelFileError(f"model file {path}: its weights do not match the digest stored in it (the file is "
                             "damaged or was edited): copy it again, or re-run the command that made it")
    bad = first_non_finite(state)
    if bad is not None:
        raise ModelFileError(f"model file {path}: weight {bad} holds NaN or infinite values, so every score "
                             "would be NaN: re-train or re-import the model")


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


#: what a model file is, said when something else is given
ACCEPTS = "give a model file (a .pt written by `epiformer train` or `epiformer import-model`)"
_HEAD = 4096  # bytes looked at to tell a text file


def refuse_non_model(path: Path, accepts: str = ACCEPTS) -> None:
    """Refuse, in one line ending with ``accepts``, what is plainly no model file, before torch
    reads it (whose legacy reader fails on such bytes in any way): a folder (a store, a training run), an empty file, a text file (metrics.tsv, a
    BED), gzip data, a zip archive of something else (an .npz), or bytes that are neither a zip
    archive (what ``torch.save`` writes) nor a pickle (its older format). A missing or
    unreadable path is left to the loader's own message.

    Raises:
        ModelFileError: naming the file, what it looks like, and ``accepts``.
    """
    if path.is_dir():
        if (path / "model.pt").is_file():
            raise ModelFileError(f"{path} is a folder (a training run?): give its model file, "
                                 f"{path / 'model.pt'}: {accepts}")
        kind = "a store folder" if (path / "manifest.json").is_file() else "a folder"
        raise ModelFileError(f"{path} is {kind}, not a model file: {accepts}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD)
    except OSError:
        return  # missing or unreadable: load_model says which
    if not head:
        raise ModelFileError(f"{path} is empty (0 bytes), not a model file: {accepts}")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return  # a damaged zip: load_model says it is truncated or corrupt
        if not any(name.endswith(("/data.pkl", "/constants.pkl")) for name in names):
            raise ModelFileError(f"{path} is a zip archive of other files (such as an .npz of arrays), not a "
                                 f"model file: {accepts}")
        return
    if head[:1] == b"\x80":  # a pickle (protocol 2+): torch's legacy format; load_model judges it
        return
    if head.startswith(b"\x1f\x8b"):
        raise ModelFileError(f"{path} holds gzip-compressed data (a table or a null?), not a model file: {accepts}")
    text = _as_text(head)
    if text is not None:
        first = next((line for line in text.lstrip("\ufeff").splitlines() if line.strip()), "")
        raise ModelFileError(f"{path} is a text file (it starts {first[:40]!r}), not a model file: {accepts}")
    raise ModelFileError(f"{path} is not a model file (neither a zip archive, as torch.save writes, nor a "
                         f"pickle): {accepts}")


def _as_text(head: bytes) -> str | None:
    """``head`` as UTF-8 text without NUL bytes (a character cut at the end allowed), or None."""
    import codecs

    if b"\0" in head:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Read a model file safely (no code runs) and return the eval-mode model and its metadata.

    Args:
        path: a file written by :func:`save_model`.
        device: where to put the model (tensors are first mapped to the CPU, so a file saved on
            a GPU loads anywhere).

    Raises:
        ModelFileError: the file is missing, truncated or corrupt, of another format version,
            carries code, its config, tracks and weights disagree, its weights do not match
            their stored digest, or a weight is NaN or infinite.
    """
    path = check_input_file(path, "model file", ModelFileError)
    refuse_non_model(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text says how to load the file unsafely: for -v only. Its first refused global
        # (a class of the user's, or a pickled module) tells the user what they saved.
        log.debug("torch.load(weights_only=True) refused %s: %s", path, exc)
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"an object of class {found.group(1)}" if found else "Python objects"
        raise ModelFileError(_refusal(path, f"it holds {what}, and loading it could run code")) from None
    except Exception as exc:  # noqa: BLE001 - bytes that are no zip fall to torch's legacy pickle reader,
        # which fails on them in any way (IndexError, KeyError, struct.error...): all mean the same
        log.debug("torch.load could not read %s: %s: %s", path, type(exc).__name__, exc)
        if _is_torchscript(path):
            raise ModelFileError(_refusal(path, "it is a TorchScript archive, which holds code")) from None
        raise ModelFileError(
            f"cannot read model file {path}: it is not one, or it is truncated or corrupt ({type(exc).__name__}); "
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
    _check_weights(path, state, payload.get(DIGEST_KEY))
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
