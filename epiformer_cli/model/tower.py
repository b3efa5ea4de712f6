"""The convolutional tower every model family shares, and :class:`NetworkBase`, the base class of
every family's network: DNA (batch, in_channels, seq_len) pooled 2 ** 7 = 128x to (batch, n_bins,
d_model), input checks, and prediction from base codes.

Because every family has this tower, one fast tower (:mod:`~epiformer_cli.model.fast`) and one
incremental substitution tower (:mod:`~epiformer_cli.model.incremental`) serve them all.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from epiformer_cli.data.encoding import model_inputs
from epiformer_cli.model.config import ModelConfig


class PreActConv(nn.Module):
    """BatchNorm -> GELU -> Conv1d with "same" padding: (batch, c_in, L) -> (batch, c_out, L)."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(c_in)
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.gelu(self.norm(x)))


class ConvStage(nn.Module):
    """One halving of the tower: ``conv`` -> ``x + res(x)`` -> max-pool 2.

    (batch, c_in, L) -> (batch, c_out, L // 2). ``conv`` is a plain Conv1d in the stem and a
    pre-activation convolution (not residual) in the tower blocks; ``res`` is a pre-activation
    pointwise convolution added back to its input.
    """

    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.res = PreActConv(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x + self.res(x)
        return F.max_pool1d(x, 2)


class NetworkBase(nn.Module):
    """What every model family shares: the convolutional tower, input checks, ``predict_codes``.

    ``stem`` and the blocks of ``tower`` are :class:`ConvStage` s of one layout in every family
    (:meth:`conv_stages`); a family adds what runs on the tower's output (:meth:`tower_output`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.stem = ConvStage(
            nn.Conv1d(cfg.in_channels, cfg.stem_channels, cfg.stem_kernel, padding=cfg.stem_kernel // 2),
            cfg.stem_channels,
        )
        chans = (cfg.stem_channels,) + tuple(cfg.tower_channels)
        self.tower = nn.ModuleList(
            ConvStage(PreActConv(c_in, c_out, cfg.tower_kernel), c_out)
            for c_in, c_out in zip(chans[:-1], chans[1:])
        )

    def conv_stages(self) -> List[ConvStage]:
        """The tower's stages in order, the stem first (its ``conv`` a plain Conv1d, the others'
        a :class:`PreActConv`): what the fast and incremental towers are prepared from."""
        return [self.stem, *self.tower]

    def tower_output(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, seq_len) -> (batch, n_bins, d_model), after checking the shape."""
        cfg = self.config
        if x.dim() != 3 or x.shape[1] != cfg.in_channels or x.shape[2] != cfg.seq_len:
            raise ValueError(
                f"expected input (batch, {cfg.in_channels}, {cfg.seq_len}), got {tuple(x.shape)}"
            )
        x = self.stem(x)
        for block in self.tower:
            x = block(x)
        return x.transpose(1, 2)

    @torch.no_grad()
    def predict_codes(self, codes: torch.Tensor, conservation: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predict from uint8 base codes (batch, seq_len) and conservation (batch, seq_len) or None.

        Builds the input on the model's device with ``encoding.model_inputs`` and this model's
        conservation mode. Does not change train/eval mode: call ``.eval()`` first for inference.
        Returns (batch, n_tracks, out_bins).
        """
        param = next(self.parameters())
        codes = torch.as_tensor(codes).to(param.device)
        if conservation is not None:
            conservation = torch.as_tensor(conservation).to(param.device)
        return self(model_inputs(codes, conservation, self.config.conservation, dtype=param.dtype))

