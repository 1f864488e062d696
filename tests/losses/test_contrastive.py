"""InfoNCE against a naive NT-Xent written with loops, plus properties."""

import math

import pytest
import torch

from ssl_art.losses.contrastive import InfoNCE


def naive_ntxent(a, b, t):
    """SimCLR NT-Xent: 2B anchors, positive = the other view, negatives = the other 2B - 2 embeddings."""
    z = torch.cat([a, b]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = a.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -(float(z[i] @ z[pos]) / t - math.log(denom))
    return total / (2 * n)


@pytest.mark.parametrize("b, d", [(2, 3), (5, 8), (16, 4)])
@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_matches_naive(b, d, t):
    torch.manual_seed(b * d)
    a, c = torch.randn(b, d), torch.randn(b, d)
    assert float(InfoNCE(t)(a, c)) == pytest.approx(naive_ntxent(a, c, t), rel=1e-5, abs=1e-5)


def test_aligned_pairs_minimise():
    """Identical, mutually orthogonal views give a lower loss than random pairs; invariant to positive scaling."""
    loss = InfoNCE(0.1)
    e = torch.eye(8)
    assert loss(e, e) < loss(e, torch.randn(8, 8))
    torch.testing.assert_close(loss(e, e), loss(3 * e, 0.5 * e))


def test_validation():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(0.0)
    with pytest.raises(ValueError, match="at least 2"):
        InfoNCE()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="equal shape"):
        InfoNCE()(torch.randn(3, 4), torch.randn(3, 5))
