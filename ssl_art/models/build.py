"""Backbones from config: the one place ``model.*`` becomes backbone keyword arguments.

``build_backbone(model_cfg, image_size)`` is the one place ``model.*`` becomes :class:`Backbone` keyword arguments
(a local ``model.init_checkpoint`` is loaded on top, hash-checked and strictly by
:func:`ssl_art.checkpoint.load_state_strict`). Pretraining methods are built by :mod:`ssl_art.methods.registry`;
models know no method.
"""

from __future__ import annotations

from ssl_art.config import ModelCfg
from ssl_art.models.backbone import Backbone, load_backbone_weights

__all__ = ["build_backbone"]


def build_backbone(cfg: ModelCfg, image_size: int) -> Backbone:
    """timm backbone from ``model.*``; ``model.init_checkpoint`` (a local file) is loaded on top."""
    backbone = Backbone(
        cfg.backbone, pretrained=cfg.pretrained, n_intermediates=cfg.n_intermediates, img_size=image_size
    )
    if cfg.init_checkpoint:
        load_backbone_weights(backbone, cfg.init_checkpoint)
    return backbone
