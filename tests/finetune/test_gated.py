"""Gated head with a shared trunk: the trunk runs once, the remaining stages only on routed rows, and the measured
FLOPs equal cheap + routed rows of the rest; outputs match a naive per-image loop; calibration respects the budget."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import Tensor, nn

from ssl_art.config import GateCfg
from ssl_art.finetune.compute import count_flops
from ssl_art.finetune.gate_train import BranchCache, calibrate, simulate, train_stage1
from ssl_art.finetune.model import ModelSpec, build_cheap, build_classifier, build_from_spec, build_gated
from ssl_art.models.gated import ExitPool, GatedTwoBranch, confidence, split_stages

K, D = 4, 6


class Counting(nn.Module):
    """Counts calls and rows of the wrapped module."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls, self.rows = 0, 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        self.rows += len(x)
        out: tuple[Tensor, Tensor] = self.inner(x)
        return out


class ToyHead(nn.Module):
    """``(B, 3, H, W) -> (features (B, D), logits (B, K))``."""

    def __init__(self, seed: int, scale: float):
        super().__init__()
        torch.manual_seed(seed)
        self.f, self.h, self.scale = nn.Linear(3, D), nn.Linear(D, K), scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.f(x.mean(dim=(2, 3)))
        return f, self.scale * self.h(f)


class ToyTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.calls = nn.Conv2d(3, 3, 1), 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return torch.tanh(self.conv(x))


def make(threshold: float = 0.0) -> tuple[GatedTwoBranch, ToyTrunk, Counting, Counting]:
    torch.manual_seed(2)
    trunk, cheap, rest = ToyTrunk(), Counting(ToyHead(0, 3.0)), Counting(ToyHead(1, 1.0))
    g = GatedTwoBranch(trunk, cheap, rest, D, D, hidden_dim=8, threshold=threshold, alpha=0.8)
    return g, trunk, cheap, rest


def naive(g: GatedTwoBranch, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: trunk, cheap head, decide, then the rest on that image's trunk map only if routed."""
    outs, routed = [], []
    for i in range(len(x)):
        h = g.trunk(x[i : i + 1])
        cf, cl = g.cheap_head(h)
        r = bool(g.hard_logit(cf, cl) > g.decision_bias) or bool(confidence(cl) < g.threshold)
        if r:
            ef, el = g.rest(h)
            z, _ = g.fuse(cf, cl, ef, el)
        else:
            z = cl
        outs.append(z[0])
        routed.append(r)
    return torch.stack(outs), torch.tensor(routed)


def test_routing_runs_rest_only_on_routed_rows_and_matches_naive() -> None:
    g, trunk, cheap, rest = make(threshold=0.0)
    g.eval()
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        logit = g.hard_logit(*cheap(trunk(x)))
    v = torch.sort(logit).values
    g.decision_bias.fill_(float(v[7] + v[8]) / 2)  # half the rows are "hard", no logit near the bias
    trunk.calls = cheap.calls = cheap.rows = rest.calls = rest.rows = 0
    with torch.no_grad():
        out = g(x)
    n_routed = int(out.routed.sum())
    assert 0 < n_routed < 16
    assert trunk.calls == 1 and cheap.rows == 16  # the shared trunk and the exit run once for the whole batch
    assert rest.calls == 1 and rest.rows == n_routed  # the expensive part sees only the routed rows
    with torch.no_grad():
        ref, ref_routed = naive(g, x)
    assert torch.equal(out.routed, ref_routed)
    assert torch.allclose(out.logits, ref, atol=1e-5)
    assert torch.all(out.weight[~out.routed] == 0)
    assert torch.all((out.weight[out.routed] > 0) & (out.weight[out.routed] <= 0.8))


def test_fusion_off_gives_expensive_logits() -> None:
    g, trunk, _, rest = make(threshold=1.0)  # everything falls back
    g.eval()
    g.fusion_on.fill_(0.0)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        out = g(x)
        _, el = rest(trunk(x))
    assert out.routed.all() and torch.allclose(out.logits, el) and torch.all(out.weight == 1)


def test_nothing_routed_means_no_expensive_call() -> None:
    g, _, _, rest = make(threshold=0.0)
    g.eval()
    g.decision_bias.fill_(1e9)
    with torch.no_grad():
        out = g(torch.randn(8, 3, 8, 8))
    assert rest.calls == 0 and not out.routed.any()


def test_training_samples_routing() -> None:
    g, _, _, _ = make()
    g.train()
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    assert not torch.equal(g(x).action, g(x).action)  # sampled, not thresholded


def test_exit_pool_matches_mean_std() -> None:
    pool = ExitPool(5, 3).eval()
    h = torch.randn(2, 5, 4, 6)
    z = pool.proj(h)
    ref = torch.stack(
        [torch.cat([z[b].reshape(3, -1).mean(1), z[b].reshape(3, -1).var(1, unbiased=False).sqrt()]) for b in range(2)]
    )
    assert torch.allclose(pool(h), ref, atol=1e-5) and pool.dim == 6


def spec(**kw: object) -> ModelSpec:
    base = dict(
        kind="gated", backbone="resnet10t", n_intermediates=2, image_size=32, columns=["y"], classes={"y": list("abc")}
    )
    return ModelSpec(**(base | kw))  # type: ignore[arg-type]


def test_split_stages_is_exact_and_rejects_unsupported() -> None:
    m = timm.create_model("resnet10t", num_classes=0).eval()
    trunk, rest = split_stages(m, 3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rest(trunk(x)), m(x), atol=1e-5)
    assert all(any(p is q for q in m.parameters()) for p in trunk.parameters())  # shared, not copied
    with pytest.raises(ValueError, match="cheap_stages"):
        split_stages(m, 5)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=2)
    with pytest.raises(ValueError, match="cheap_backbone"):
        split_stages(vit, 1)


def test_shared_trunk_flops_are_cheap_plus_routed_rest() -> None:
    torch.manual_seed(0)
    s = spec()
    expensive = build_classifier(s)
    g = build_gated(s, build_cheap(s, expensive), expensive).eval()
    assert g.trunk[0] is expensive.timm_model.conv1  # type: ignore[index]
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        h, cf, cl = g.cheap(x)
        logit = g.hard_logit(cf, cl)
        assert torch.allclose(g.expensive(x)[1], expensive(x)[0], atol=1e-5)  # same network as the plain classifier
    g.threshold.fill_(0.0)
    v = torch.sort(logit, descending=True).values
    g.decision_bias.fill_(float(v[2] + v[3]) / 2)  # route exactly 3 of 8
    with torch.no_grad():
        assert int(g(x).routed.sum()) == 3
    gated = count_flops(lambda t: g(t, sample=False), x)
    cheap = count_flops(lambda t: g.hard_logit(*g.cheap(t)[1:]), x)
    rest3 = count_flops(lambda t: g.fuse(cf[:3], cl[:3], *g.rest(t)), h[:3])
    always = count_flops(g.expensive, x)
    assert gated == cheap + rest3  # reference: pieces counted separately
    assert gated < always
    assert always == count_flops(expensive, x)


def test_gated_checkpoint_roundtrip() -> None:
    s = spec()
    expensive = build_classifier(s)
    g = build_gated(s, build_cheap(s, expensive), expensive)
    g.threshold.fill_(0.3)
    fresh = build_from_spec(s)
    fresh.load_state_dict(g.state_dict(), strict=True)
    assert float(fresh.threshold) == pytest.approx(0.3)  # type: ignore[arg-type]
    sep = spec(cheap_backbone="resnet10t")  # the separate-CNN option still builds
    g2 = build_from_spec(sep)
    assert isinstance(g2, GatedTwoBranch) and isinstance(g2.trunk, nn.Identity)


def random_cache(n: int, seed: int) -> BranchCache:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    el = torch.randn(n, K, generator=g) + 3 * nn.functional.one_hot(y, K)  # expensive mostly right
    cl = torch.randn(n, K, generator=g) * 2
    cf = torch.randn(n, D, generator=g)
    cf[:, 0] = 2.0 * (cl.argmax(1) != y).float() - 1.0  # the cheap features reveal when the cheap branch is wrong
    return BranchCache(cf, cl, torch.randn(n, D, generator=g), el, y)


@pytest.mark.parametrize("budget", [0.1, 0.4])
def test_stage1_and_calibration_respect_budget(budget: float) -> None:
    g, _, _, _ = make(threshold=0.9)
    train_stage1(g, random_cache(256, 0), GateCfg(stage1_epochs=5, budget=budget, stage1_batch_size=64))
    val = random_cache(100, 1)
    res = calibrate(g, val, budget)
    logits, routed = simulate(g, val)
    assert int(routed.sum()) <= int(budget * len(routed) + 1e-9)
    assert res["val_expensive_fraction"] == pytest.approx(float(routed.float().mean()))
    cands = [v for k, v in res.items() if k.startswith("val_top1/")]
    assert len(cands) >= 4 and res["val_top1"] == pytest.approx(max(cands))  # the best candidate on val was kept
    assert res["val_top1"] == pytest.approx(float((logits.argmax(1) == val.y).float().mean()))


def test_selector_learns_to_rank_cheap_errors() -> None:
    g, _, _, _ = make()
    train_stage1(g, random_cache(384, 0), GateCfg(stage1_epochs=12, stage1_batch_size=64, budget=1.0))
    val = random_cache(200, 1)
    with torch.no_grad():
        logit = g.hard_logit(val.cf, val.cl)
    wrong = val.cl.argmax(1) != val.y
    pos, neg = logit[wrong], logit[~wrong]
    auc = float((pos[:, None] > neg[None, :]).float().mean())
    assert auc > 0.9
