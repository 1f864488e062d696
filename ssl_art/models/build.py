"""Backbones from config, and strict state loading that names what does not match.

``build_backbone(model_cfg, image_size)`` is the one place ``model.*`` becomes :class:`Backbone` keyword arguments
(a local ``model.init_checkpoint`` is loaded on top). ``load_state_reporting`` loads a state dict strictly and, when
it does not fit, lists missing and unexpected keys instead of silently ignoring them. Pretraining methods are built
by :mod:`ssl_art.methods.registry`; models know no method.
"""

from __future__ import annotations

import torch

from ssl_art.config import ConfigError, ModelCfg
from ssl_art.models.backbone import Backbone, load_backbone_weights

__all__ = ["build_backbone", "load_state_reporting"]


def build_backbone(cfg: ModelCfg, image_size: int) -> Backbone:
    """timm backbone from ``model.*``; ``model.init_checkpoint`` (a local file) is loaded on top."""
    backbone = Backbone(
        cfg.backbone, pretrained=cfg.pretrained, n_intermediates=cfg.n_intermediates, img_size=image_size
    )
    if cfg.init_checkpoint:
        load_backbone_weights(backbone, cfg.init_checkpoint)
    return backbone


def load_state_reporting(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a message that lists missing/unexpected keys and the likely cause.

    Raises:
        ConfigError: (a ``ValueError``) listing missing and unexpected keys and shape mismatches.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        raise ConfigError(
            f"{source} does not match the model: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}, {len(shape)} shape mismatches {shape[:4]}. "
            "Was it saved with another backbone/method config?"
        )
    module.load_state_dict(state, strict=True)
