"""Soft-voting ensembles of fine-tuned checkpoints: a (weighted) mean of their class probabilities.

Members must share the first head's class list (same label column, same label map); weights are normalised to sum
to 1, and ``val`` weighting uses each member's stored validation score, so a weak member counts less without being
dropped. The mean of probabilities (not logits) is the classic soft vote (Kuncheva 2004).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def soft_vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of ``M`` probability matrices ``(N, C)`` -> ``(N, C)``.

    Raises:
        ValueError: for no members, mismatched shapes, or negative / all-zero weights.
    """
    if not probs:
        raise ValueError("soft_vote needs at least one member")
    shape = probs[0].shape
    if any(p.shape != shape for p in probs):
        raise ValueError(f"ensemble members disagree on shape: {[p.shape for p in probs]}")
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(probs) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(probs)} non-negative weights with a positive sum, got {list(w)}")
    w = w / w.sum()
    return np.tensordot(w, np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axes=1).astype(np.float32)


def member_weights(val_scores: Sequence[float], weighting: str) -> list[float]:
    """``uniform`` -> all 1; ``val`` -> the members' val scores (NaN counts as 0)."""
    if weighting == "uniform":
        return [1.0] * len(val_scores)
    if weighting == "val":
        return [0.0 if not np.isfinite(s) else float(s) for s in val_scores]
    raise ValueError(f"ensemble weighting must be val or uniform, got '{weighting}'")
