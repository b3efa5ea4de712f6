"""What every family's prepared (inference-only) form is built from: eval BatchNorm as an affine
map, the in-place GELU, and :class:`PreparedTrunk`, the base of each family's fast trunk."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from epiformer_cli.model.config import ModelConfig


def bn_affine(bn: nn.BatchNorm1d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as (scale, shift), each (channels,) float64: y = x * scale + shift."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place, returning ``x``; in-place avoids allocating (and page-faulting)
    a new buffer."""
    return torch._C._nn.gelu_(x)


class PreparedTrunk(ABC):
    """A family's transformer and head prepared for inference (weights folded and converted once).

    ``trunk(z)``: z (batch, n_bins, d_model) tower output in the trunk's dtype -> (batch, n_tracks,
    out_bins) float32. Subclasses set ``config`` and define :meth:`transformer` and :meth:`head`;
    :meth:`cropped_rows` and :meth:`tracks` are the crop and the softplus every head shares.
    """

    config: ModelConfig

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.transformer(z))

    @abstractmethod
    def transformer(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, n_bins, d_model) -> (batch, n_bins, d_model), the residual stream after the last layer."""

    @abstractmethod
    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_bins, d_model) -> (batch, n_tracks, out_bins) float32, non-negative."""

    def cropped_rows(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_bins, d) -> (batch * out_bins, d): the bins the head predicts."""
        b, length, d = x.shape
        c = self.config.crop_bins
        return x[:, c:length - c].reshape(-1, d)

    def tracks(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        """Head outputs (batch * out_bins, n_tracks) before softplus -> (batch, n_tracks, out_bins) float32."""
        cfg = self.config
        return F.softplus(y.float()).view(batch, cfg.out_bins, cfg.n_tracks).transpose(1, 2).contiguous()
