"""A toy pretraining method: everything adding a method takes, in one file plus one registry line.

Its options come from existing sections (``model.proj_out_dim``, ``loss.temperature``, ``dist.gather``). Loaded as a
pytest plugin (``pytest -p toy_method``), :func:`pytest_configure` registers it before collection, so the contract
tests in ``test_contract.py`` are collected for it too; ``test_registry.py`` registers it in-process instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ssl_art.config import PretrainConfig
from ssl_art.losses.contrastive import InfoNCE
from ssl_art.methods.base import PretrainMethod, StepOutput
from ssl_art.methods.registry import register_method
from ssl_art.models.build import build_backbone


class ToyMethod(PretrainMethod):
    """Backbone -> linear head -> InfoNCE between two views; embeds ``pooled`` and ``projected``."""

    embedding_kinds = ("pooled", "projected")

    def __init__(self, backbone: nn.Module, embed_dim: int, out_dim: int, temperature: float, gather: bool):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(embed_dim, out_dim)
        self.loss = InfoNCE(temperature, gather)

    def training_step(self, views: list[Tensor], progress: float) -> StepOutput:
        z = self.head(self.backbone(torch.cat(views[:2]))).split(views[0].shape[0])
        loss = self.loss(z[0], z[1])
        return StepOutput(loss, {"loss/toy": float(loss.detach())})

    @torch.no_grad()
    def embed(self, x: Tensor) -> dict[str, Tensor]:
        pooled = self.backbone(x)
        return {"pooled": pooled, "projected": self.head(pooled)}


def from_config(cfg: PretrainConfig) -> ToyMethod:
    backbone = build_backbone(cfg.model, cfg.data.image_size)
    return ToyMethod(backbone, backbone.embed_dim, cfg.model.proj_out_dim, cfg.loss.temperature, cfg.dist.gather)


def pytest_configure(config: Any) -> None:
    register_method("toy", from_config)  # the one registry line
