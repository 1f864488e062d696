"""Local (multi-crop) views in the methods: every local view is paired with every global view (never with another
local), forwards run per view size, the teacher sees global views only."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from ssl_art.methods.art_ssl import ArtSSL
from ssl_art.methods.base import split_views, view_pairs
from ssl_art.methods.simclr import SimCLR
from ssl_art.models.backbone import Backbone

SMALL = dict(proj_hidden_dim=32, proj_out_dim=16, fusion_dim=16, fusion_heads=2, gram_rank=4, gram_out_dim=8)


def _views(b: int = 4, n_local: int = 3, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    glob = [torch.randn(b, 3, 32, 32, generator=g) for _ in range(2)]
    return glob + [torch.randn(b, 3, 16, 16, generator=g) for _ in range(n_local)]


def test_split_views_and_pairs() -> None:
    views = _views()
    glob, loc = split_views(views)
    assert len(glob) == 2 and len(loc) == 3
    assert view_pairs(2, 3) == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
    assert view_pairs(3, 0) == list(itertools.combinations(range(3), 2))  # no locals: every pair, as before
    with pytest.raises(ValueError, match="one size"):
        split_views(views[:3] + [torch.randn(4, 3, 8, 8)])


def test_simclr_loss_is_the_mean_over_global_and_global_local_pairs() -> None:
    torch.manual_seed(0)
    m = SimCLR(Backbone("resnet10t", n_intermediates=4, img_size=32), hidden_dim=32, out_dim=16)
    m.eval()  # batch-norm statistics of this batch only would differ between one and two forwards
    views = _views()
    loss = m.training_step(views, 0.0).loss
    with torch.no_grad():
        z = [m.projection_head(m.backbone(v)) for v in views]
    ref = NTXentLoss(temperature=0.2)
    pairs = [(0, 1)] + [(i, k) for i in range(2) for k in range(2, 5)]
    expected = sum(float(ref(z[i], z[j])) for i, j in pairs) / len(pairs)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)


def _art(**kw: object) -> ArtSSL:
    torch.manual_seed(0)
    m = ArtSSL(Backbone("resnet10t", n_intermediates=4, img_size=32), **{**SMALL, "queue_size": 16, **kw})
    with torch.no_grad():  # timm zero-inits each block's last BN, which zeroes that branch's gradients
        for mod in m.backbone.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.fill_(1.0)
    return m


def test_art_ssl_locals_reach_every_term_but_the_teacher_and_soft_positives() -> None:
    m = _art(teacher_views="all")
    seen: dict[str, object] = {}
    distill, soft, teacher = m.distill_loss.forward, m.soft_loss.forward, m.teacher.forward  # type: ignore[union-attr]

    def spy_distill(student, zt, t_views):  # type: ignore[no-untyped-def]
        seen["student"] = student
        return distill(student, zt, t_views)

    def spy_soft(zs, zt, t_views, update_queue=True):  # type: ignore[no-untyped-def]
        seen["soft_views"] = len(zs)
        return soft(zs, zt, t_views, update_queue=update_queue)

    def spy_teacher(x):  # type: ignore[no-untyped-def]
        seen["teacher_size"] = tuple(x.shape[-2:])
        return teacher(x)

    m.distill_loss.forward, m.soft_loss.forward, m.teacher.forward = spy_distill, spy_soft, spy_teacher  # type: ignore
    views = _views()
    out = m.training_step(views, 0.3)
    out.loss.backward()
    assert len(seen["student"]) == 5 and seen["soft_views"] == 2 and seen["teacher_size"] == (32, 32)  # type: ignore
    teacher_ids = {id(p) for p in m.teacher.parameters()}  # type: ignore[union-attr]
    student = [(n, p) for n, p in m.named_parameters() if id(p) not in teacher_ids]
    zero = [n for n, p in student if p.grad is None or not p.grad.any()]
    assert not zero, zero
    # a local's distillation prediction is the predictor on its own pooled stage features
    m.eval()
    m.training_step(views, 0.3)
    with torch.no_grad():
        feats = m.backbone.features(views[3])
        for k, (pred, layer) in enumerate(zip(m.predictors, m.distill_layers)):  # type: ignore[arg-type]
            ref = pred(F.adaptive_avg_pool2d(feats.intermediates[layer], 1).flatten(1))
            torch.testing.assert_close(seen["student"][3][k], ref, rtol=1e-4, atol=1e-5)  # type: ignore[index]


def test_art_ssl_ntxent_and_gram_average_the_same_pairs_as_simclr() -> None:
    m = _art(w_distill=0.0, w_soft=0.0)
    m.eval()
    views = _views()
    out = m.training_step(views, 0.0)
    with torch.no_grad():
        enc = m.content_encoder()
        z = [enc(v) for v in views]
        g = [m.gram_head([m.backbone.features(v).intermediates[i] for i in m.gram_layers]) for v in views]
    pairs = view_pairs(2, 3)
    ntxent = sum(float(m.ntxent(z[i], z[j])) for i, j in pairs) / len(pairs)
    gram = sum(float(m.gram_loss(g[i], g[j])) for i, j in pairs) / len(pairs)  # type: ignore[misc]
    assert out.metrics["loss/ntxent"] == pytest.approx(ntxent, rel=1e-4)
    assert out.metrics["loss/gram"] == pytest.approx(gram, rel=1e-4)
