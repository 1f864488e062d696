"""ArtSSL contracts: gradients, teacher EMA, optimizer effect, ablation switches, state_dict/resume, config mapping."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_art.config import PretrainConfig, config_from_dict
from ssl_art.methods.art_ssl import ArtSSL, from_config
from ssl_art.models.backbone import Backbone
from ssl_art.runtime.schedules import cosine_momentum

SMALL = dict(proj_hidden_dim=32, proj_out_dim=16, fusion_dim=16, fusion_heads=2, gram_rank=4, gram_out_dim=8)


def _method(seed=0, **kw):
    torch.manual_seed(seed)
    args = {**SMALL, "queue_size": 16, **kw}
    return ArtSSL(Backbone("resnet10t", n_intermediates=4, img_size=32), **args)


def _unzero_bn(m):
    """timm zero-inits each residual block's last BN (zero_init_last), which zeroes that branch's gradients."""
    with torch.no_grad():
        for mod in m.backbone.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.fill_(1.0)
    return m


def _views(b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 32, 32, generator=g) for _ in range(2)]


def test_step_metrics_and_embed():
    m = _method()
    out = m.training_step(_views(), 0.0)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    for key in ("loss/ntxent", "loss/gram", "loss/distill", "loss/soft", "ema_momentum", "emb_std"):
        assert key in out.metrics and math.isfinite(out.metrics[key]), key
    w = [out.metrics[f"fusion/w{s}"] for s in range(4)]
    assert sum(w) == pytest.approx(1.0, abs=1e-5)
    expected = sum(out.metrics[f"loss/{k}"] for k in ("ntxent", "gram", "distill", "soft"))  # all weights 1
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    emb = m.embed(torch.randn(3, 3, 32, 32))
    assert emb["pooled"].shape == (3, m.backbone.embed_dim)
    assert emb["fused"].shape == (3, 16) and emb["gram"].shape == (3, 8)
    assert m.default_embedding == "fused" and not emb["fused"].requires_grad


def test_every_student_parameter_gets_gradient_teacher_none():
    m = _unzero_bn(_method(fusion_pool="gem", teacher_views="all"))
    m.training_step(_views(), 0.3).loss.backward()
    teacher_ids = {id(p) for p in m.teacher.parameters()}
    missing = [n for n, p in m.named_parameters() if id(p) not in teacher_ids and p.grad is None]
    assert not missing, missing
    zero = [n for n, p in m.named_parameters() if id(p) not in teacher_ids and not p.grad.abs().sum() > 0]
    assert not zero, zero
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def test_teacher_closed_form_after_step_and_momentum_schedule():
    m = _method(ema_momentum=0.9, ema_momentum_end=1.0)
    t0 = [p.clone() for p in m.teacher.module.parameters()]
    with torch.no_grad():
        for p in m.content_encoder().parameters():
            p.add_(0.1)
    s = [p.detach().clone() for p in m.content_encoder().parameters()]
    m.after_optimizer_step(0.0)  # momentum 0.9 at progress 0
    for t, a, b in zip(m.teacher.module.parameters(), t0, s):
        torch.testing.assert_close(t, 0.9 * a + 0.1 * b)
    assert cosine_momentum(0.0, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_momentum(0.5, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine_momentum(1.0, 0.996, 1.0) == pytest.approx(1.0)
    assert m.training_step(_views(), 0.5).metrics["ema_momentum"] == pytest.approx(0.95)


def test_sgd_step_changes_weights_and_lowers_loss():
    """Catches the published 'no optimizer.step()' bug: one real step must move the student and lower the loss."""
    m = _unzero_bn(
        _method()
    ).eval()  # eval: BN running stats and a frozen queue make the loss a pure function of the weights
    views = _views(b=6)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05)
    before = [p.detach().clone() for p in params]
    loss0 = m.training_step(views, 0.0).loss
    opt.zero_grad()
    loss0.backward()
    opt.step()
    loss1 = m.training_step(views, 0.0).loss
    assert float(loss1.detach()) < float(loss0.detach())
    moved = sum(not torch.equal(a, p) for a, p in zip(before, params))
    assert moved == len(params)
    assert int(m.soft_loss.queue_len) == 0  # eval never enqueues


@pytest.mark.parametrize("teacher_views", ["all", "alternate"])
def test_distill_gets_per_view_predictions_and_teacher_views(teacher_views):
    """DistillLoss gets student[v] for every view v and the teacher embeddings with their true view indices."""
    m = _method(w_soft=0.0, teacher_views=teacher_views)
    seen = {}
    original = m.distill_loss.forward

    def spy(student, teacher, t_views):
        seen.update(student=student, teacher=teacher, t_views=list(t_views))
        return original(student, teacher, t_views)

    m.distill_loss.forward = spy
    views = _views()
    m.eval()
    m.training_step(views, 0.0)
    assert seen["t_views"] == ([0, 1] if teacher_views == "all" else [0])
    with torch.no_grad():
        for k, v in enumerate(seen["t_views"]):
            torch.testing.assert_close(seen["teacher"][k], m.teacher(views[v]))
        for v in range(2):
            feats = m.backbone.features(views[v])
            for k, (pred, layer) in enumerate(zip(m.predictors, m.distill_layers)):
                ref = pred(F.adaptive_avg_pool2d(feats.intermediates[layer], 1).flatten(1))
                torch.testing.assert_close(seen["student"][v][k], ref, rtol=1e-4, atol=1e-5)


def test_alternate_teacher_takes_views_in_turn():
    m = _method(w_distill=0.0, teacher_views="alternate")
    seen = []
    original = m.soft_loss.forward
    m.soft_loss.forward = lambda s, t, tv, update_queue: seen.append(list(tv)) or original(s, t, tv, update_queue)
    for _ in range(3):
        m.training_step(_views(), 0.0)
    assert seen == [[0], [1], [0]] and int(m.teacher_step) == 3
    m.eval()
    m.training_step(_views(), 0.0)  # evaluation does not advance the turn
    assert int(m.teacher_step) == 3 and "teacher_step" in m.state_dict()


@pytest.mark.parametrize(
    "kw, absent",
    [
        ({"w_gram": 0.0}, "loss/gram"),
        ({"w_distill": 0.0}, "loss/distill"),
        ({"w_soft": 0.0}, "loss/soft"),
        ({"w_ntxent": 0.0}, "loss/ntxent"),
        ({"fusion": False}, "fusion/w0"),
    ],
)
def test_each_part_switches_off(kw, absent):
    m = _method(**kw)
    out = m.training_step(_views(), 0.0)
    assert absent not in out.metrics and torch.isfinite(out.loss)
    if kw.get("fusion") is False:
        assert m.fusion is None and m.default_embedding == "pooled" and "fused" not in m.embed(_views()[0])


def test_no_teacher_without_teacher_terms():
    m = _method(w_distill=0.0, w_soft=0.0)
    assert m.teacher is None
    out = m.training_step(_views(), 0.0)
    assert "ema_momentum" not in out.metrics
    m.after_optimizer_step(0.5)  # no-op, must not fail


def test_validation():
    with pytest.raises(ValueError, match="gram.enabled"):
        _method(gram=False, w_gram=1.0)
    with pytest.raises(ValueError, match="at least one"):
        _method(w_ntxent=0.0, w_gram=0.0, w_distill=0.0, w_soft=0.0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        _method(distill_layers=(1, 4), distill_layer_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="one weight per distill layer"):
        _method(distill_layers=(2, 3), distill_layer_weights=(1.0,))
    with pytest.raises(ValueError, match="alternate, all"):
        _method(teacher_views="one")
    with pytest.raises(ValueError, match="2 views"):
        _method().training_step(_views()[:1], 0.0)


def test_state_dict_round_trip_restores_teacher_and_queue():
    m = _method(seed=0)
    views = _views()
    m.training_step(views, 0.0)  # fills the queue
    with torch.no_grad():
        for p in m.content_encoder().parameters():
            p.add_(0.01)
    m.teacher.update(m.content_encoder(), 0.5)  # make the teacher differ from both the student and a fresh copy
    state = {k: v.clone() for k, v in m.state_dict().items()}
    assert "soft_loss.queue" in state and "soft_loss.queue_ptr" in state
    assert any(k.startswith("teacher.module.backbone.") for k in state)
    assert any(k.startswith("backbone.model.") for k in state)  # backbone keys stay loadable by the backbone loader
    other = _method(seed=123)
    other.load_state_dict(state)
    differ = [k for k, v in other.state_dict().items() if not torch.equal(v, state[k])]
    assert not differ, differ
    nxt = _views(seed=9)
    torch.testing.assert_close(m.training_step(nxt, 0.5).loss, other.training_step(nxt, 0.5).loss)


def test_build_from_config():
    cfg = config_from_dict(
        PretrainConfig,
        {
            "method": "art_ssl",
            "data": {"image_size": 32},
            "model": {
                "backbone": "resnet10t",
                "proj_hidden_dim": 32,
                "proj_out_dim": 16,
                "fusion": {"enabled": True, "dim": 16, "heads": 2, "pool": "gem"},
                "gram": {"enabled": True, "layers": [1, 3], "rank": 4, "out_dim": 8},
            },
            "loss": {
                "w_gram": 0.5,
                "w_distill": 1.0,
                "w_soft": 0.0,
                "queue_size": 32,
                "distill_layers": [3],
                "distill_layer_weights": [1.0],
                "ema_momentum": 0.99,
                "teacher_views": "all",
            },
        },
    )
    m = from_config(cfg)
    assert m.fusion is not None and m.fusion.dim == 16 and m.fusion.pool == "gem"
    assert m.gram_head is not None and m.gram_head.in_channels == [m.backbone.channels[1], m.backbone.channels[3]]
    assert m.soft_loss is None and m.predictors is not None and len(m.predictors) == 1
    assert (m.w_gram, m.ema_start, m.teacher_views) == (0.5, 0.99, "all")
    out = m.training_step([torch.randn(4, 3, 32, 32) for _ in range(2)], 0.0)
    assert out.loss.isfinite() and set(out.metrics) >= {"loss/ntxent", "loss/gram", "loss/distill"}


def test_bf16_autocast_step_is_finite():
    m = _method(teacher_views="all")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.training_step(_views(), 0.0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(math.isfinite(v) for v in out.metrics.values())
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
