"""Optimiser construction with weight-decay groups: no decay for biases and norm parameters (ndim < 2).

Follows nanoGPT's ``configure_optimizers`` grouping. LARS comes from lightly (``lightly.utils.lars.LARS``), which
already excludes ndim < 2 parameters from adaptation when they sit in a group with ``lars_exclude=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into decay (ndim >= 2) and no-decay (biases, norms) groups.

    Teacher/EMA parameters have ``requires_grad=False`` and are left out, so the optimiser can never move them.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(module: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9) -> Any:
    """Build ``adamw`` | ``sgd`` | ``lars`` over :func:`param_groups`; ``lr`` is the (already scaled) peak lr."""
    return optimizer_for_groups(param_groups(module, weight_decay), name, lr, momentum)


def optimizer_for_groups(groups: list[dict[str, Any]], name: str, lr: float, momentum: float = 0.9) -> Any:
    """Build ``adamw`` | ``sgd`` | ``lars`` over ready parameter groups (e.g. fine-tuning's layer-decay groups).

    Each group keeps its own keys (``weight_decay``, ``lr_scale``, ...); a ``names`` list is dropped. lightly's LARS
    leaves parameters whose group has ``weight_decay == 0`` (biases, norms) out of the trust-ratio adaptation.
    """
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if name in ("adamw", "sgd"):
        for g in groups:
            g.pop("lars_exclude", None)
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        from lightly.utils.lars import LARS

        return LARS(groups, lr=lr, momentum=momentum)
    raise ValueError(f"optim.name must be one of adamw, sgd, lars; got '{name}'")
