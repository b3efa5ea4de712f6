"""One-hot encoding, model inputs and reverse complement: the one place these conventions live.

Bases are stored and moved as uint8 codes ``A=0 C=1 G=2 T=3 N=4`` (1 byte a base, no float64
one-hot in RAM; the table itself is :mod:`epiformer_cli.bases`, re-exported here); the one-hot
expansion happens on the compute device right before the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple, TypeVar

import numpy as np

from epiformer_cli.bases import (  # noqa: F401 - the base codes, re-exported for their importers
    ALPHABET,
    ASCII_TO_CODE,
    COMPLEMENT,
    A,
    C,
    G,
    N,
    T,
    decode_sequence,
    encode_sequence,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

#: how conservation enters the model (see ``ModelConfig.conservation``).
CONSERVATION_MODES = ("channel", "scale", "none")

ArrayLike = TypeVar("ArrayLike", np.ndarray, "torch.Tensor")


def _complement(codes: ArrayLike) -> ArrayLike:
    if isinstance(codes, np.ndarray):
        return COMPLEMENT[codes]
    import torch

    table = torch.as_tensor(COMPLEMENT, device=codes.device)
    return table[codes.long()].to(codes.dtype)


def _flip(x: ArrayLike) -> ArrayLike:
    if isinstance(x, np.ndarray):
        # .copy(), not ascontiguousarray: a length-1 view counts as contiguous and would keep its
        # negative stride, which torch.from_numpy refuses.
        return x[..., ::-1].copy()
    return x.flip(-1)


def reverse_complement(
    codes: ArrayLike,
    conservation: Optional[ArrayLike] = None,
    targets: Optional[ArrayLike] = None,
) -> Tuple[ArrayLike, Optional[ArrayLike], Optional[ArrayLike]]:
    """Reverse-complement a window: sequence, conservation and target bins move together.

    Works on numpy arrays and torch tensors alike; the position axis is always the last one.

    Args:
        codes: (..., length) uint8 base codes.
        conservation: (..., length) per-base values, or None; reversed.
        targets: (..., tracks, bins) binned targets or predictions, or None; reversed along bins.
            With length a multiple of the bin size, bin ``i`` of the reverse strand covers the same
            bases as bin ``bins - 1 - i`` of the forward strand.

    Returns:
        (codes, conservation, targets) of the reverse strand, Nones passed through.
    """
    rc_codes = _flip(_complement(codes))
    rc_cons = None if conservation is None else _flip(conservation)
    rc_targets = None if targets is None else _flip(targets)
    return rc_codes, rc_cons, rc_targets


def one_hot(codes: "torch.Tensor", dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """uint8 codes (batch, length) -> one-hot (batch, 4, length); N (and any code > 3) is all zero.

    Run it on the compute device: moving codes costs 1 byte a base, a float one-hot 16.
    """
    import torch

    dtype = dtype or torch.float32
    table = torch.zeros(5, 4, dtype=dtype, device=codes.device)
    table[:4] = torch.eye(4, dtype=dtype, device=codes.device)
    return table[codes.long().clamp_(max=4)].transpose(1, 2)


def input_channels(conservation: str) -> int:
    """Number of model input channels for a conservation mode (4 one-hot + 1 if a channel)."""
    if conservation not in CONSERVATION_MODES:
        raise ValueError(f"conservation mode must be one of {CONSERVATION_MODES}, not {conservation!r}")
    return 5 if conservation == "channel" else 4


def model_inputs(
    codes: "torch.Tensor",
    conservation: "torch.Tensor | None",
    mode: str = "channel",
    dtype: "torch.dtype | None" = None,
) -> "torch.Tensor":
    """Build the model's input tensor from codes and conservation, on their device.

    Args:
        codes: (batch, length) uint8 base codes.
        conservation: (batch, length) phastCons-like scores in [0, 1] (missing = 0), or None
            (treated as all zero).
        mode: ``channel`` -> one-hot plus conservation as a fifth channel (our default);
            ``scale`` -> one_hot * exp(conservation), the published Epiformer's form (4 channels);
            ``none`` -> one-hot alone.

    Returns:
        (batch, 4 or 5, length) float tensor.
    """
    return inputs_from_one_hot(one_hot(codes, dtype=dtype), conservation, mode)


def inputs_from_one_hot(x: "torch.Tensor", conservation: "torch.Tensor | None", mode: str = "channel") -> "torch.Tensor":
    """:func:`model_inputs` from a one-hot (batch, 4, length) tensor, differentiably: gradients
    with respect to ``x`` are what attribution methods need."""
    import torch

    if mode == "none":
        return x
    if conservation is None:
        conservation = torch.zeros((x.shape[0], x.shape[2]), dtype=x.dtype, device=x.device)
    cons = conservation.to(device=x.device, dtype=x.dtype).unsqueeze(1)
    if mode == "scale":
        return x * torch.exp(cons)
    if mode == "channel":
        return torch.cat([x, cons], dim=1)
    raise ValueError(f"conservation mode must be one of {CONSERVATION_MODES}, not {mode!r}")
