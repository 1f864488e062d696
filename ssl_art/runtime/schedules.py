"""Learning-rate and EMA-momentum schedules as pure functions of the global step (or of training progress).

Pure functions (no scheduler objects) make resume trivial: the step number is the whole state, so a resumed run
sets exactly the value an uninterrupted run would have (MAE's per-iteration ``adjust_learning_rate`` idea). They sit
in a leaf so the engine, fine-tuning and the methods (an EMA teacher's momentum) share them without importing each
other.
"""

from __future__ import annotations

import math

__all__ = ["cosine_momentum", "cosine_schedule", "scaled_lr"]


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


def cosine_momentum(progress: float, start: float, end: float) -> float:
    """EMA momentum at ``progress`` in ``[0, 1]``: ``start`` at 0, ``end`` at 1, half-cosine in between (BYOL)."""
    p = min(max(progress, 0.0), 1.0)
    return end - (end - start) * (1.0 + math.cos(math.pi * p)) / 2.0
