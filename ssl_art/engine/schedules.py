"""Learning-rate, weight-decay and EMA-momentum schedules as pure functions of the global step.

Pure functions (no scheduler objects) make resume trivial: the step number is the whole state, so a resumed run
sets exactly the value an uninterrupted run would have (MAE's per-iteration ``adjust_learning_rate`` idea).
"""

from __future__ import annotations

import math


def cosine_schedule(step: int, total_steps: int, base: float, final: float, warmup_steps: int = 0) -> float:
    """Linear warmup from 0 to ``base`` over ``warmup_steps``, then cosine from ``base`` to ``final``.

    Args:
        step: current global step (0-based).
        total_steps: steps in the whole run; values past it return ``final``.
        base: peak value reached at the end of warmup.
        final: value at ``total_steps``.
        warmup_steps: length of the linear warmup.

    Returns:
        The scheduled value at ``step``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if step >= total_steps:
        return final
    span = max(1, total_steps - warmup_steps)
    progress = (step - warmup_steps) / span
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


def scaled_lr(base_lr: float, batch_size: int, accum_steps: int = 1, world_size: int = 1) -> float:
    """Linear scaling rule: ``lr = base_lr * effective_batch / 256`` (Goyal et al. 2017)."""
    return base_lr * batch_size * accum_steps * world_size / 256.0
