"""Collapse signal logged beside every pretraining loss: how spread out a batch of embeddings is.

A tensor-in, float-out statistic (no gradients), shared by every method so their ``emb_std`` metrics compare and the
engine can warn when representations collapse.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["embedding_std"]


def embedding_std(z: Tensor) -> float:
    """Collapse signal: mean per-dimension std of L2-normalised embeddings, times sqrt(D).

    About 1 for well-spread embeddings, near 0 when every image maps to the same point (Jing et al. 2022).

    Args:
        z: ``(B, D)`` embeddings (detached here).

    Returns:
        The signal; 0.0 for a batch of one.
    """
    zn = F.normalize(z.detach().float(), dim=1)
    return float(zn.std(dim=0).mean() * zn.shape[1] ** 0.5) if zn.shape[0] > 1 else 0.0
