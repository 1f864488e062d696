"""MultiScaleFusion: shapes, attention weights that exist and sum to 1, and a hand-written attention reference."""

import pytest
import torch
import torch.nn.functional as F

from ssl_art.models.fusion import MultiScaleFusion, gem


def _maps(b=3, channels=(4, 8, 16), sizes=(8, 4, 2)):
    return [torch.randn(b, c, s, s) for c, s in zip(channels, sizes)]


@pytest.mark.parametrize("dim, heads", [(16, 1), (16, 4), (24, 3)])
def test_shapes_and_weights(dim, heads):
    fusion = MultiScaleFusion([4, 8, 16], dim=dim, heads=heads)
    assert fusion.last_weights.shape == (0, 3)  # defined before any forward
    maps = _maps()
    out, w = fusion.forward_with_weights(maps)
    assert out.shape == (3, dim) and w.shape == (3, 3)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3))
    assert (w >= 0).all()
    torch.testing.assert_close(fusion.last_weights, w.detach())
    assert not fusion.last_weights.requires_grad
    torch.testing.assert_close(fusion(maps), out)


def naive_fusion(fusion, maps):
    """Reference: pool, project, LayerNorm, add scale embedding, then per-head softmax(q k^T / sqrt(d)) by hand."""
    tok = torch.stack([p(m.mean(dim=(2, 3))) for p, m in zip(fusion.proj, maps)], dim=1)
    tok = F.layer_norm(tok, (fusion.dim,), fusion.token_norm.weight, fusion.token_norm.bias) + fusion.scale_embed
    attn = fusion.attn
    d, h = fusion.dim, attn.num_heads
    wq, wk, wv = attn.in_proj_weight.split(d)
    bq, bk, bv = attn.in_proj_bias.split(d)
    q = fusion.query[0, 0] @ wq.T + bq  # (d,)
    k = tok @ wk.T + bk  # (B, S, d)
    v = tok @ wv.T + bv
    hd = d // h
    b, s = tok.shape[:2]
    outs, weights = [], torch.zeros(b, s)
    for n in range(b):
        heads_out = []
        for i in range(h):
            sl = slice(i * hd, (i + 1) * hd)
            scores = torch.stack([(q[sl] * k[n, j, sl]).sum() / hd**0.5 for j in range(s)])
            a = scores.softmax(0)
            weights[n] += a / h
            heads_out.append((a[:, None] * v[n, :, sl]).sum(0))
        outs.append(attn.out_proj(torch.cat(heads_out)))
    out = torch.stack(outs)
    return F.layer_norm(out, (d,), fusion.out_norm.weight, fusion.out_norm.bias), weights


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_matches_reference(heads):
    torch.manual_seed(0)
    fusion = MultiScaleFusion([4, 8, 16], dim=8, heads=heads).eval()
    with torch.no_grad():  # make the query/scale embeddings non-trivial so the weights are not uniform
        fusion.query.normal_()
        fusion.scale_embed.normal_()
    maps = _maps()
    out, w = fusion.forward_with_weights(maps)
    ref_out, ref_w = naive_fusion(fusion, maps)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(w, torch.full_like(w, 1 / 3))


def test_every_parameter_gets_gradient():
    for pool in ("avg", "gem"):
        fusion = MultiScaleFusion([4, 8], dim=8, heads=2, pool=pool)
        maps = [torch.rand(3, 4, 4, 4), torch.rand(3, 8, 2, 2)]
        fusion(maps).pow(2).sum().backward()
        missing = [n for n, p in fusion.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"{pool}: no gradient for {missing}"


def test_gem():
    x = torch.rand(2, 3, 4, 4) + 0.1
    torch.testing.assert_close(gem(x, 1.0), x.mean(dim=(2, 3)))
    ref = x.pow(3).mean(dim=(2, 3)).pow(1 / 3)
    torch.testing.assert_close(gem(x, 3.0), ref)
    assert (gem(x, 50.0) <= x.amax(dim=(2, 3)) + 1e-5).all() and (gem(x, 50.0) >= gem(x, 1.0)).all()


def test_validation():
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiScaleFusion([4], dim=10, heads=3)
    with pytest.raises(ValueError, match="avg, gem"):
        MultiScaleFusion([4], dim=8, heads=2, pool="max")
    with pytest.raises(ValueError):
        MultiScaleFusion([], dim=8, heads=2)
    with pytest.raises(ValueError, match="built for 2"):
        MultiScaleFusion([4, 8], dim=8, heads=2)([torch.randn(1, 4, 2, 2)])
