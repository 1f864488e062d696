"""Multi-scale attention fusion: one learned query attends over per-scale tokens of the backbone's maps.

Art style lives at several scales at once (brush strokes and texture in shallow layers, composition and content in
deep ones), so instead of keeping only the last stage each intermediate map is pooled (GAP, or GeM of Radenovic et
al. 2018), projected to a common width ``dim`` and tagged with a learned scale embedding, giving one token per scale.
A learned query then attends over those tokens (multi-head attention, as in the pooling-by-attention of Set
Transformer / CaiT class attention) and the result is the fused ``(B, dim)`` embedding used by the projection head
and by kNN/retrieval. The attention each sample puts on each scale is returned and kept in :attr:`last_weights` for
logging, so one can see which scales the model relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiScaleFusion", "gem"]

_POOLS = ("avg", "gem")


def gem(x: Tensor, p: Tensor | float = 3.0, eps: float = 1e-6) -> Tensor:
    """Generalised-mean pooling ``(mean(clamp(x, eps)^p))^(1/p)``: ``(B, C, H, W) -> (B, C)``.

    ``p = 1`` is average pooling, ``p -> inf`` max pooling. Inputs are clamped at ``eps`` (GeM assumes non-negative
    maps, e.g. CNN stages after a ReLU).
    """
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class MultiScaleFusion(nn.Module):
    """Fuse ``S`` intermediate maps into one ``(B, dim)`` vector with a learned attention query.

    Args:
        in_channels: channels ``C_s`` of each map, shallow to deep.
        dim: common token width (and output width); must be divisible by ``heads``.
        heads: attention heads.
        pool: ``avg`` (global average; projecting after pooling equals a 1x1 conv then pooling, at a fraction of the
            cost) or ``gem`` (learnable-exponent GeM per scale, then the projection).

    Raises:
        ValueError: empty ``in_channels``, ``dim`` not divisible by ``heads``, or an unknown ``pool``.
    """

    def __init__(self, in_channels: list[int], dim: int = 256, heads: int = 4, pool: str = "avg"):
        super().__init__()
        if not in_channels or any(c < 1 for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty list of positive ints, got {in_channels}")
        if heads < 1 or dim < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {', '.join(_POOLS)}; got '{pool}'")
        self.in_channels = list(in_channels)
        self.dim = dim
        self.pool = pool
        self.n_scales = len(in_channels)
        self.proj = nn.ModuleList(nn.Linear(c, dim) for c in in_channels)
        self.gem_p = nn.Parameter(torch.full((self.n_scales,), 3.0)) if pool == "gem" else None
        self.token_norm = nn.LayerNorm(dim)
        self.scale_embed = nn.Parameter(torch.zeros(self.n_scales, dim))
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.scale_embed, std=0.02)
        nn.init.trunc_normal_(self.query, std=0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_norm = nn.LayerNorm(dim)
        # attention over scales from the latest forward, detached, (B, n_scales); empty before the first call
        self.last_weights: Tensor = torch.zeros(0, self.n_scales)

    def tokens(self, maps: list[Tensor]) -> Tensor:
        """One token per scale: ``S`` maps ``(B, C_s, H_s, W_s)`` -> ``(B, S, dim)`` (scale embeddings added)."""
        if len(maps) != self.n_scales:
            raise ValueError(f"MultiScaleFusion built for {self.n_scales} maps, got {len(maps)}")
        pooled = []
        for s, m in enumerate(maps):
            v = (
                gem(m, self.gem_p[s].clamp(min=1.0))
                if self.gem_p is not None
                else F.adaptive_avg_pool2d(m, 1).flatten(1)
            )
            pooled.append(self.proj[s](v))
        return self.token_norm(torch.stack(pooled, dim=1)) + self.scale_embed

    def forward_with_weights(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Fused vector and attention over scales.

        Args:
            maps: ``S`` tensors ``(B, C_s, H_s, W_s)``.

        Returns:
            ``(B, dim)`` fused embedding and ``(B, S)`` attention weights (averaged over heads, rows sum to 1).
        """
        tok = self.tokens(maps)
        q = self.query.expand(tok.shape[0], -1, -1)
        out, w = self.attn(q, tok, tok, need_weights=True, average_attn_weights=True)
        weights = w[:, 0, :]
        self.last_weights = weights.detach()
        return self.out_norm(out[:, 0, :]), weights

    def forward(self, maps: list[Tensor]) -> Tensor:
        """``S`` maps -> ``(B, dim)`` fused embedding (weights kept in :attr:`last_weights`)."""
        return self.forward_with_weights(maps)[0]
