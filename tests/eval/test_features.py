"""Feature extraction: eval mode + no grad, order and indices kept, bad samples counted, embedding choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ssl_art.eval.features import extract, extract_features
from ssl_art.methods.base import PretrainMethod


class _Toy(PretrainMethod):
    default_embedding = "fused"

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Dropout(0.9))
        self.seen_training: list[bool] = []
        self.seen_grad: list[bool] = []

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        self.seen_training.append(self.training)
        self.seen_grad.append(torch.is_grad_enabled())
        pooled = self.backbone(x)
        return {"pooled": pooled, "fused": pooled * 2}


@dataclass
class _Batch:
    views: list[Tensor]
    targets: Tensor
    indices: Tensor
    bad: list[tuple[Any, ...]] = field(default_factory=list)


def _images(n: int) -> Tensor:
    return torch.randn(n, 3, 2, 2, generator=torch.Generator().manual_seed(n))


def test_extract_from_batches_counts_bad_and_restores_mode() -> None:
    method = _Toy().train()
    imgs = _images(7)
    loader = [
        _Batch([imgs[:4]], torch.tensor([0, 1, 2, -1]), torch.tensor([0, 1, 2, 3])),
        _Batch([imgs[4:]], torch.tensor([1, 1, 0]), torch.tensor([5, 6, 7]), bad=[(4, "truncated", "x.jpg")]),
    ]
    out = extract(method, loader, embedding="pooled", progress=False)
    assert method.training  # restored
    assert method.seen_training == [False, False] and method.seen_grad == [False, False]
    method.eval()
    expected = method.backbone(imgs).detach().numpy()
    np.testing.assert_allclose(out.feats, expected, atol=1e-6)  # dropout off during extraction
    np.testing.assert_array_equal(out.targets, [0, 1, 2, -1, 1, 1, 0])
    np.testing.assert_array_equal(out.indices, [0, 1, 2, 3, 5, 6, 7])
    assert out.n_bad == 1 and out.feats.dtype == np.float32


def test_extract_features_tuples_and_default_embedding() -> None:
    method = _Toy()
    imgs = _images(5)
    loader = [(imgs[:2], torch.tensor([0, 1])), (imgs[2:], torch.tensor([1, 0, 1]))]
    feats, targets, indices = extract_features(method, loader, embedding="auto", progress=False)
    method.eval()
    np.testing.assert_allclose(feats, 2 * method.backbone(imgs).detach().numpy(), atol=1e-6)  # 'fused'
    np.testing.assert_array_equal(indices, np.arange(5))
    np.testing.assert_array_equal(targets, [0, 1, 1, 0, 1])


def test_extract_errors() -> None:
    with pytest.raises(ValueError, match="have \\['fused', 'pooled'\\]"):
        extract(_Toy(), [(_images(2), torch.tensor([0, 1]))], embedding="gram", progress=False)
    with pytest.raises(ValueError, match="no readable sample"):
        extract(_Toy(), [], progress=False)
