"""Gated head with a shared trunk: the trunk runs once, the remaining stages only on routed rows, and the measured
FLOPs equal cheap + routed rows of the rest; outputs match a naive per-image SHMNet routing (hard: fused, easy but
unsure: expensive alone, easy: cheap); the stage-1 reward and budget term count fall-backs; calibration respects the
budget with the rule the config names."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import timm
import torch
from torch import Tensor, nn

from ssl_art.config import GateCfg
from ssl_art.finetune.compute import count_flops
from ssl_art.finetune.gate_train import BranchCache, calibrate, fit_gate, gate_step_loss, simulate, train_stage1
from ssl_art.finetune.model import ModelSpec, build_cheap, build_classifier, build_from_spec, build_gated
from ssl_art.finetune.policy import MovingAverageBaseline
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


def naive(g: GatedTwoBranch, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SHMNet per image: the selector says hard -> both branches, fused; easy but the cheap branch's max probability
    below the threshold -> the expensive branch alone; easy -> the cheap branch. Returns logits, routed, fallback."""
    outs, routed, fallback = [], [], []
    for i in range(len(x)):
        h = g.trunk(x[i : i + 1])
        cf, cl = g.cheap_head(h)
        hard = bool(g.hard_logit(cf, cl) > g.decision_bias)
        p_max = float(torch.softmax(cl[0], 0).max())
        if hard:
            ef, el = g.rest(h)
            w = g.alpha * torch.sigmoid(
                g.fusion(torch.cat([cf, ef, torch.tensor([[p_max]]), torch.softmax(el, 1).amax(1, keepdim=True)], 1))
            )
            z = (1 - w) * cl + w * el
        elif p_max < float(g.threshold):
            z = g.rest(h)[1]
        else:
            z = cl
        outs.append(z[0])
        routed.append(hard or p_max < float(g.threshold))
        fallback.append(not hard and p_max < float(g.threshold))
    return torch.stack(outs), torch.tensor(routed), torch.tensor(fallback)


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
        ref, ref_routed, _ = naive(g, x)
    assert torch.equal(out.routed, ref_routed)
    assert torch.allclose(out.logits, ref, atol=1e-5)
    assert torch.all(out.weight[~out.routed] == 0)
    assert torch.all((out.weight[out.routed] > 0) & (out.weight[out.routed] <= 0.8))


def test_fallback_rows_get_the_expensive_branch_alone() -> None:
    g, trunk, cheap, rest = make()
    g.eval()
    torch.manual_seed(5)
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        h = trunk(x)
        cf, cl = cheap(h)
        logit, conf = g.hard_logit(cf, cl), confidence(cl)
    g.decision_bias.fill_(float(torch.quantile(logit, 0.7)))  # ~30% hard
    g.threshold.fill_(float(torch.quantile(conf, 0.5)))  # half of the rows are unsure
    rest.rows = 0
    with torch.no_grad():
        out = g(x)
        ref, ref_routed, ref_fb = naive(g, x)
        el = rest(h)[1]
    assert ref_fb.sum() > 0 and (out.action.sum() > 0) and (~ref_routed).sum() > 0  # all three kinds present
    assert torch.equal(out.fallback, ref_fb) and torch.equal(out.routed, ref_routed)
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits[ref_fb], el[ref_fb])  # expensive logits alone, not fused
    assert torch.all(out.weight[ref_fb] == 1) and torch.all(out.weight[~ref_routed] == 0)
    logits, routed = simulate(g, BranchCache(cf, cl, *rest(h), torch.zeros(64, dtype=torch.long)))
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)  # the cached path routes identically
    assert torch.equal(routed, ref_routed)


def test_stage1_reward_and_budget_count_fallbacks() -> None:
    g, _, _, _ = make(threshold=0.6)
    c = random_cache(200, 3)
    cfg = GateCfg(cost=0.3, budget=0.2)
    torch.manual_seed(11)
    _, m = gate_step_loss(g, c, MovingAverageBaseline(0.9), cfg)
    # reference, per image, with the same Bernoulli draws
    with torch.no_grad():
        logit = g.hard_logit(c.cf, c.cl)
        fused, _ = g.fuse(c.cf, c.cl, c.ef, c.el)
    torch.manual_seed(11)
    action = torch.bernoulli(torch.sigmoid(logit)).bool()
    p_max = torch.softmax(c.cl, 1).amax(1)
    rewards, expensive = [], []
    for i in range(len(c.y)):
        unsure = bool(p_max[i] < 0.6)
        z = fused[i] if action[i] else (c.el[i] if unsure else c.cl[i])
        ran = bool(action[i]) or unsure
        rewards.append(float(int(z.argmax()) == int(c.y[i])) - 0.3 * ran)
        expensive.append(ran)
    assert any(e and not a for e, a in zip(expensive, action.tolist()))  # there are fall-backs
    assert m["reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-6)
    assert m["routed"] == pytest.approx(sum(expensive) / len(expensive))
    p = torch.sigmoid(logit)
    frac = float((p + (1 - p) * (p_max < 0.6).float()).mean())
    assert m["budget"] == pytest.approx(max(frac - 0.2, 0.0) ** 2, rel=1e-5)


def test_shmnet_calibration_keeps_the_fallback_and_spends_the_rest_of_the_budget() -> None:
    g, _, _, _ = make()
    val = random_cache(100, 1)
    conf = confidence(val.cl)
    th = float(torch.quantile(conf, 0.15))  # ~15% fall back at this threshold
    res = calibrate(g, val, 0.4, "shmnet", th)
    logits, routed = simulate(g, val)
    assert float(g.threshold) == pytest.approx(th) and res["calibration"] == "shmnet"
    assert int(routed.sum()) <= 40 and res["within_budget"]
    assert res["val_fallback_fraction"] > 0 and res["val_selector_fraction"] > 0
    assert res["val_expensive_fraction"] == pytest.approx(float(routed.float().mean()))
    # a threshold whose fall-backs alone exceed the budget is kept and reported, never bent
    res = calibrate(g, val, 0.4, "shmnet", float(torch.quantile(conf, 0.6)))
    assert not res["within_budget"] and res["rule_name"] == "shmnet/fallback_only"
    assert res["val_selector_fraction"] == 0
    with pytest.raises(ValueError, match="gate.calibration"):
        calibrate(g, val, 0.4, "nope")


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
    res = calibrate(g, val, budget, "best", 0.9)
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


def test_calibration_at_exactly_the_budget_is_not_reported_over_it(caplog: pytest.LogCaptureFixture) -> None:
    # 63 of 210 routed is the budget 0.3 exactly; float32(63 / 210) > 0.3 once warned "over the budget"
    g, _, _, _ = make(threshold=0.9)
    val = random_cache(210, 1)
    with caplog.at_level(logging.WARNING, logger="ssl_art.finetune.gate_train"):
        res = calibrate(g, val, 0.3, "selector", 0.9)
    assert res["within_budget"] and res["val_expensive_fraction"] == pytest.approx(0.3)
    assert not [r for r in caplog.records if "over the budget" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="ssl_art.finetune.gate_train"):
        res = calibrate(g, val, 0.3, "shmnet", 0.99)  # the fall-backs alone exceed it: that is still reported
    assert not res["within_budget"] and any("over the budget" in r.getMessage() for r in caplog.records)


def test_stage1_trains_under_the_fallback_the_rule_deploys() -> None:
    cfg = GateCfg(stage1_epochs=3, stage1_batch_size=64, budget=0.4, fallback_threshold=0.9)
    train, val = random_cache(256, 0), random_cache(100, 1)
    # selector: deployed without fall-backs, so stage 1's reward and budget term saw none either
    g, _, _, _ = make(threshold=0.9)
    hist, res = fit_gate(g, train, val, replace(cfg, calibration="selector"))
    assert res["stage1_fallback_threshold"] == 0.0 and all(h["fallback"] == 0.0 for h in hist)
    assert res["val_fallback_fraction"] == 0.0
    # shmnet: exactly stage 1 at the configured fall-back, then calibration (the order before fit_gate)
    g1, _, _, _ = make(threshold=0.9)
    g2, _, _, _ = make(threshold=0.9)
    torch.manual_seed(5)
    hist1, res1 = fit_gate(g1, train, val, replace(cfg, calibration="shmnet"))
    torch.manual_seed(5)
    hist2 = train_stage1(g2, train, replace(cfg, calibration="shmnet"))
    res2 = calibrate(g2, val, 0.4, "shmnet", 0.9)
    assert hist1 == hist2 and res1["val_top1"] == res2["val_top1"] and min(h["fallback"] for h in hist1) > 0
    for a, b in zip(g1.state_dict().values(), g2.state_dict().values()):
        assert torch.equal(a, b)
    # best: both trainings, the better one on val is the model kept
    g3, _, _, _ = make(threshold=0.9)
    _, res3 = fit_gate(g3, train, val, replace(cfg, calibration="best"))
    assert set(res3["stage1_val_top1"]) == {"0.9", "0"}
    assert res3["val_top1"] == pytest.approx(max(res3["stage1_val_top1"].values()))
    logits, _ = simulate(g3, val)
    assert res3["val_top1"] == pytest.approx(float((logits.argmax(1) == val.y).float().mean()))
