"""Read a published Epiformer checkpoint (the research code's ``*.pth.tar``) as plain data.

What such a file holds (../shared/reference/original-epiformer.md, "The published checkpoint
files"): a ``torch.save``d dict with ``state_dict`` (possibly ``module.``-prefixed, possibly on a
GPU), ``optimizer``, a few ``current_*`` floats and ``param``, the construction arguments. Track
names are not in it.

:func:`read_published_checkpoint` loads it with ``weights_only=True`` and ``map_location="cpu"``
(no code runs; a GPU-saved file loads on a CPU), builds the :class:`ModelConfig` of the
``published`` family from ``param`` and the tensor shapes, and checks every key and shape against
the network that config builds, naming the first mismatch in the research code's own key names.
:data:`KEY_TEMPLATES` maps those names onto the published network's (``model/published.py``).
"""

from __future__ import annotations

import logging
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from epiformer_cli.errors import ModelFileError
from epiformer_cli.io.files import check_input_file
from epiformer_cli.io.identity import sha256_file
from epiformer_cli.model.config import N_TOWER_BLOCKS, ModelConfig
from epiformer_cli.model.families import build_network
from epiformer_cli.model.modelfile import first_non_finite

log = logging.getLogger(__name__)

#: research-code state-dict name prefix <-> epiformer name prefix; ``{i}`` a block or layer
#: number, ``{w}`` query/key/value, ``{n}`` 1 or 2.
KEY_TEMPLATES: Tuple[Tuple[str, str], ...] = (
    ("conv.stem.0.", "stem.conv."),
    ("conv.stem.1.module.0.", "stem.res.norm."),
    ("conv.stem.1.module.2.", "stem.res.conv."),
    ("conv.tower.{i}.0.0.", "tower.{i}.conv.norm."),
    ("conv.tower.{i}.0.2.", "tower.{i}.conv.conv."),
    ("conv.tower.{i}.1.module.0.", "tower.{i}.res.norm."),
    ("conv.tower.{i}.1.module.2.", "tower.{i}.res.conv."),
    ("trans.layers.{i}.mha.{w}.", "layers.{i}.attn.{w}."),
    ("trans.layers.{i}.mha.distance_embedding.", "layers.{i}.attn.distance."),
    ("trans.layers.{i}.linear_net.0.", "layers.{i}.ffn.inp."),
    ("trans.layers.{i}.linear_net.3.", "layers.{i}.ffn.out."),
    ("trans.layers.{i}.norm{n}.", "layers.{i}.norm{n}."),
    ("ptw.conv.0.", "head.norm."),
    ("ptw.conv.2.", "head.conv."),
    ("ptw.linear.0.", "head.out."),
)

_FIELDS = {"i": r"\d+", "w": "query|key|value", "n": "[12]"}


def _template_regex(template: str) -> "re.Pattern[str]":
    pattern = re.escape(template)
    for name, alternatives in _FIELDS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{alternatives})")
    return re.compile(pattern)


_TO_OURS = tuple((_template_regex(theirs), ours) for theirs, ours in KEY_TEMPLATES)
_TO_THEIRS = tuple((_template_regex(ours), theirs) for theirs, ours in KEY_TEMPLATES)


def _rename(key: str, rules) -> str | None:
    for pattern, target in rules:
        m = pattern.match(key)
        if m:
            return target.format(**m.groupdict()) + key[m.end():]
    return None


def epiformer_key(published_key: str) -> str | None:
    """The epiformer state-dict name of a research-code name, or None when no rule matches."""
    return _rename(published_key, _TO_OURS)


def published_key(epiformer_name: str) -> str | None:
    """The research-code state-dict name of an epiformer name (inverse of :func:`epiformer_key`)."""
    return _rename(epiformer_name, _TO_THEIRS)


#: the ``param`` entries the import needs (the rest is kept as provenance only).
REQUIRED_PARAMS = ("seq_len", "bin_size", "num_cnn_layer", "embed_size", "num_heads",
                   "num_encoder_layers", "crop_size", "multiout_dim")

#: floats the training script stores beside the weights, kept as provenance.
METRIC_KEYS = ("current_model_loss", "current_model_corr", "current_valid_loss", "current_valid_corr")


@dataclass
class PublishedCheckpoint:
    """A published checkpoint, read and checked.

    Attributes:
        config: the ``published``-family config its weights fit.
        model: the network ``config`` builds, holding the checkpoint's weights (eval mode, CPU).
        param: the checkpoint's ``param`` dict, made JSON-safe.
        metrics: the ``current_*`` floats it stores (missing ones left out).
        sha256: SHA-256 of the whole file.
        path: the file read.
    """

    config: ModelConfig
    model: torch.nn.Module
    param: Dict[str, Any]
    metrics: Dict[str, float] = field(default_factory=dict)
    sha256: str = ""
    path: Optional[Path] = None


def _json_safe(value: Any) -> Any:
    """A JSON-ready copy: containers kept, tensors of one value as numbers, anything else as text."""
    if isinstance(value, (str, bool, type(None))):
        return value
    if isinstance(value, (int, float)):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def _load(path: Path) -> Any:
    """torch.load that never runs code, with one-line errors for what is not a plain checkpoint."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        log.debug("torch.load(weights_only=True) refused %s: %s", path, exc)
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"an object of class {found.group(1)}" if found else "Python objects"
        raise ModelFileError(
            f"refusing to import {path}: it holds {what}, and loading it could run code; a published "
            "Epiformer checkpoint holds only tensors, numbers and dicts: give the original *.pth.tar file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - bytes that are no zip fall to torch's legacy pickle reader,
        # which fails on them in any way (IndexError, KeyError, struct.error...): all mean the same
        log.debug("torch.load could not read %s: %s: %s", path, type(exc).__name__, exc)
        raise ModelFileError(
            f"cannot read checkpoint {path}: it is not one, or it is truncated or corrupt ({type(exc).__name__}); "
            "copy or download it again"
        ) from None


def _strip_module_prefix(state: Mapping[str, Any]) -> Dict[str, Any]:
    """Keys saved from a (Distributed)DataParallel wrapper start with ``module.``: drop it."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _param(param: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = param.get(key)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ModelFileError(f"{where}: param[{key!r}] is {value!r}, expected {kind.__name__}: "
                             "the checkpoint's settings are damaged or from another model")
    return value


def _shape(state: Mapping[str, torch.Tensor], key: str, where: str, published: str) -> torch.Size:
    if key not in state:
        raise ModelFileError(f"{where}: it has no {published}: not a published Epiformer checkpoint "
                             "(or one of an unsupported variant)")
    return state[key].shape


def config_from_checkpoint(param: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str) -> ModelConfig:
    """The ``published`` config of a checkpoint: sizes from the tensor shapes, the rest from ``param``.

    ``param`` does not hold the channel widths, so they are read off the weights; ``param``'s own
    sizes (layers, tracks, feed-forward width, relative table) are checked against the weights.
    ``state`` uses epiformer's key names.
    """
    missing = [k for k in REQUIRED_PARAMS if k not in param]
    if missing:
        raise ModelFileError(f"{where}: param lacks {', '.join(missing)}: not a published Epiformer checkpoint")
    bin_size = _param(param, "bin_size", int, where)
    n_cnn = _param(param, "num_cnn_layer", int, where)
    if bin_size != 128 or n_cnn != N_TOWER_BLOCKS:
        raise ModelFileError(f"{where}: bin_size {bin_size} with num_cnn_layer {n_cnn}; epiformer runs the "
                             f"published layout of 128 bp bins from {N_TOWER_BLOCKS} tower blocks only")
    stem = _shape(state, "stem.conv.weight", where, "conv.stem.0.weight")
    if len(stem) != 3 or stem[1] != 4:
        raise ModelFileError(f"{where}: conv.stem.0.weight has shape {tuple(stem)}, expected (channels, 4, kernel)")
    tower = [_shape(state, f"tower.{i}.conv.conv.weight", where, f"conv.tower.{i}.0.2.weight")
             for i in range(N_TOWER_BLOCKS)]
    n_layers = len({m.group(1) for k in state for m in [re.match(r"layers\.(\d+)\.", k)] if m})
    ffn = _shape(state, "layers.0.ffn.inp.weight", where, "trans.layers.0.linear_net.0.weight") if n_layers else None
    head_hidden = _shape(state, "head.conv.weight", where, "ptw.conv.2.weight")[0]
    n_tracks = _shape(state, "head.out.weight", where, "ptw.linear.0.weight")[0]
    checks = {
        "num_encoder_layers": (_param(param, "num_encoder_layers", int, where), n_layers),
        "multiout_dim": (_param(param, "multiout_dim", int, where), n_tracks),
    }
    if ffn is not None and "dim_feedforward" in param:
        checks["dim_feedforward"] = (_param(param, "dim_feedforward", int, where), ffn[0])
    for key, (said, found) in checks.items():
        if said != found:
            raise ModelFileError(f"{where}: param[{key!r}] is {said} but the weights hold {found}: "
                                 "the checkpoint's settings and weights disagree")
    if_cons = bool(param.get("if_cons", True))
    add_pos = bool(param.get("add_positional_encoding", True))
    fields = dict(
        arch="published",
        seq_len=_param(param, "seq_len", int, where),
        n_tracks=int(n_tracks),
        conservation="scale" if if_cons else "none",
        stem_channels=int(stem[0]),
        stem_kernel=int(stem[2]),
        tower_channels=tuple(int(t[0]) for t in tower),
        tower_kernel=int(tower[0][2]),
        d_model=int(tower[-1][0]),
        n_layers=n_layers,
        n_heads=_param(param, "num_heads", int, where),
        ffn_dim=int(ffn[0]) if ffn is not None else 1,
        head_hidden=int(head_hidden),
        crop_bins=_param(param, "crop_size", int, where),
        rel_positions=_param(param, "embed_size", int, where),
        abs_positions=_param(param, "max_len", int, where) if add_pos else 0,
    )
    for ours, theirs in (("dropout", "enc_dropout"), ("attn_dropout", "att_dropout"), ("head_dropout", "ptw_dropout")):
        if theirs in param:  # only for fine-tuning: inference never drops out
            fields[ours] = _param(param, theirs, float, where)
    try:
        return ModelConfig.from_dict(fields, error=ModelFileError, source=where)
    except ModelFileError as exc:
        raise ModelFileError(f"{exc}: the checkpoint's settings do not describe a published Epiformer") from None


def _check_against(state: Dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                   published_names: Mapping[str, str], where: str) -> None:
    """Every key and shape, named in the research code's terms; the first problem is the error."""
    for key, ref in expected.items():
        name = published_names.get(key, key)
        if key not in state:
            if key.endswith("num_batches_tracked"):  # a counter for training only, not stored by old torch
                state[key] = torch.zeros((), dtype=torch.long)
                continue
            raise ModelFileError(f"{where}: missing {name}: the checkpoint is incomplete or of another variant")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ModelFileError(f"{where}: {name} has shape {tuple(state[key].shape)}, the published "
                                 f"architecture with these settings needs {tuple(ref.shape)}")


def read_published_checkpoint(path: str | Path) -> PublishedCheckpoint:
    """Read, convert and check a published Epiformer checkpoint; nothing is written.

    Raises:
        ModelFileError: missing, unreadable, truncated or corrupt file; a pickle with code; a
            dict that is not a published checkpoint (an epiformer model file, another model's
            checkpoint); settings and weights that disagree; the first key or shape that does not
            fit, named as in the checkpoint.
    """
    path = check_input_file(path, "checkpoint", ModelFileError)
    where = f"checkpoint {path}"
    payload = _load(path)
    if isinstance(payload, dict) and "format_version" in payload and "config" in payload:
        raise ModelFileError(f"{path} is already an epiformer model file: use it as --model directly")
    if not isinstance(payload, dict) or "state_dict" not in payload or "param" not in payload:
        keys = ", ".join(sorted(map(str, payload))[:5]) if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"{where} is not a published Epiformer checkpoint (expected a dict with "
                             f"state_dict and param, found {keys or 'an empty dict'}): give a "
                             "*.best_corr.pth.tar / *.best_loss.pth.tar file of the research code")
    raw, param = payload["state_dict"], payload["param"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelFileError(f"{where}: state_dict is not a dict of tensors: not a published Epiformer checkpoint")
    if not isinstance(param, dict):
        raise ModelFileError(f"{where}: param is not a dict: not a published Epiformer checkpoint")
    raw = _strip_module_prefix(raw)
    state, published_names = {}, {}
    for key, tensor in raw.items():
        ours = epiformer_key(key)
        if ours is None:
            raise ModelFileError(f"{where}: unexpected weight {key}: this is not a published Epiformer "
                                 "checkpoint (a checkpoint of another model?)")
        state[ours] = tensor.detach().to("cpu", torch.long if key.endswith("num_batches_tracked") else torch.float32)
        published_names[ours] = key
    config = config_from_checkpoint(param, state, where)
    model = build_network(config)
    expected = model.state_dict()
    for key in state:
        if key not in expected:
            raise ModelFileError(f"{where}: unexpected weight {published_names[key]} for a published "
                                 f"Epiformer of {config.n_layers} layers")
    _check_against(state, expected, {k: published_names.get(k) or published_key(k) or k for k in expected}, where)
    bad = first_non_finite(state)  # the model file's own rule (modelfile refuses them on load too)
    if bad is not None:
        raise ModelFileError(f"{where}: {published_names.get(bad, bad)} holds NaN or infinite values: "
                             "the checkpoint is damaged")
    metrics = {k: float(payload[k]) for k in METRIC_KEYS
               if isinstance(payload.get(k), (int, float, torch.Tensor)) and not isinstance(payload.get(k), bool)}
    model.load_state_dict(state, strict=True)
    return PublishedCheckpoint(config=config, model=model.eval(), param=_json_safe(param), metrics=metrics,
                               sha256=sha256_file(path), path=path)


def parse_track_names(spec: Optional[List[str] | str], n_tracks: int, where: str) -> List[str]:
    """Track names from ``--tracks``: names (comma-separated or repeated) or one file.

    A file holds one name per line (first tab-separated column; blank lines and ``#`` comments
    skipped). Without names the tracks are ``track1..trackN`` (the caller warns). The count must
    equal ``n_tracks``, and the names pass :func:`epiformer_cli.names.check_names` (printable,
    unique, and unique as parts of file names).
    """
    from epiformer_cli.errors import UsageError
    from epiformer_cli.io.hts import text_lines
    from epiformer_cli.names import check_names

    if not spec:
        return [f"track{i + 1}" for i in range(n_tracks)]
    items = [spec] if isinstance(spec, str) else list(spec)
    if len(items) == 1 and Path(items[0]).is_file():
        # as every text input: a non-UTF-8 byte reaches check_names (one line), not a decode error
        lines = [line for _, line in text_lines(items[0], "track file")]
        names = [line.split("\t")[0].strip() for line in lines if line.strip() and not line.startswith("#")]
        source = f"track file {items[0]}"
    else:
        # not options.split_names: it drops repeats, and a repeated name here is a mistake to report
        names = [name.strip() for item in items for name in item.split(",") if name.strip()]
        source = "--tracks"
    if len(names) != n_tracks:
        raise UsageError(f"{source} gives {len(names)} track names but {where} has {n_tracks} output tracks: "
                         "give one name per track, in output order")
    return check_names(names, source)
