"""REINFORCE for the gate's hard routing: a moving-average baseline, the surrogate loss and the reward.

The selector is a Bernoulli policy ``pi(a=1 | x) = sigmoid(s(x))`` (``a = 1``: run the expensive branch). Its
gradient is the score-function estimator ``E[(r - b) * grad log pi(a)]`` (Williams 1992), with ``b`` an
exponential moving average of past mean rewards to cut variance without bias. The reward trades accuracy against
compute, ``r = 1[prediction correct] - cost * 1[expensive ran]``, as in BlockDrop (Wu et al. 2018); the expensive
branch runs on hard rows *and* on SHMNet's fall-backs (easy rows the cheap branch is unsure of), so both pay the
cost. The budget term ``relu(E[expensive fraction] - budget)**2`` keeps the expected fraction of images reaching the
expensive branch, ``mean(P(hard) + (1 - P(hard)) * 1[fall-back if easy])``, under the target.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_art.models.gated import policy_log_prob


class MovingAverageBaseline:
    """``b <- m * b + (1 - m) * mean(r)``; the first update sets ``b`` to the first mean reward.

    Args:
        momentum: ``m`` in ``[0, 1)``.
    """

    def __init__(self, momentum: float = 0.9):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"baseline momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.value: float | None = None

    def update(self, rewards: Tensor) -> float:
        """Fold in a batch of rewards ``(B,)``; returns the baseline to use *for this batch* (before the update)."""
        mean = float(rewards.detach().float().mean())
        used = mean if self.value is None else self.value
        self.value = mean if self.value is None else self.momentum * self.value + (1.0 - self.momentum) * mean
        return used


def routing_reward(correct: Tensor, expensive: Tensor, cost: float) -> Tensor:
    """``r = correct - cost * expensive``, each ``(B,)``; ``expensive`` = the row reached the expensive branch."""
    return correct.float() - cost * expensive.float()


def reinforce_loss(hard_logit: Tensor, action: Tensor, reward: Tensor, baseline: float) -> Tensor:
    """Surrogate whose gradient is the REINFORCE estimate: ``-mean((r - b) * log pi(a))``.

    Args:
        hard_logit: ``(B,)`` selector logits (gradient flows here).
        action: ``(B,)`` sampled actions in ``{0, 1}``.
        reward: ``(B,)`` rewards (treated as constants).
        baseline: scalar baseline ``b``.
    """
    advantage = (reward.detach().float() - baseline).to(hard_logit.dtype)
    return -(advantage * policy_log_prob(hard_logit, action)).mean()


def expected_expensive(hard_logit: Tensor, low_confidence: Tensor | None = None) -> Tensor:
    """``(B,)`` probability that a row reaches the expensive branch: ``p + (1 - p) * low_confidence``.

    Args:
        hard_logit: selector logits, ``p = sigmoid(hard_logit)``.
        low_confidence: ``(B,)`` bool, rows that fall back when the selector calls them easy (``None``: none).
    """
    p = torch.sigmoid(hard_logit)
    if low_confidence is None:
        return p
    return p + (1.0 - p) * low_confidence.to(p.dtype)


def budget_penalty(hard_logit: Tensor, budget: float, low_confidence: Tensor | None = None) -> Tensor:
    """``relu(mean E[expensive] - budget)**2`` (:func:`expected_expensive`): zero while within budget."""
    return torch.relu(expected_expensive(hard_logit, low_confidence).mean() - budget) ** 2
