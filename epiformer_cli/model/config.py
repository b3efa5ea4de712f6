"""The typed Epiformer configuration (:class:`ModelConfig`) and its named presets.

Pure Python (no torch): a config can be read, validated and written without loading the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple, Type

from epiformer_cli.data.encoding import CONSERVATION_MODES, input_channels
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.model.families import archs

#: stem max-pool plus one max-pool per tower block; every preset keeps 6 blocks -> 2**7 = 128 bp bins.
N_TOWER_BLOCKS = 6


def exponential_channels(start: int, end: int, n: int) -> Tuple[int, ...]:
    """``n`` channel counts growing exponentially from ``start`` to ``end``, rounded to integers.

    The published rule: ``exponential_channels(384, 768, 7) == (384, 431, 484, 543, 610, 684, 768)``.
    """
    if n < 2:
        return (int(end),)
    base = math.exp(math.log(end / start) / (n - 1))
    return tuple(int(round(start * base**i)) for i in range(n))


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the shape of an Epiformer network (not how it is trained).

    Lengths are in base pairs (bp) unless named ``*_bins``; one bin is 128 bp.

    Attributes:
        arch: the model family, one of :func:`~epiformer_cli.model.families.archs`: ``epiformer``
            (default) or ``published``, the published research network (post-LayerNorm layers,
            ``silu(x) * x`` feed-forward without gate weights, no attention output projection, a
            ``relative_key`` table of head-size vectors shared by the heads of a layer, absolute
            sinusoidal positions, an ungated head), which ``epiformer import-model`` builds from
            the published checkpoints.
        seq_len: input window in bp; a multiple of 128.
        n_tracks: number of predicted tracks (cell types).
        conservation: how phastCons enters the model: ``channel`` (a fifth input channel, the
            default), ``scale`` (one_hot * exp(cons), the published form) or ``none``.
        stem_channels: channels of the stem convolution.
        stem_kernel: stem convolution width in bp (odd).
        tower_channels: output channels of the 6 tower blocks (the published model grows them
            exponentially, see :func:`exponential_channels`).
        tower_kernel: tower convolution width in positions (odd).
        d_model: transformer width; must equal the last tower channel count.
        n_layers: transformer layers.
        n_heads: attention heads; ``d_model`` must be divisible by it.
        ffn_dim: hidden width of the SwiGLU feed-forward block.
        dropout: residual dropout in the transformer (training only).
        attn_dropout: attention-probability dropout (training only).
        head_hidden: hidden width of the output head (after its SwiGLU gate; for ``published``
            the width of its pointwise convolution, 2 * d_model there).
        head_dropout: dropout inside the head, before the last pointwise layer (never right
            before the softplus).
        crop_bins: bins cropped from each side before the head.
        rel_positions: ``published`` only: the relative-position table covers offsets
            ``-(rel_positions - 1) .. rel_positions - 1`` (the research code's ``embed_size``;
            ``2 * rel_positions - 1`` rows); must be at least ``n_bins``. 0 for ``epiformer``,
            whose per-head bias table is always sized by ``n_bins``.
        abs_positions: ``published`` only: rows of the absolute sinusoidal position table added
            after the tower (the research code's ``max_len``; at least ``n_bins``), 0 for none.
    """

    arch: str = "epiformer"

    seq_len: int = 98_304
    n_tracks: int = 1
    conservation: str = "channel"
    stem_channels: int = 384
    stem_kernel: int = 15
    tower_channels: Tuple[int, ...] = field(
        default_factory=lambda: exponential_channels(384, 768, N_TOWER_BLOCKS + 1)[1:]
    )
    tower_kernel: int = 5
    d_model: int = 768
    n_layers: int = 4
    n_heads: int = 4
    ffn_dim: int = 2048
    dropout: float = 0.4
    attn_dropout: float = 0.4
    head_hidden: int = 1536
    head_dropout: float = 0.1
    crop_bins: int = 64
    rel_positions: int = 0
    abs_positions: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tower_channels", tuple(self.tower_channels))
        self._check_types()
        problems = []
        if self.arch not in archs():  # the registered families (epiformer_cli.model.families)
            problems.append(f"arch must be one of {', '.join(archs())}, not {self.arch!r}")
        problems += self._arch_problems()
        if self.conservation not in CONSERVATION_MODES:
            problems.append(f"conservation must be one of {', '.join(CONSERVATION_MODES)}, not {self.conservation!r}")
        if len(self.tower_channels) != N_TOWER_BLOCKS:
            problems.append(
                f"tower_channels must list {N_TOWER_BLOCKS} blocks (7 halvings give 128 bp bins), "
                f"got {len(self.tower_channels)}"
            )
        for name in ("seq_len", "n_tracks", "stem_channels", "stem_kernel", "tower_kernel", "d_model",
                     "n_layers", "n_heads", "ffn_dim", "head_hidden"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if any(c < 1 for c in self.tower_channels):
            problems.append(f"tower_channels must be positive, got {self.tower_channels}")
        if self.seq_len % 128:
            problems.append(f"seq_len must be a multiple of 128 bp, got {self.seq_len}")
        if self.stem_kernel % 2 == 0 or self.tower_kernel % 2 == 0:
            problems.append("stem_kernel and tower_kernel must be odd ('same' padding)")
        if self.tower_channels and self.d_model != self.tower_channels[-1]:
            problems.append(f"d_model ({self.d_model}) must equal the last tower channels ({self.tower_channels[-1]})")
        if self.n_heads >= 1 and self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.crop_bins < 0 or 2 * self.crop_bins >= self.seq_len // 128:
            problems.append(f"crop_bins must be >= 0 and < n_bins/2 ({self.seq_len // 128 / 2:g}), got {self.crop_bins}")
        for name in ("dropout", "attn_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if problems:
            raise UsageError("invalid model config: " + "; ".join(problems))

    def _arch_problems(self) -> list:
        """What the chosen model family forbids (the rest of the checks are shared). Kept here, not
        in the family's module: they are rules on this dataclass's fields, and checking a config
        must not load a network."""
        n_bins = self.seq_len // 128
        if self.arch == "published":
            problems = []
            if self.conservation == "channel":
                problems.append("the published architecture takes conservation as 'scale' (one_hot * "
                                "exp(phastCons)) or 'none', not as a 'channel'")
            if self.rel_positions < n_bins:
                problems.append(f"rel_positions ({self.rel_positions}) must be at least the {n_bins} bins "
                                "of a window (the relative-position table must cover every offset)")
            if self.abs_positions and self.abs_positions < n_bins:
                problems.append(f"abs_positions ({self.abs_positions}) must be 0 or at least the {n_bins} bins")
            if self.d_model % 2:
                problems.append(f"d_model ({self.d_model}) must be even (sin/cos position features)")
            return problems
        if self.rel_positions or self.abs_positions:
            return ["rel_positions and abs_positions belong to the published architecture (arch: published)"]
        return []

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "tower_channels":
                ok = all(isinstance(c, int) and not isinstance(c, bool) for c in value)
                expected = "a list of integers"
            elif f.name in ("conservation", "arch"):
                ok, expected = isinstance(value, str), "a string"
            elif f.name in ("dropout", "attn_dropout", "head_dropout"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                expected = "a number"
                if ok:
                    object.__setattr__(self, f.name, float(value))
            else:
                ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
            if not ok:
                raise UsageError(f"invalid model config: {f.name} must be {expected}, got {value!r}")

    # ---- derived, read-only -------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        """Input channels: 4 one-hot, plus 1 when conservation is a channel."""
        return input_channels(self.conservation)

    @property
    def bin_size(self) -> int:
        """Output bin in bp: 2 ** (1 stem pool + 6 tower pools) = 128."""
        return 2 ** (1 + len(self.tower_channels))

    @property
    def n_bins(self) -> int:
        """Positions the transformer sees: seq_len // 128."""
        return self.seq_len // self.bin_size

    @property
    def out_bins(self) -> int:
        """Predicted bins per window: n_bins - 2 * crop_bins."""
        return self.n_bins - 2 * self.crop_bins

    @property
    def out_bp(self) -> int:
        """Predicted span in bp, centred in the window."""
        return self.out_bins * self.bin_size

    @property
    def crop_bp(self) -> int:
        """bp on each side of the window that get no prediction (context only)."""
        return self.crop_bins * self.bin_size

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready dict of the fields (tower_channels as a list)."""
        out = dataclasses.asdict(self)
        out["tower_channels"] = list(self.tower_channels)
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any], error: Type[Exception] = UsageError,
                  source: str = "model config") -> "ModelConfig":
        """Build and validate a config from a dict; unknown keys are refused, missing keys default.

        Args:
            data: field name -> value.
            error: the exception class to raise (``ModelFileError`` when reading a model file).
            source: what to name in the message (e.g. the file path).
        """
        if not isinstance(data, dict):
            raise error(f"{source}: expected a JSON object of model settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise error(
                f"{source}: unknown model setting(s) {', '.join(unknown)}; "
                f"known settings are {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except UsageError as exc:
            if error is UsageError:
                raise
            raise error(f"{source}: {exc}") from None
        except TypeError as exc:  # e.g. tower_channels not iterable
            raise error(f"{source}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def load_config(path: str | Path) -> ModelConfig:
    """Read a :class:`ModelConfig` from a JSON file; unknown keys are refused."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputFileError(f"model config {path} does not exist: check the path") from None
    except OSError as exc:
        raise InputFileError(f"cannot read model config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"model config {path} is not JSON text (it holds bytes that are not UTF-8): "
                         "give the JSON file of a model config") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"model config {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return ModelConfig.from_dict(data, source=f"model config {path}")


def save_config(config: ModelConfig, path: str | Path) -> None:
    """Write a config as JSON (the form :func:`load_config` reads), atomically."""
    from epiformer_cli.io.files import atomic_write_text

    atomic_write_text(path, config.to_json() + "\n")


#: Named configurations. ``epiformer`` is the published size (98,304 bp in, 640 bins of 128 bp out);
#: ``published`` is the published research network itself (8 layers, 54.8 M parameters with one
#: track), what ``import-model`` builds and what ``train --preset published`` trains;
#: ``small`` trains on a CPU (32,768 bp in, 192 bins out, about 8 GFLOP a window);
#: ``tiny`` is for tests and the demo (16,384 bp in, 96 bins out, a few ms a window).
PRESETS: Dict[str, ModelConfig] = {
    "epiformer": ModelConfig(),
    "published": ModelConfig(
        arch="published",
        conservation="scale",
        n_layers=8,
        rel_positions=768,
        abs_positions=768,
    ),
    "small": ModelConfig(
        seq_len=32_768,
        stem_channels=128,
        stem_kernel=15,
        tower_channels=exponential_channels(128, 256, N_TOWER_BLOCKS + 1)[1:],
        tower_kernel=5,
        d_model=256,
        n_layers=2,
        n_heads=4,
        ffn_dim=512,
        dropout=0.2,
        attn_dropout=0.2,
        head_hidden=512,
        head_dropout=0.1,
        crop_bins=32,
    ),
    "tiny": ModelConfig(
        seq_len=16_384,
        stem_channels=32,
        stem_kernel=15,
        tower_channels=exponential_channels(32, 64, N_TOWER_BLOCKS + 1)[1:],
        tower_kernel=5,
        d_model=64,
        n_layers=2,
        n_heads=4,
        ffn_dim=128,
        dropout=0.1,
        attn_dropout=0.1,
        head_hidden=64,
        head_dropout=0.1,
        crop_bins=16,
    ),
}


@dataclass(frozen=True)
class PresetNote:
    """What a preset is for, beside its :class:`ModelConfig` (lengths come from the config itself).

    Attributes:
        parameters: trainable parameters with one track (each more track adds ``head_hidden + 1``);
            tests check it against the built network.
        lr: the suggested peak ``--lr`` when training this preset from scratch.
        use: when to choose it, a few words.
    """

    parameters: int
    lr: float
    use: str


#: One note per preset, read by :func:`describe_preset`. The learning rates: ``tiny``'s is the
#: default, measured on the demo genome (held-out Pearson 0.86 in 10 epochs); the 768-wide presets'
#: is the rate the published models were trained at; ``small``'s is interpolated between them by
#: width (lr ~ 1 / d_model, 2e-3 at 64 -> 1e-4 at 768), not measured.
PRESET_NOTES: Dict[str, PresetNote] = {
    "epiformer": PresetNote(42_643_421, 1e-4, "training from scratch at the published size, on GPUs"),
    "published": PresetNote(54_819_693, 1e-4, "the published network itself, as import-model builds it"),
    "small": PresetNote(2_918_354, 5e-4, "training on a CPU or one small GPU"),
    "tiny": PresetNote(180_588, 2e-3, "tests and the demo (a few minutes on a CPU)"),
}


def describe_preset(name: str) -> str:
    """One line about a preset: input length, output span, parameters, shape, suggested lr, use.

    Example: ``tiny: 16,384 bp in, 96 bins x 128 bp = 12,288 bp out, 180,588 parameters (1 track),
    2 layers x 64, --lr 0.002; tests and the demo (a few minutes on a CPU)``.
    """
    cfg, note = preset(name), PRESET_NOTES[name]
    return (f"{name}: {cfg.seq_len:,} bp in, {cfg.out_bins} bins x {cfg.bin_size} bp = {cfg.out_bp:,} bp out, "
            f"{note.parameters:,} parameters (1 track), {cfg.n_layers} layers x {cfg.d_model}, "
            f"--lr {note.lr:g}; {note.use}")


def preset_for_window(window_bp: int) -> str | None:
    """The preset whose input length is ``window_bp``, None when no preset has it. Of several, the
    first that is not the ``published`` architecture (98,304 bp: ``epiformer``, a fresh network
    of the published size, rather than the published research network)."""
    fitting = [name for name, cfg in PRESETS.items() if cfg.seq_len == window_bp]
    return next((name for name in fitting if PRESETS[name].arch != "published"), fitting[0] if fitting else None)


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset (one of :data:`PRESETS`), optionally with fields changed.

    Example: ``preset("epiformer", n_tracks=18)``.
    """
    try:
        base = PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown model preset {name!r}: use one of {', '.join(PRESETS)}") from None
    if overrides:
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UsageError(f"unknown model setting(s) {', '.join(unknown)}")
        return dataclasses.replace(base, **overrides)
    return base
