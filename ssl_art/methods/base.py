"""The contract every pretraining method implements, so the engine can train any of them.

A method is an ``nn.Module`` composed from library parts (backbone, heads, losses), in the spirit of lightly's
``benchmarks/imagenet`` methods: the engine calls :meth:`training_step` on a list of augmented views, steps the
optimiser, then calls :meth:`after_optimizer_step` (EMA teachers update there, never through the optimiser).
Everything a resume needs (teacher weights, queues) lives in registered buffers or sub-modules, so the plain
``state_dict`` round-trips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn


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
            views: ``n_views`` tensors of shape ``(B, 3, H, W)``, view ``v`` of sample ``i`` at row ``i``.
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
