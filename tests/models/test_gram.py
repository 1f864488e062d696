"""GramHead / gram_matrix against loop references, plus the properties a real channel Gram must have."""

import math

import pytest
import torch

from ssl_art.models.gram import GramHead, gram_matrix, signed_sqrt, triu_flatten


def naive_gram(f):
    b, c, h, w = f.shape
    g = torch.zeros(b, c, c, dtype=torch.float64)
    for n in range(b):
        for i in range(c):
            for j in range(c):
                s = 0.0
                for y in range(h):
                    for x in range(w):
                        s += float(f[n, i, y, x]) * float(f[n, j, y, x])
                g[n, i, j] = s / (h * w)
    return g


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 6, 3, 3), (3, 2, 1, 7)])
def test_gram_matches_loop(shape):
    torch.manual_seed(0)
    f = torch.randn(shape)
    torch.testing.assert_close(gram_matrix(f).double(), naive_gram(f), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 8, 5, 5), (2, 16, 3, 7)])
def test_gram_symmetric_psd(shape):
    torch.manual_seed(1)
    g = gram_matrix(torch.randn(shape))
    torch.testing.assert_close(g, g.transpose(1, 2))
    assert torch.linalg.eigvalsh(g.double()).min() >= -1e-5


def test_gram_is_channel_gram_not_token_attention():
    """C x C whatever the spatial size; a token-token map would be HW x HW and change with resolution."""
    head = GramHead([8, 16], rank=4, out_dim=6)
    for hw in (3, 7):
        maps = [torch.randn(2, 8, hw, hw), torch.randn(2, 16, hw + 1, hw + 1)]
        assert [tuple(g.shape) for g in head.grams(maps)] == [(2, 4, 4), (2, 4, 4)]
        assert head.descriptor(maps).shape == (2, 2 * 4 * 5 // 2)
        assert head(maps).shape == (2, 6)
    assert gram_matrix(torch.randn(2, 5, 9, 11)).shape == (2, 5, 5)


def test_gram_invariant_to_spatial_shuffle():
    """Style statistics discard layout: permuting pixels leaves G unchanged."""
    f = torch.randn(2, 4, 5, 6)
    perm = torch.randperm(30)
    shuffled = f.flatten(2)[:, :, perm].reshape(2, 4, 5, 6)
    torch.testing.assert_close(gram_matrix(f), gram_matrix(shuffled))


def test_triu_and_signed_sqrt():
    g = torch.tensor([[[1.0, -4.0], [-4.0, 9.0]]])
    assert triu_flatten(g).tolist() == [[1.0, -4.0, 9.0]]
    out = signed_sqrt(torch.tensor([4.0, -9.0, 0.0]), eps=0.0)
    assert out.tolist() == [2.0, -3.0, 0.0]


def naive_descriptor(head, maps):
    """Loop reference: explicit 1x1 projection, Gram, upper triangle, signed sqrt, L2 norm, concatenation."""
    out = []
    for n in range(maps[0].shape[0]):
        row = []
        for conv, m in zip(head.reduce, maps):
            w = conv.weight[:, :, 0, 0].detach().double()  # (r, C)
            f = m[n].double().flatten(1)  # (C, HW)
            p = w @ f  # (r, HW)
            r = p.shape[0]
            vals = []
            for i in range(r):
                for j in range(i, r):
                    gij = float((p[i] * p[j]).sum()) / p.shape[1]
                    vals.append(math.copysign(math.sqrt(abs(gij) + 1e-8), gij) if gij != 0 else 0.0)
            norm = math.sqrt(sum(v * v for v in vals))
            row += [v / norm for v in vals]
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("rank", [2, 5])
def test_descriptor_matches_reference(rank):
    torch.manual_seed(2)
    head = GramHead([6, 3], rank=rank, out_dim=4)
    maps = [torch.randn(3, 6, 4, 4), torch.randn(3, 3, 2, 5)]
    torch.testing.assert_close(head.descriptor(maps).double(), naive_descriptor(head, maps), rtol=1e-4, atol=1e-5)


def test_gram_head_gradients_reach_projections():
    head = GramHead([4, 4], rank=3, out_dim=5)
    maps = [torch.randn(4, 4, 3, 3, requires_grad=True), torch.randn(4, 4, 2, 2, requires_grad=True)]
    head(maps).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert all(m.grad is not None and torch.isfinite(m.grad).all() for m in maps)


def test_gram_fp32_under_autocast():
    f = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, gram_matrix(f))


def test_gram_head_validates():
    with pytest.raises(ValueError):
        GramHead([], rank=4)
    with pytest.raises(ValueError):
        GramHead([4], rank=0)
    with pytest.raises(ValueError, match="4 maps|2 maps|built for"):
        GramHead([4, 4], rank=2).grams([torch.randn(1, 4, 2, 2)])
    with pytest.raises(ValueError):
        gram_matrix(torch.randn(2, 3, 4))
