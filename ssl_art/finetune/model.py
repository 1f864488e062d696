"""Fine-tuning models: an encoder with one linear head per label column, and rebuilding them from a saved spec.

An *encoder* is any module ``(B, 3, H, W) -> (B, D)`` with a ``model`` attribute holding its timm network (the
ssl_art :class:`~ssl_art.models.backbone.Backbone`, or the cheap branch's
:class:`TrunkExit`), so layer-wise lr decay and freezing can find stages/blocks. A
:class:`ModelSpec` (plain dict in checkpoints) is everything ``predict`` needs to rebuild the network without the
training config, which keeps serving independent of the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ssl_art.checkpoint import load_checkpoint, load_state_strict
from ssl_art.models.backbone import Backbone
from ssl_art.models.gated import Branch, ExitPool, GatedTwoBranch, split_stages


class Classifier(nn.Module):
    """Encoder + one linear head per task.

    Args:
        encoder: ``(B, 3, H, W) -> (B, D)`` module with a ``model`` attribute (its timm network).
        dim: ``D``.
        n_classes: classes per head.
        dropout: dropout before the heads.
    """

    def __init__(self, encoder: nn.Module, dim: int, n_classes: list[int], dropout: float = 0.0):
        super().__init__()
        if not n_classes or min(n_classes) < 2:
            raise ValueError(f"every head needs at least 2 classes, got {n_classes}")
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(dim, c) for c in n_classes)
        self.dim, self.n_classes = dim, list(n_classes)

    @property
    def timm_model(self) -> nn.Module:
        """The timm network inside the encoder (for layer-wise decay and freezing)."""
        model = self.encoder.model
        assert isinstance(model, nn.Module)
        return model

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(B, 3, H, W)`` -> pooled features ``(B, D)`` and per-head logits ``(B, C_t)``."""
        f = self.encoder(x)
        return f, [h(self.drop(f)) for h in self.heads]

    def forward(self, x: Tensor) -> list[Tensor]:
        """Per-head logits ``(B, C_t)``."""
        return self.features_and_logits(x)[1]


@dataclass
class ModelSpec:
    """Architecture description stored in fine-tune checkpoints (``kind``: ``classifier`` or ``gated``)."""

    kind: str
    backbone: str
    n_intermediates: int
    image_size: int
    columns: list[str]
    classes: dict[str, list[str]]
    dropout: float = 0.0
    cheap_backbone: str = ""
    cheap_stages: int = 2
    exit_width: int = 256  # shared-trunk exit head: 1x1 conv width (features 2 * width)
    hidden_dim: int = 64
    threshold: float = 0.9  # gate.fallback_threshold
    alpha: float = 1.0
    fusion_init_bias: float = 3.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        return ModelSpec(**d)

    @property
    def n_classes(self) -> list[int]:
        return [len(self.classes[c]) for c in self.columns]


def build_classifier(spec: ModelSpec, backbone: Backbone | None = None) -> Classifier:
    """The expensive/plain classifier; ``backbone`` (already loaded weights) or a fresh random one."""
    bb = backbone or Backbone(
        spec.backbone, pretrained=False, n_intermediates=spec.n_intermediates, img_size=spec.image_size
    )
    return Classifier(bb, bb.embed_dim, spec.n_classes, spec.dropout)


class _PooledTimm(nn.Module):
    """A small timm CNN as a separate cheap encoder: ``(B, 3, H, W) -> (B, D)`` via ``num_classes=0``."""

    def __init__(self, name: str):
        super().__init__()
        import timm

        self.model = timm.create_model(name, pretrained=False, num_classes=0)
        num_features: Any = self.model.num_features
        self.dim = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class TrunkExit(nn.Module):
    """Stage-0 encoder of the shared-trunk cheap branch: frozen trunk of the expensive backbone + :class:`ExitPool`.

    ``model`` is the expensive backbone's timm network (so fine-tuning helpers find it); its first
    ``n_levels`` levels form the trunk. The trunk is shared with the expensive branch, so it stays frozen and in eval
    mode (its BatchNorm statistics must not drift); only the exit pooler and the classifier head train.

    Args:
        timm_model: the expensive backbone's timm network.
        n_levels: feature levels in the trunk (see :func:`~ssl_art.models.gated.split_stages`).
        width: exit conv width (features: ``2 * width``).
    """

    def __init__(self, timm_model: nn.Module, n_levels: int, width: int):
        super().__init__()
        self.model = timm_model
        trunk, _ = split_stages(timm_model, n_levels)
        self.n_levels = n_levels
        with torch.no_grad():
            was = timm_model.training
            timm_model.eval()
            channels = int(trunk(torch.zeros(1, 3, 32, 32)).shape[1])
            timm_model.train(was)
        self.pool = ExitPool(channels, width)
        self.dim = self.pool.dim
        self._trunk = [trunk]  # a list: the trunk's modules are already registered under ``model``

    @property
    def trunk(self) -> nn.Sequential:
        """The shared early stages ``(B, 3, H, W) -> (B, C, H', W')``."""
        return self._trunk[0]

    def train(self, mode: bool = True) -> TrunkExit:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, 2 * width)``; no gradient reaches the frozen trunk."""
        with torch.no_grad():
            h = self.trunk(x)
        return self.pool(h)


def build_cheap(spec: ModelSpec, expensive: Classifier) -> Classifier:
    """Stage-0 cheap classifier (head 0 only).

    Default (``cheap_backbone == ""``): the expensive backbone's first ``cheap_stages`` levels, shared and frozen,
    plus a light exit head (:class:`TrunkExit`). Otherwise a separate small timm CNN ``cheap_backbone``.
    """
    n = [len(spec.classes[spec.columns[0]])]
    enc: TrunkExit | _PooledTimm
    if spec.cheap_backbone:
        enc = _PooledTimm(spec.cheap_backbone)
    else:
        enc = TrunkExit(expensive.timm_model, spec.cheap_stages, spec.exit_width)
    return Classifier(enc, enc.dim, n, spec.dropout)


def build_gated(spec: ModelSpec, cheap: Classifier, expensive: Classifier) -> GatedTwoBranch:
    """Assemble the gate from two trained classifiers (head 0 each).

    Shared trunk: ``trunk`` = the backbone's first stages, ``cheap_head`` = exit pooler + cheap head, ``rest`` =
    the remaining stages + the expensive head. Separate cheap CNN: ``trunk`` is the identity and each branch is a
    whole network.
    """
    enc = cheap.encoder
    trunk: nn.Module
    if isinstance(enc, TrunkExit):
        trunk, rest_body = split_stages(expensive.timm_model, enc.n_levels)
        cheap_head, rest = Branch(enc.pool, cheap.heads[0]), Branch(rest_body, expensive.heads[0])
    else:
        trunk = nn.Identity()
        cheap_head, rest = Branch(enc, cheap.heads[0]), Branch(expensive.encoder, expensive.heads[0])
    return GatedTwoBranch(
        trunk,
        cheap_head,
        rest,
        cheap_dim=cheap.dim,
        expensive_dim=expensive.dim,
        hidden_dim=spec.hidden_dim,
        threshold=spec.threshold,
        alpha=spec.alpha,
        fusion_init_bias=spec.fusion_init_bias,
    )


def build_from_spec(spec: ModelSpec) -> nn.Module:
    """Randomly initialised network of ``spec.kind`` whose state dict matches a saved checkpoint's."""
    expensive = build_classifier(spec)
    if spec.kind == "classifier":
        return expensive
    if spec.kind == "gated":
        return build_gated(spec, build_cheap(spec, expensive), expensive)
    raise ValueError(f"unknown model kind {spec.kind!r}; valid: classifier, gated")


def load_finetuned(path: str) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild a fine-tuned model from ``checkpoints/best.pt`` / ``gated.pt`` (or a run dir) on CPU, in eval mode.

    Returns:
        ``(model, spec, meta)`` where ``meta`` holds e.g. ``val_score`` (used to weight ensembles).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt (size/SHA-256 mismatch with its sidecar).
        ValueError: when the file is not a fine-tune checkpoint or its weights do not match the stored spec
            (missing, unexpected and shape-mismatched keys are listed).
    """
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        cands = [p / "checkpoints" / "gated.pt", p / "checkpoints" / "best.pt"]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            raise ValueError(f"{p} holds no fine-tune checkpoint (looked for {', '.join(map(str, cands))})")
        p = found
    obj = load_checkpoint(p)  # verified against its sidecar: a truncated file is a CheckpointError
    if not isinstance(obj, dict) or "spec" not in obj or "model" not in obj:
        raise ValueError(f"{p} is not an ssl_art fine-tune checkpoint (needs 'spec' and 'model')")
    spec = ModelSpec.from_dict(obj["spec"])
    model = build_from_spec(spec)
    load_state_strict(model, obj["model"], str(p), "Was it saved with another model spec (backbone, heads, gate)?")
    model.eval()
    return model, spec, dict(obj.get("meta", {}))
