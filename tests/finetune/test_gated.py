"""Gated two-branch head: hard routing really skips the expensive branch; outputs match a naive per-image loop."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import Tensor, nn

from ssl_art.finetune.gate_train import BranchCache, GateSettings, calibrate, simulate, train_stage1
from ssl_art.models.gated import EarlyStages, GatedTwoBranch, confidence

K, D = 4, 6


class Branch(nn.Module):
    """Toy branch ``(B, 3, H, W) -> (features (B, D), logits (B, K))`` that counts calls and rows."""

    def __init__(self, seed: int, scale: float):
        super().__init__()
        torch.manual_seed(seed)
        self.f = nn.Linear(3, D)
        self.h = nn.Linear(D, K)
        self.scale = scale
        self.calls, self.rows = 0, 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        self.rows += len(x)
        f = self.f(x.mean(dim=(2, 3)))
        return f, self.scale * self.h(f)


def make(threshold: float = 0.0) -> tuple[GatedTwoBranch, Branch, Branch]:
    cheap, exp = Branch(0, 3.0), Branch(1, 1.0)
    return GatedTwoBranch(cheap, exp, D, D, hidden_dim=8, threshold=threshold, alpha=0.8), cheap, exp


def naive(g: GatedTwoBranch, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: decide, then run the expensive branch on that single image if routed."""
    outs, routed = [], []
    for i in range(len(x)):
        cf, cl = g.cheap(x[i : i + 1])
        logit = g.hard_logit(cf, cl)
        r = bool(logit > g.decision_bias) or bool(confidence(cl) < g.threshold)
        if r:
            ef, el = g.expensive(x[i : i + 1])
            z, _ = g.fuse(cf, cl, ef, el)
        else:
            z = cl
        outs.append(z[0])
        routed.append(r)
    return torch.stack(outs), torch.tensor(routed)


def test_routing_skips_expensive_rows_and_matches_naive() -> None:
    g, cheap, exp = make(threshold=0.0)
    g.eval()
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        logit = g.hard_logit(*cheap(x))
    g.decision_bias.fill_(float(logit.median()))  # about half the rows are "hard"
    exp.calls = exp.rows = 0
    with torch.no_grad():
        out = g(x)
    n_routed = int(out.routed.sum())
    assert 0 < n_routed < 16
    assert exp.calls == 1 and exp.rows == n_routed  # only the routed rows went through the expensive branch
    with torch.no_grad():
        ref, ref_routed = naive(g, x)
    assert torch.equal(out.routed, ref_routed)
    assert torch.allclose(out.logits, ref, atol=1e-5)
    assert torch.all(out.weight[~out.routed] == 0)
    assert torch.all((out.weight[out.routed] > 0) & (out.weight[out.routed] <= 0.8))


def test_nothing_routed_means_no_expensive_call() -> None:
    g, _, exp = make(threshold=0.0)
    g.eval()
    g.decision_bias.fill_(1e9)
    with torch.no_grad():
        out = g(torch.randn(8, 3, 8, 8))
    assert exp.calls == 0 and not out.routed.any()


def test_low_confidence_falls_back() -> None:
    g, _, exp = make(threshold=1.0)  # every cheap prediction is below confidence 1 -> all fall back
    g.eval()
    g.decision_bias.fill_(1e9)
    with torch.no_grad():
        out = g(torch.randn(5, 3, 8, 8))
    assert out.routed.all() and not out.action.any() and exp.rows == 5


def test_training_samples_routing() -> None:
    g, _, _ = make()
    g.train()
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    a = g(x).action
    b = g(x).action
    assert not torch.equal(a, b)  # sampled, not thresholded


def random_cache(n: int, seed: int) -> BranchCache:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    el = torch.randn(n, K, generator=g) + 3 * nn.functional.one_hot(y, K)  # expensive mostly right
    cl = torch.randn(n, K, generator=g) * 2
    return BranchCache(torch.randn(n, D, generator=g), cl, torch.randn(n, D, generator=g), el, y)


@pytest.mark.parametrize("budget", [0.1, 0.4])
def test_stage1_and_calibration_respect_budget(budget: float) -> None:
    g, _, _ = make(threshold=0.9)
    train_stage1(g, random_cache(256, 0), GateSettings(epochs=5, budget=budget, batch_size=64))
    val = random_cache(100, 1)
    res = calibrate(g, val, budget)
    _, routed = simulate(g, val)
    assert int(routed.sum()) <= int(budget * len(routed) + 1e-9)
    assert res["val_expensive_fraction"] == pytest.approx(float(routed.float().mean()))
    assert float(g.threshold) <= 0.9


def test_early_stages_is_pruned_and_cheaper() -> None:
    full = timm.create_model("resnet10t", num_classes=0)
    early = EarlyStages(full, 2)
    n_full = sum(p.numel() for p in full.parameters())
    n_early = sum(p.numel() for p in early.parameters())
    assert n_early < 0.1 * n_full
    assert early(torch.randn(2, 3, 32, 32)).shape == (2, early.dim)
    with pytest.raises(ValueError, match="cheap_stages"):
        EarlyStages(full, 99)
