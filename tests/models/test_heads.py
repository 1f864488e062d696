"""Heads: lightly re-exports and the per-layer distillation Predictor."""

import pytest
import torch
from lightly.models.modules import heads as lightly_heads

from ssl_art.models.heads import BYOLPredictionHead, Predictor, SimCLRProjectionHead


def test_reexports_are_lightly():
    assert SimCLRProjectionHead is lightly_heads.SimCLRProjectionHead
    assert BYOLPredictionHead is lightly_heads.BYOLPredictionHead


@pytest.mark.parametrize("in_dim, hidden, out_dim", [(8, 16, 4), (32, 8, 32)])
def test_predictor_shape_and_grad(in_dim, hidden, out_dim):
    p = Predictor(in_dim, hidden, out_dim)
    x = torch.randn(5, in_dim, requires_grad=True)
    y = p(x)
    assert y.shape == (5, out_dim)
    y.sum().backward()
    assert x.grad is not None and all(q.grad is not None for q in p.parameters())


def test_predictor_validation():
    with pytest.raises(ValueError):
        Predictor(0, 4, 4)
