"""Training losses on non-negative (softplus) predictions, shape (batch, tracks, bins)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from epiformer_cli.options import LOSSES

_EPS = 1e-7


def poisson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Poisson negative log-likelihood ``pred - target * log(pred)`` (rates, not log-rates).

    pred, target: (batch, tracks, bins), pred > 0. The constant ``log(target!)`` is left out.
    """
    return F.poisson_nll_loss(pred.float(), target.float(), log_input=False, full=False, eps=_EPS)


def poisson_multinomial_loss(pred: torch.Tensor, target: torch.Tensor, total_weight: float = 0.2) -> torch.Tensor:
    """Borzoi's loss: a multinomial NLL of the profile shape plus a Poisson NLL of the window total.

    Per (window, track): ``-sum_i t_i log(p_i / sum p) + total_weight * (P - T log P)`` with
    ``P = sum_i p_i``, ``T = sum_i t_i``, both divided by the number of bins; then the mean.
    """
    pred, target = pred.float(), target.float()
    bins = pred.shape[-1]
    total_pred = pred.sum(-1)
    total_true = target.sum(-1)
    poisson_total = (total_pred - total_true * torch.log(total_pred + _EPS)) / bins
    log_p = torch.log(pred + _EPS) - torch.log(total_pred + _EPS).unsqueeze(-1)
    multinomial = -(target * log_p).sum(-1) / bins
    return (multinomial + total_weight * poisson_total).mean()


def get_loss(name: str):
    """The loss function called ``name`` (one of :data:`LOSSES`)."""
    if name == "poisson":
        return poisson_loss
    if name == "poisson-multinomial":
        return poisson_multinomial_loss
    raise ValueError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}")
