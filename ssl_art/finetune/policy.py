"""REINFORCE for the gate's hard routing: a moving-average baseline, the surrogate loss and the reward.

The selector is a Bernoulli policy ``pi(a=1 | x) = sigmoid(s(x))`` (``a = 1``: run the expensive branch). Its
gradient is the score-function estimator ``E[(r - b) * grad log pi(a)]`` (Williams 1992), with ``b`` an
exponential moving average of past mean rewards to cut variance without bias. The reward trades accuracy against
compute, ``r = 1[prediction correct] - cost * a``, as in BlockDrop (Wu et al. 2018). The budget term
``relu(mean P(hard) - budget)**2`` keeps the expected expensive fraction under the target.
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


def routing_reward(correct: Tensor, action: Tensor, cost: float) -> Tensor:
    """``r = correct - cost * a``, each ``(B,)``."""
    return correct.float() - cost * action.float()


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


def budget_penalty(hard_logit: Tensor, budget: float) -> Tensor:
    """``relu(mean sigmoid(s) - budget)**2``: zero while the expected expensive fraction is within budget."""
    return torch.relu(torch.sigmoid(hard_logit).mean() - budget) ** 2
