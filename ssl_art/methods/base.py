"""The contract every pretraining method implements, so the engine can train any of them.

A method is an ``nn.Module`` composed from library parts (backbone, heads, losses), in the spirit of lightly's
``benchmarks/imagenet`` methods: the engine calls :meth:`training_step` on a list of augmented views, steps the
optimiser, then calls :meth:`after_optimizer_step` (EMA teachers update there, never through the optimiser).
Everything a resume needs (teacher weights, queues) lives in registered buffers or sub-modules, so the plain
``state_dict`` round-trips it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from torch import Tensor, nn


def split_views(views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """``(global, local)`` views: the leading views of ``views[0]``'s size, then the smaller multi-crop ones.

    Raises:
        ValueError: local views of mixed sizes, or a global-size view after a local one.
    """
    size = views[0].shape[-2:]
    n = next((k for k, v in enumerate(views) if v.shape[-2:] != size), len(views))
    glob, loc = views[:n], views[n:]
    if len({tuple(v.shape[-2:]) for v in loc}) > 1:
        raise ValueError(f"local views must share one size, got {[tuple(v.shape[-2:]) for v in loc]}")
    return glob, loc


def view_pairs(n_global: int, n_local: int) -> list[tuple[int, int]]:
    """Index pairs a contrastive term averages over: every two global views, then every (global, local) pair
    (locals are indexed after the globals; two locals are never paired, as in multi-crop)."""
    glob = list(itertools.combinations(range(n_global), 2))
    return glob + [(i, n_global + k) for i in range(n_global) for k in range(n_local)]


@dataclass
class StepOutput:
    """Loss to back-propagate plus scalars to log (already detached floats)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class PretrainMethod(nn.Module):
    """Base class: subclasses set ``self.backbone`` and implement the three methods below.

    Attributes:
        backbone: the feature extractor that fine-tuning and the ``pooled`` embedding reuse.
        default_embedding: the :meth:`embed` key used when the user does not choose (``eval.embedding=auto``).
        embedding_kinds: every key :meth:`embed` returns (advertised to evaluation and retrieval; checked by the
            contract tests).
    """

    backbone: nn.Module
    default_embedding: str = "pooled"
    embedding_kinds: tuple[str, ...] = ("pooled",)

    def training_step(self, views: list[Tensor], progress: float) -> StepOutput:
        """Loss for one batch.

        Args:
            views: ``n_views`` tensors of shape ``(B, 3, H, W)``, view ``v`` of sample ``i`` at row ``i``, then
                ``n_local`` smaller local views (multi-crop; :func:`split_views` tells them apart).
            progress: fraction of training done in ``[0, 1]`` (for schedules such as the EMA momentum).
        """
        raise NotImplementedError

    def after_optimizer_step(self, progress: float) -> None:
        """Called once after every optimiser step (e.g. EMA teacher update). Default: nothing."""

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        """Frozen-feature embeddings of ``(B, 3, H, W)`` images for evaluation and retrieval.

        Returns a dict of ``(B, D_k)`` tensors; always has ``"pooled"`` (the backbone's); the built-in methods also
        give ``"stats"`` (the parameter-free per-stage channel statistics, :func:`ssl_art.models.stats.style_stats`),
        and ``"fused"`` and/or ``"gram"`` where the method has them. :attr:`default_embedding` names the one used
        when the user does not choose (``eval.embedding=auto``).
        """
        raise NotImplementedError
