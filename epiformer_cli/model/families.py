"""The model families: which network, fast trunk and checkpoint import each ``arch`` names.

A family is one module that defines ``FAMILY = ModelFamily(...)``; :data:`_SOURCES` holds one line
per family. This module is pure Python (no torch) so that :class:`~epiformer_cli.model.config.ModelConfig`
can check an ``arch`` without loading a network: a family's module is imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from epiformer_cli.errors import UsageError


@dataclass(frozen=True)
class ModelFamily:
    """What the rest of epiformer needs to know about one model family.

    Every family's network subclasses :class:`~epiformer_cli.model.tower.NetworkBase`, so all of
    them share its convolutional tower (``conv_stages()``, stem first): that tower is what the fast
    inference path (:mod:`~epiformer_cli.model.fast`) and the incremental substitution path
    (:mod:`~epiformer_cli.model.incremental`, used by ISM and variant scoring) compile. Past the
    tower, those paths call only the family's prepared trunk, so a family brings:

    Attributes:
        arch: the config's ``arch`` value naming the family.
        description: one line for ``epiformer info`` (what sets the family apart).
        network: the eager, trainable network class: ``network(config)`` -> ``NetworkBase``;
            forward (batch, in_channels, seq_len) -> (batch, n_tracks, out_bins), non-negative.
        prepare_trunk: ``prepare_trunk(model, dtype)`` -> a
            :class:`~epiformer_cli.model.prepared.PreparedTrunk`: the family's transformer and head
            with weights folded and converted once, mapping tower outputs z (batch, n_bins, d_model)
            to (batch, n_tracks, out_bins) float32, equal to the eager model in eval mode within
            float rounding. ``FastEpiformer.finish``/``finish_many`` and the incremental tower's
            ``finish``/``finish_many`` run it.
        trunk_float32: run the prepared trunk in float32 when the tower computes in bf16 or fp16
            (float64 stays float64): for trunks whose rounding bf16 would amplify.
        import_checkpoint: ``import_checkpoint(path)`` reads a checkpoint of the family's original
            code into a config and a network holding its weights (``epiformer import-model``);
            None when the family has no foreign checkpoint format.
    """

    arch: str
    description: str
    network: Callable[[Any], Any]
    prepare_trunk: Callable[[Any, Any], Any]
    trunk_float32: bool = False
    import_checkpoint: Optional[Callable[[Any], Any]] = None

    def build(self, config: Any) -> Any:
        """A fresh network of this family for ``config`` (a ``ModelConfig`` with this ``arch``)."""
        return self.network(config)


#: arch -> the module defining its ``FAMILY`` (loaded on first use), or a registered family.
_SOURCES: Dict[str, Union[str, ModelFamily]] = {
    "epiformer": "epiformer_cli.model.network",
    "published": "epiformer_cli.model.published",
}
_BUILT_IN = frozenset(_SOURCES)


def archs() -> Tuple[str, ...]:
    """The known ``arch`` values, built-in families first."""
    return tuple(_SOURCES)


def family(arch: str) -> ModelFamily:
    """The family ``arch`` names (its module is imported on first use).

    Raises:
        UsageError: ``arch`` names no family.
    """
    try:
        source = _SOURCES[arch]
    except (KeyError, TypeError):
        raise UsageError(f"unknown model family (arch) {arch!r}: known families are {', '.join(_SOURCES)}") from None
    if isinstance(source, str):
        found = getattr(importlib.import_module(source), "FAMILY", None)
        if not isinstance(found, ModelFamily) or found.arch != arch:
            raise TypeError(f"{source} must define FAMILY = ModelFamily(arch={arch!r}, ...)")
        _SOURCES[arch] = source = found
    return source


def register(new: ModelFamily) -> ModelFamily:
    """Add a family defined outside this package (a notebook, a plugin, a test); returns it.

    Raises:
        ValueError: its ``arch`` is already taken.
    """
    if new.arch in _SOURCES:
        raise ValueError(f"model family {new.arch!r} is already registered")
    _SOURCES[new.arch] = new
    return new


def unregister(arch: str) -> None:
    """Remove a family added with :func:`register` (the built-in families stay)."""
    if arch in _BUILT_IN or arch not in _SOURCES:
        raise ValueError(f"{arch!r} is not a registered add-on family")
    del _SOURCES[arch]


def build_network(config: Any) -> Any:
    """The eager network of ``config``'s family, freshly initialised (see :attr:`ModelFamily.network`)."""
    return family(config.arch).build(config)


def family_description(arch: str) -> str:
    """The one-line description of ``arch``'s family, or ``arch`` itself when it names none."""
    try:
        return family(arch).description
    except UsageError:
        return arch
