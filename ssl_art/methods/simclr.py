"""SimCLR baseline (Chen et al. 2020): backbone -> lightly ``SimCLRProjectionHead`` -> lightly ``NTXentLoss``.

The honest reference the art method must beat: same backbone wrapper, same data, same engine, nothing but the
standard method. With ``n_views > 2`` every pair of views contributes (the loss is averaged over view pairs); local
multi-crop views (``data.aug.n_local``) are paired with every global view, never with each other.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor

from ssl_art.config import PretrainConfig
from ssl_art.losses.collapse import embedding_std
from ssl_art.methods.base import PretrainMethod, StepOutput, split_views, view_pairs
from ssl_art.models.backbone import Backbone
from ssl_art.models.build import build_backbone
from ssl_art.models.stats import style_stats

__all__ = ["SimCLR", "from_config"]


class SimCLR(PretrainMethod):
    """SimCLR over a :class:`Backbone`.

    Args:
        backbone: the feature extractor.
        hidden_dim: projection MLP hidden width.
        out_dim: projection output width.
        temperature: NT-Xent temperature.
        gather_distributed: gather negatives across ranks (lightly ``GatherLayer``).
    """

    backbone: Backbone
    default_embedding = "pooled"
    embedding_kinds = ("pooled", "stats")

    def __init__(
        self,
        backbone: Backbone,
        hidden_dim: int = 512,
        out_dim: int = 128,
        temperature: float = 0.2,
        gather_distributed: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.embed_dim, hidden_dim, out_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def training_step(self, views: list[Tensor], progress: float) -> StepOutput:
        if len(views) < 2:
            raise ValueError(f"SimCLR needs at least 2 views per image, got {len(views)} (set data.aug.n_views)")
        b = views[0].shape[0]
        glob, loc = split_views(views)
        # one forward per view size (globals, then locals): the embeddings of every view, in order
        zs = [z for g in (glob, loc) if g for z in self.projection_head(self.backbone(torch.cat(g))).split(b)]
        pairs = view_pairs(len(glob), len(loc))
        loss = sum(self.criterion(zs[i], zs[j]) for i, j in pairs) / len(pairs)
        assert isinstance(loss, Tensor)
        return StepOutput(loss, {"loss/ntxent": float(loss.detach()), "emb_std": embedding_std(zs[0])})

    @torch.no_grad()
    def embed(self, x: Tensor) -> dict[str, Tensor]:
        """``(B, 3, H, W)`` -> ``pooled`` ``(B, D)`` and the parameter-free ``stats`` (:func:`style_stats`)."""
        feats = self.backbone.features(x)
        return {"pooled": feats.pooled, "stats": style_stats(feats.intermediates)}


def from_config(cfg: PretrainConfig) -> SimCLR:
    """The registry entry: ``model.*`` (backbone, projection widths), ``loss.temperature``, ``data.image_size`` and
    ``dist.gather`` as :class:`SimCLR` kwargs (the other ``loss.*`` fields belong to ``art_ssl``)."""
    return SimCLR(
        build_backbone(cfg.model, cfg.data.image_size),
        hidden_dim=cfg.model.proj_hidden_dim,
        out_dim=cfg.model.proj_out_dim,
        temperature=cfg.loss.temperature,
        gather_distributed=cfg.dist.gather,
    )
