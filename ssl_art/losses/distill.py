"""Teacher -> student multi-layer self-distillation with negative cosine similarity.

Several student layers each get a small predictor (``models/heads.py``) whose output must match the EMA teacher's
*final* embedding of the *other* view (BYOL's cross-view regression, applied at several depths as in deep
supervision / self-distillation). The teacher side is detached (stop-gradient), so the student is pulled towards
the teacher and never the reverse. Pairing each student view with a teacher view of the *same* image but a
*different* augmentation is the point; pairing by mismatched indices (the published bug) silently trains on noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_art.losses.pairs import cross_view_pairs

__all__ = ["DistillLoss"]


class DistillLoss(nn.Module):
    """Weighted sum over layers of the negative cosine between student predictions and the other view's teacher.

    For views ``i != j`` and layers ``l``: ``loss = mean_{i != j} sum_l w_l * mean_b(-cos(p[i][l][b], t[j][b]))``
    with ``w`` normalised to sum to 1, so the loss lies in ``[-1, 1]`` and the method's ``w_distill`` alone sets its
    scale.

    Args:
        layer_weights: one non-negative weight per distilled layer, not all zero.

    Raises:
        ValueError: empty, negative or all-zero weights.
    """

    weights: Tensor

    def __init__(self, layer_weights: Sequence[float]):
        super().__init__()
        w = [float(x) for x in layer_weights]
        if not w or any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"layer_weights must be non-negative with a positive sum, got {list(layer_weights)}")
        self.register_buffer("weights", torch.tensor(w) / sum(w), persistent=False)

    def forward(
        self, student: Sequence[Sequence[Tensor]], teacher: Sequence[Tensor], teacher_views: Sequence[int] | None = None
    ) -> Tensor:
        """Distillation loss.

        Args:
            student: ``student[i][l]`` is the ``(B, D)`` prediction of layer ``l`` for view ``i``.
            teacher: the teacher's final ``(B, D)`` embeddings (detached here), of the views named by
                ``teacher_views``.
            teacher_views: the view index of each ``teacher`` entry (default ``0, 1, ...``: one per view). Every
                student view is paired with every teacher entry of a *different* view.

        Returns:
            Scalar loss.

        Raises:
            ValueError: fewer than 2 views, no cross-view pair, or layer counts that do not match the weights.
        """
        pairs = cross_view_pairs(len(student), len(teacher), teacher_views)
        n_layers = len(self.weights)
        for i, preds_i in enumerate(student):
            if len(preds_i) != n_layers:
                raise ValueError(f"view {i}: expected {n_layers} layer predictions, got {len(preds_i)}")
        targets = [F.normalize(t.detach(), dim=1) for t in teacher]
        preds = [[F.normalize(p, dim=1) for p in preds_i] for preds_i in student]
        total = torch.zeros((), device=targets[0].device)
        for i, k in pairs:
            for w, p in zip(self.weights, preds[i]):
                total = total + w * -(p * targets[k].to(p.dtype)).sum(dim=1).mean()
        return total / len(pairs)
