"""Learning-rate schedule: linear warm-up from 0, then cosine decay to ``min_ratio`` of the peak."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Steps ``0 .. warmup_steps - 1`` ramp linearly to 1 (step 0 already gets ``1 / warmup_steps``);
    the remaining steps up to ``total_steps`` follow half a cosine down to ``min_ratio``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

