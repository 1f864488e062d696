"""REINFORCE for the gate: surrogate gradient vs the per-sample formula, and vs the analytic policy gradient."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_art.finetune.policy import MovingAverageBaseline, budget_penalty, reinforce_loss, routing_reward


def naive_grad(logits: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, b: float) -> torch.Tensor:
    """d/ds of -mean((r-b) log pi(a)) for a Bernoulli(sigmoid(s)) policy: -(r-b)(a - sigmoid(s)) / B, per row."""
    out = torch.empty_like(logits)
    for i in range(len(logits)):
        p = 1.0 / (1.0 + math.exp(-float(logits[i])))
        out[i] = -(float(rewards[i]) - b) * (float(actions[i]) - p) / len(logits)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surrogate_gradient_matches_formula(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.bernoulli(torch.full((7,), 0.5, dtype=torch.float64), generator=g)
    r = torch.randn(7, generator=g, dtype=torch.float64)
    b = 0.3
    reinforce_loss(s, a, r, b).backward()
    assert torch.allclose(s.grad, naive_grad(s.detach(), a, r, b), atol=1e-12)


def test_monte_carlo_gradient_matches_analytic_on_toy_problem() -> None:
    """Single state, reward 1.0 for a=1 and 0.2 for a=0: dE[r]/ds = sigmoid'(s) * (1.0 - 0.2)."""
    torch.manual_seed(0)
    s0 = 0.4
    n = 200_000
    s = torch.full((n,), s0, dtype=torch.float64, requires_grad=True)
    a = torch.bernoulli(torch.sigmoid(s.detach()))
    r = torch.where(a.bool(), 1.0, 0.2).double()
    baseline = MovingAverageBaseline(0.0)
    b = baseline.update(r)  # mean reward: unbiased variance reduction
    reinforce_loss(s, a, r, b).backward()
    estimate = -s.grad.sum()  # ascent direction on the shared parameter
    p = 1 / (1 + math.exp(-s0))
    analytic = p * (1 - p) * (1.0 - 0.2)
    assert float(estimate) == pytest.approx(analytic, rel=0.03)


def test_policy_learns_to_route_when_it_pays() -> None:
    """Gradient ascent on the estimator moves P(hard) up where the expensive branch is worth its cost."""
    torch.manual_seed(0)
    s = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([s], lr=2.0)
    baseline = MovingAverageBaseline(0.9)
    for _ in range(200):
        logits = s.expand(64)
        a = torch.bernoulli(torch.sigmoid(logits.detach()))
        correct = a.bool()  # expensive always right, cheap always wrong
        r = routing_reward(correct, a, cost=0.3)
        loss = reinforce_loss(logits, a, r, baseline.update(r))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.sigmoid(s).item() > 0.9


def test_baseline_and_budget() -> None:
    b = MovingAverageBaseline(0.5)
    assert b.update(torch.tensor([1.0, 3.0])) == 2.0  # first batch: its own mean
    assert b.update(torch.tensor([4.0])) == 2.0  # returns the value before folding in
    assert b.value == pytest.approx(3.0)
    with pytest.raises(ValueError):
        MovingAverageBaseline(1.0)
    within = torch.full((10,), -5.0)  # P(hard) ~ 0.0067 < 0.4
    assert float(budget_penalty(within, 0.4)) == 0.0
    over = torch.zeros(10)  # P(hard) = 0.5
    assert float(budget_penalty(over, 0.4)) == pytest.approx(0.01)
    assert torch.equal(
        routing_reward(torch.tensor([True, False]), torch.tensor([1.0, 0.0]), 0.25), torch.tensor([0.75, 0.0])
    )
