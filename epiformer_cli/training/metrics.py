"""Validation metrics accumulated over batches: per-track Pearson r of log(x + 1) over all bins.

Only sufficient statistics are kept (float64 sums), so metrics over any number of windows cost no
memory, and the statistics of several processes add up exactly (all-reduce, then compute).
"""

from __future__ import annotations

from typing import List

import torch


class PearsonAccumulator:
    """Per-track Pearson r of ``log(pred + 1)`` vs ``log(target + 1)`` over every bin seen, plus the
    mean Poisson loss per bin.

    ``update(pred, target)`` takes (batch, tracks, bins); :meth:`pearson` returns (tracks,) float64.
    """

    # rows of ``stats``: n, sum x, sum y, sum xx, sum yy, sum xy, sum poisson loss
    def __init__(self, n_tracks: int) -> None:
        self.stats = torch.zeros(7, n_tracks, dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = pred.detach().to("cpu", torch.float64)
        target = target.detach().to("cpu", torch.float64)
        x = torch.log1p(pred).transpose(0, 1).reshape(pred.shape[1], -1)
        y = torch.log1p(target).transpose(0, 1).reshape(pred.shape[1], -1)
        nll = (pred - target * torch.log(pred + 1e-7)).transpose(0, 1).reshape(pred.shape[1], -1)
        self.stats += torch.stack([
            torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64),
            x.sum(1), y.sum(1), (x * x).sum(1), (y * y).sum(1), (x * y).sum(1), nll.sum(1),
        ])

    def pearson(self) -> torch.Tensor:
        n, sx, sy, sxx, syy, sxy, _ = self.stats
        n = n.clamp(min=1)
        cov = sxy / n - sx * sy / n**2
        vx = (sxx / n - (sx / n) ** 2).clamp(min=0)
        vy = (syy / n - (sy / n) ** 2).clamp(min=0)
        denom = torch.sqrt(vx * vy)
        return torch.where(denom > 0, cov / denom.clamp(min=1e-300), torch.zeros_like(cov))

    def loss(self) -> float:
        """Mean Poisson NLL per bin and track (the training loss's ``poisson`` form)."""
        n = self.stats[0].sum().clamp(min=1)
        return float(self.stats[6].sum() / n)

    def summary(self, tracks: List[str]) -> dict:
        """``{"loss", "pearson" (mean over tracks), "pearson_by_track": {name: r}}``."""
        r = self.pearson()
        return {
            "loss": self.loss(),
            "pearson": float(r.mean()),
            "pearson_by_track": {name: float(v) for name, v in zip(tracks, r)},
        }
