"""The one place a config becomes constructor keyword arguments: backbones, pretraining methods, checkpoints.

``build_pretrain_model(cfg)`` assembles the method named by ``cfg.method`` from library parts (lightly's
``METHODS`` map idea); ``load_method(path)`` rebuilds a method from a checkpoint's stored config and loads its
weights hash-checked and strictly (:func:`ssl_art.checkpoint.load_state_strict`), reporting missing and unexpected
keys instead of silently ignoring them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ssl_art.checkpoint import find_resumable, load_checkpoint, load_state_strict, verify_checkpoint
from ssl_art.config import ModelCfg, PretrainConfig, config_from_dict
from ssl_art.methods.base import PretrainMethod
from ssl_art.models.backbone import Backbone, load_backbone_weights

log = logging.getLogger(__name__)


def build_backbone(cfg: ModelCfg, image_size: int) -> Backbone:
    """timm backbone from ``model.*``; ``model.init_checkpoint`` (a local file) is loaded on top."""
    backbone = Backbone(
        cfg.backbone, pretrained=cfg.pretrained, n_intermediates=cfg.n_intermediates, img_size=image_size
    )
    if cfg.init_checkpoint:
        load_backbone_weights(backbone, cfg.init_checkpoint)
    return backbone


def _simclr(cfg: PretrainConfig) -> PretrainMethod:
    from ssl_art.methods.simclr import SimCLR

    return SimCLR(
        build_backbone(cfg.model, cfg.data.image_size),
        hidden_dim=cfg.model.proj_hidden_dim,
        out_dim=cfg.model.proj_out_dim,
        temperature=cfg.loss.temperature,
        gather_distributed=cfg.dist.gather,
    )


def _art_ssl(cfg: PretrainConfig) -> PretrainMethod:
    from ssl_art.methods.art_ssl import build_art_ssl

    return build_art_ssl(cfg.model, cfg.loss, cfg.data.image_size)


METHODS: dict[str, Callable[[PretrainConfig], PretrainMethod]] = {"simclr": _simclr, "art_ssl": _art_ssl}


def build_pretrain_model(cfg: PretrainConfig) -> PretrainMethod:
    """The pretraining method named by ``cfg.method``."""
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got '{cfg.method}'")
    return METHODS[cfg.method](cfg)


def load_method(path: str, pretrained_backbone: bool = False) -> tuple[PretrainMethod, PretrainConfig]:
    """Rebuild the method stored in an ssl_art checkpoint (on CPU) and load its weights strictly.

    Args:
        path: ``checkpoints/last.pt`` (or any ``ckpt-*.pt``) of a pretraining run, or the run dir itself: then a
            truncated or corrupt ``last.pt`` falls back (with a warning) to the newest ``ckpt-*.pt`` that verifies.
        pretrained_backbone: keep ``model.pretrained`` as stored (default off: the weights come from the file).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt.
        ValueError: the weights do not match the stored config (missing/unexpected keys are listed).
    """
    p = Path(path)
    if p.is_dir():
        ckpt_dir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        p = ckpt_dir / "last.pt"
        if not verify_checkpoint(p):
            found = find_resumable(ckpt_dir)
            if found is not None:
                log.warning("%s is missing, truncated or corrupt; using %s instead", p, found)
                p = found
    ckpt = load_checkpoint(p)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{p} is not an ssl_art pretraining checkpoint (needs 'config' and 'model')")
    raw = dict(ckpt["config"])
    raw["model"] = {**raw["model"], "pretrained": pretrained_backbone, "init_checkpoint": ""}
    cfg = config_from_dict(PretrainConfig, raw)
    method = build_pretrain_model(cfg)
    load_state_strict(method, ckpt["model"], str(p))
    method.eval()
    return method, cfg
