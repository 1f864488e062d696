"""Projection and prediction heads: lightly's where they exist, plus the small per-layer distillation predictor.

The contrastive projection MLP is lightly's ``SimCLRProjectionHead`` (Linear-BN-ReLU-Linear-BN), the same one the
SimCLR baseline uses, so the two methods differ only in what they add. :class:`Predictor` is the BYOL-style
Linear-BN-ReLU-Linear MLP (lightly's ``BYOLPredictionHead``) with an explicit typed signature; the art method puts
one on each distilled student layer to map its pooled features into the teacher's embedding space.
"""

from __future__ import annotations

from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from torch import Tensor, nn

__all__ = ["BYOLPredictionHead", "BYOLProjectionHead", "Predictor", "SimCLRProjectionHead"]


class Predictor(nn.Module):
    """Linear-BN-ReLU-Linear MLP ``(B, in_dim) -> (B, out_dim)`` (BYOL's predictor shape).

    Args:
        in_dim: input width (e.g. the channels of a pooled intermediate map).
        hidden: hidden width.
        out_dim: output width (the teacher embedding's width).

    Raises:
        ValueError: a non-positive width.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        if min(in_dim, hidden, out_dim) < 1:
            raise ValueError(f"widths must be >= 1, got in_dim={in_dim}, hidden={hidden}, out_dim={out_dim}")
        self.net = BYOLPredictionHead(in_dim, hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        out: Tensor = self.net(x)
        return out
