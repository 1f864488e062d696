"""Tiny configs for every registered pretraining method (resnet18 at 32 px, batch 4), shared by the method tests.

A method that needs switches to exercise all of its parts (``art_ssl``: fusion, Gram head, every loss term) lists
them in ``PER_METHOD``; any other registered method, including one registered by a test, runs with the shared base.
"""

from __future__ import annotations

from typing import Any

import torch

from ssl_art.config import PretrainConfig, config_from_dict, deep_merge

BASE: dict[str, Any] = {
    "data": {"image_size": 32, "batch_size": 4},
    "model": {"backbone": "resnet18", "n_intermediates": 4, "proj_hidden_dim": 32, "proj_out_dim": 16},
}
PER_METHOD: dict[str, dict[str, Any]] = {
    "art_ssl": {
        "model": {
            "fusion": {"enabled": True, "dim": 16, "heads": 2, "pool": "gem"},
            "gram": {"enabled": True, "layers": [2, 3], "rank": 4, "out_dim": 8},
        },
        "loss": {"w_gram": 1.0, "w_distill": 1.0, "w_soft": 1.0, "queue_size": 16, "teacher_views": "all"},
    },
}


def tiny_config(name: str, extra: dict[str, Any] | None = None) -> PretrainConfig:
    """A strict, tiny ``PretrainConfig`` for method ``name`` (plus ``extra`` sections merged on top)."""
    values = deep_merge(deep_merge({"method": name, **BASE}, PER_METHOD.get(name, {})), extra or {})
    return config_from_dict(PretrainConfig, values)


def unzero_bn(m: torch.nn.Module) -> torch.nn.Module:
    """timm zero-inits each residual block's last BN (``zero_init_last``), which zeroes that branch's gradients."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.fill_(1.0)
    return m


def views(b: int = 4, n: int = 2, size: int = 32, seed: int = 1) -> list[torch.Tensor]:
    """``n`` seeded views ``(b, 3, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, size, size, generator=g) for _ in range(n)]
