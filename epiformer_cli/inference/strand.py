"""The one strand view of a window: forward or reverse complement, moved by ``shift`` bp. It owns
what a view changes: its inputs (codes, conservation, or a differentiable one-hot), where an edit
of the forward window lands in it, and how its prediction maps back onto the forward strand.

Every test-time average (``predict``, both variant fast paths, ISM, gradients) builds its reverse
strand here, so the strands cannot disagree between commands.

Coordinates are window offsets: 0-based, half-open, on the forward strand of the unshifted window
(an input row holds ``context`` extra bases on each side of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple, TypeVar

import numpy as np

from epiformer_cli.data.encoding import reverse_complement

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

ArrayLike = TypeVar("ArrayLike", np.ndarray, "torch.Tensor")


@dataclass(frozen=True)
class View:
    """One test-time view of a window: inputs moved by ``shift`` bp (|shift| <= the rows' context),
    then reverse-complemented if ``reverse``.

    Works on numpy arrays and torch tensors alike; positions are always the last axis.
    """

    shift: int = 0
    reverse: bool = False

    def _window(self, x: ArrayLike, context: int, length: Optional[int]) -> ArrayLike:
        """Positions ``[context + shift, context + shift + length)`` of the last axis (``length``
        defaults to the row minus the context on both sides); the row itself when that is all."""
        if length is None:
            length = x.shape[-1] - 2 * context
        start = context + self.shift
        if not 0 <= start <= x.shape[-1] - length:
            raise ValueError(f"a shift of {self.shift} bp needs rows with a context of at least "
                             f"{abs(self.shift)} bp on each side, got {context}")
        if start == 0 and length == x.shape[-1]:
            return x  # no copy and no extra autograd node for the common unshifted view
        return x[..., start:start + length]

    def inputs(self, codes: ArrayLike, cons: Optional[ArrayLike] = None, context: int = 0,
               length: Optional[int] = None) -> Tuple[ArrayLike, Optional[ArrayLike]]:
        """The view's codes and conservation.

        Args:
            codes: (..., length + 2 context) uint8 base codes (A=0 C=1 G=2 T=3 N=4).
            cons: per-base conservation of the same shape, or None (passed through).
            context: extra bases on each side of the window in the rows (at least |shift|).
            length: window length in bases (default: the rows minus the context).

        Returns:
            (codes, cons), each (..., length): the window moved by ``shift``, reverse-complemented
            (codes complemented and both reversed) for a reverse view.
        """
        codes = self._window(codes, context, length)
        cons = None if cons is None else self._window(cons, context, length)
        if self.reverse:
            codes, cons, _ = reverse_complement(codes, cons)
        return codes, cons

    def one_hot(self, x: "torch.Tensor", cons: "Optional[torch.Tensor]" = None, context: int = 0,
                length: Optional[int] = None) -> "Tuple[torch.Tensor, Optional[torch.Tensor]]":
        """:meth:`inputs` for an already one-hot input, differentiably (what attributions need).

        Args:
            x: (batch, 4, length + 2 context) one-hot (or any per-base scores of A, C, G, T).
            cons: (batch, length + 2 context) conservation, or None.

        Returns:
            (x, cons) of the view, (batch, 4, length) and (batch, length).
        """
        x = self._window(x, context, length)
        cons = None if cons is None else self._window(cons, context, length)
        if self.reverse:
            # the complement of A,C,G,T is T,G,C,A: the channel order reversed
            x = x.flip(-2).flip(-1)
            cons = None if cons is None else cons.flip(-1)
        return x, cons

    def mirror(self, offset, width: int, alt: Optional[ArrayLike], length: int):
        """Where an edit of the forward window lands in the view's input.

        The edit replaces window offsets ``[offset, offset + width)`` with ``alt``: a substitution
        when ``alt`` has ``width`` bases, an indel window otherwise. Editing the view's input at
        the returned place gives the view of the edited window, exactly: for a substitution at any
        shift, for an indel on the whole unshifted window (both sides then have
        ``length - width + m`` bases).

        Args:
            offset: window offset (int, or an integer array of several edits of one ``width``).
            width: bases of the reference the edit replaces.
            alt: (..., m) uint8 codes written there, or None (only the offset is mapped).
            length: the window length in bases (``seq_len``).

        Returns:
            (offset, alt) in the view's input: shifted; on the reverse strand the span is mirrored
            (``length - offset - width``) and ``alt`` reverse-complemented.
        """
        if self.shift:
            offset = offset - self.shift
        if not self.reverse:
            return offset, alt
        return length - offset - width, None if alt is None else reverse_complement(alt)[0]

    def outputs_back(self, y: ArrayLike) -> ArrayLike:
        """A prediction of the view's input, (..., out_bins) -> on the forward strand's bin order.

        A reverse view's bins are reversed (with the window a whole number of bins, bin ``i`` of
        the reverse strand covers bin ``out_bins - 1 - i`` of the forward one). Shifts move no bin:
        they stay under half a bin and predictions are averaged on the unshifted grid, as in training.
        """
        if not self.reverse:
            return y
        if isinstance(y, np.ndarray):
            return y[..., ::-1].copy()
        return y.flip(-1)
