"""NT-Xent / InfoNCE between two views, used on content and on Gram style embeddings alike.

A thin typed wrapper over lightly's ``NTXentLoss`` (SimCLR's normalised-temperature cross entropy, with negatives
gathered across ranks through lightly's ``GatherLayer`` when ``gather_distributed`` is set and a process group
exists). On the two views' Gram style embeddings the same objective keeps other images' styles apart, whereas the
MSE between views used by earlier "Gram" implementations is minimised by a constant embedding and collapses.
"""

from __future__ import annotations

from lightly.loss import NTXentLoss
from torch import Tensor, nn

__all__ = ["InfoNCE"]


class InfoNCE(nn.Module):
    """Symmetric NT-Xent between two views (Chen et al. 2020), averaged over the ``2B`` anchors.

    Args:
        temperature: softmax temperature, > 0.
        gather_distributed: use negatives from every rank (no-op in a single process).

    Raises:
        ValueError: non-positive temperature.
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.ntxent = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Loss between ``(B, D)`` embeddings of view a and view b (row ``i`` of both is the same image).

        Raises:
            ValueError: shapes differ or the batch has fewer than 2 rows (no negatives).
        """
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(f"expected two (B, D) tensors of equal shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
        if z_a.shape[0] < 2:
            raise ValueError("a contrastive loss needs at least 2 images per batch (there are no negatives)")
        loss: Tensor = self.ntxent(z_a, z_b)
        return loss
