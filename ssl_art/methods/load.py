"""Rebuild a pretraining method from an ssl_art checkpoint: its stored config picks the method, then strict weights.

Evaluation, fine-tuning and retrieval all start from here, so a checkpoint means the same model everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ssl_art.checkpoint import CheckpointError, find_resumable, load_checkpoint, load_state_strict
from ssl_art.config import PretrainConfig, config_from_dict
from ssl_art.methods.base import PretrainMethod
from ssl_art.methods.registry import build_pretrain_model

__all__ = ["load_method"]

log = logging.getLogger(__name__)


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
    try:
        ckpt = load_checkpoint(p)
    except CheckpointError:
        found = find_resumable(p.parent) if Path(path).is_dir() else None  # a run dir: fall back to ckpt-*.pt
        if found is None:
            raise
        log.warning("%s is missing, truncated or corrupt; using %s instead", p, found)
        p, ckpt = found, load_checkpoint(found)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{p} is not an ssl_art pretraining checkpoint (needs 'config' and 'model')")
    raw = dict(ckpt["config"])
    raw["model"] = {**raw["model"], "pretrained": pretrained_backbone, "init_checkpoint": ""}
    cfg = config_from_dict(PretrainConfig, raw)
    method = build_pretrain_model(cfg)
    load_state_strict(method, ckpt["model"], str(p))
    method.eval()
    return method, cfg
