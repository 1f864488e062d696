"""Learnable Gram-matrix style head: channel correlations of intermediate maps -> a style embedding.

Gatys et al. (2016) showed that the channel Gram matrix ``G = F F^T / HW`` of a CNN feature map ``F`` (``C x HW``)
captures texture and style while discarding layout. Raw Gram matrices are large (``C^2``) and dominated by a few
channels, so each chosen layer first gets a learnable 1x1 projection to ``rank`` channels (``G`` is then
``rank x rank``, symmetric and positive semi-definite), its upper triangle (diagonal included) is taken, passed
through a signed square root and L2-normalised (the bilinear-pooling normalisation of Lin et al. 2015), the layers are
concatenated and an MLP maps them to the style embedding. This is a *channel* Gram (``C x C``), never a token-token
attention map (``HW x HW``), and it is trained contrastively (see ``losses/contrastive.py``), not with an MSE that
can collapse to a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GramHead", "gram_matrix", "signed_sqrt", "triu_flatten"]


def gram_matrix(f: Tensor) -> Tensor:
    """Channel Gram matrix ``G = F F^T / (H W)``, computed in float32 (also under autocast).

    Args:
        f: ``(B, C, H, W)`` feature map.

    Returns:
        ``(B, C, C)`` symmetric positive semi-definite matrices.

    Raises:
        ValueError: ``f`` is not 4-dimensional.
    """
    if f.ndim != 4:
        raise ValueError(f"gram_matrix expects a (B, C, H, W) map, got shape {tuple(f.shape)}")
    b, c, h, w = f.shape
    with torch.autocast(device_type=f.device.type, enabled=False):
        flat = f.float().reshape(b, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


def triu_flatten(g: Tensor) -> Tensor:
    """Upper triangle, diagonal included: ``(B, C, C) -> (B, C (C + 1) / 2)`` (row-major order)."""
    c = g.shape[-1]
    rows, cols = torch.triu_indices(c, c, device=g.device)
    return g[:, rows, cols]


def signed_sqrt(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``sign(x) * sqrt(|x| + eps)``; ``eps`` keeps the gradient finite at 0. Zeros stay 0 (sign(0) = 0)."""
    return torch.sign(x) * torch.sqrt(x.abs() + eps)


class GramHead(nn.Module):
    """Style embedding from the Gram matrices of one or more intermediate maps.

    Args:
        in_channels: channels ``C_l`` of each map the head receives, in the order they are passed to ``forward``.
        rank: channels ``r`` each map is projected to by a learnable 1x1 convolution (Gram is ``r x r``).
        out_dim: width of the style embedding.
        hidden_dim: MLP hidden width (default ``2 * out_dim``).

    Raises:
        ValueError: empty ``in_channels`` or non-positive sizes.
    """

    def __init__(self, in_channels: list[int], rank: int = 32, out_dim: int = 128, hidden_dim: int = 0):
        super().__init__()
        if not in_channels or any(c < 1 for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty list of positive ints, got {in_channels}")
        if rank < 1 or out_dim < 1 or hidden_dim < 0:
            raise ValueError(f"rank and out_dim must be >= 1 and hidden_dim >= 0, got {rank}, {out_dim}, {hidden_dim}")
        self.in_channels = list(in_channels)
        self.rank = rank
        self.out_dim = out_dim
        # no bias: a bias adds a constant direction that dominates every Gram entry
        self.reduce = nn.ModuleList(nn.Conv2d(c, rank, kernel_size=1, bias=False) for c in in_channels)
        self.descriptor_dim = len(in_channels) * rank * (rank + 1) // 2
        hidden = hidden_dim or 2 * out_dim
        self.mlp = nn.Sequential(
            nn.Linear(self.descriptor_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def grams(self, maps: list[Tensor]) -> list[Tensor]:
        """Per-layer Gram matrices of the projected maps.

        Args:
            maps: ``len(in_channels)`` tensors ``(B, C_l, H_l, W_l)``.

        Returns:
            ``(B, r, r)`` float32 matrices, one per layer.
        """
        if len(maps) != len(self.reduce):
            raise ValueError(f"GramHead built for {len(self.reduce)} maps, got {len(maps)}")
        return [gram_matrix(proj(m)) for proj, m in zip(self.reduce, maps)]

    def descriptor(self, maps: list[Tensor]) -> Tensor:
        """Normalised Gram descriptor before the MLP: ``(B, L * r (r + 1) / 2)``, each layer's block unit-norm."""
        parts = [F.normalize(signed_sqrt(triu_flatten(g)), dim=1) for g in self.grams(maps)]
        return torch.cat(parts, dim=1)

    def forward(self, maps: list[Tensor]) -> Tensor:
        """``maps`` (see :meth:`grams`) -> ``(B, out_dim)`` style embedding."""
        return self.mlp(self.descriptor(maps))
