"""timm backbone wrapper: one call returns the pooled embedding and the intermediate feature maps.

Any timm CNN or ViT that implements ``forward_intermediates`` works (ResNets, ConvNeXts, EfficientNets, ViTs...).
The wrapper is built with ``timm.create_model(name, pretrained=..., num_classes=0)`` so ``forward`` already returns
the pooled pre-logits vector; ``features`` additionally exposes ``n_intermediates`` maps as ``(B, C_i, H_i, W_i)``
(ViT tokens are reshaped to maps by timm's ``output_fmt='NCHW'``, prefix tokens dropped), which the Gram and fusion
heads consume. No hooks: the multi-level contract is timm's own (see timm ``vision_transformer.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ssl_art.checkpoint import CheckpointError, load_state_strict, verify_checkpoint
from ssl_art.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Features:
    """Output of :meth:`Backbone.features`.

    Attributes:
        pooled: ``(B, D)`` globally pooled embedding (what ``forward`` returns).
        intermediates: list of ``(B, C_i, H_i, W_i)`` maps, shallow to deep.
    """

    pooled: Tensor
    intermediates: list[Tensor]


class Backbone(nn.Module):
    """A timm model that returns :class:`Features`.

    Args:
        name: timm model name, e.g. ``resnet18`` or ``vit_tiny_patch16_224``.
        pretrained: load hub weights (needs network access; default off on this toolkit's CPU machines).
        n_intermediates: how many maps to expose, evenly strided over the model's feature stages/blocks and
            aligned to the last one (ResNet: its 4 stages; ViT-12: blocks 2, 5, 8, 11).
        img_size: input side, passed to models that need it (ViTs); ignored by CNNs.
    """

    def __init__(self, name: str = "resnet18", pretrained: bool = False, n_intermediates: int = 4, img_size: int = 0):
        super().__init__()
        kwargs: dict[str, Any] = {}
        if img_size and _is_vit(name):
            kwargs["img_size"] = img_size
            kwargs["dynamic_img_size"] = True
        try:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
        except RuntimeError as e:  # timm raises RuntimeError for unknown names
            close = timm.list_models(f"*{name[:4]}*")[:5] if name else []
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(
                f"unknown timm backbone '{name}'{hint}; set model.backbone (--backbone) to a name from "
                "timm.list_models(), e.g. resnet18"
            ) from e
        if not hasattr(self.model, "forward_intermediates"):
            raise ValueError(f"timm model '{name}' has no forward_intermediates(); pick a CNN/ViT that has it")
        self.name = name
        model: Any = self.model  # timm models expose these attributes dynamically
        self.embed_dim: int = int(model.num_features)
        n_total = len(model.feature_info) if hasattr(model, "feature_info") else 0
        n_total = n_total or len(getattr(model, "blocks", [])) or n_intermediates
        if n_intermediates < 1 or n_intermediates > n_total:
            raise ValueError(f"n_intermediates must be in [1, {n_total}] for {name}, got {n_intermediates}")
        # evenly strided, aligned to the last stage: resnet (stem + 4 stages) -> the 4 stages; ViT-12 -> 2, 5, 8, 11
        stride = n_total // n_intermediates
        self.indices: list[int] = [n_total - 1 - stride * (n_intermediates - 1 - i) for i in range(n_intermediates)]
        self.channels: list[int] = self._probe_channels(img_size or 64)

    def _probe_channels(self, size: int) -> list[int]:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            feats = self.features(torch.zeros(1, 3, size, size))
        self.train(was_training)
        return [int(t.shape[1]) for t in feats.intermediates]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, D)`` pooled embedding."""
        return self.features(x).pooled

    def features(self, x: Tensor) -> Features:
        """``(B, 3, H, W)`` -> :class:`Features` (pooled ``(B, D)`` and the intermediate maps)."""
        model: Any = self.model
        final, inter = model.forward_intermediates(x, indices=self.indices, output_fmt="NCHW")
        pooled = model.forward_head(final, pre_logits=True)
        return Features(pooled=pooled, intermediates=list(inter))


def _is_vit(name: str) -> bool:
    return any(k in name for k in ("vit", "deit", "eva", "beit"))


def load_backbone_weights(backbone: Backbone, path: str) -> None:
    """Load backbone weights from a local file: ``.safetensors``, a raw timm state dict or an ssl_art checkpoint.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
    downloaded file cannot run code; one with a ``.sha256`` sidecar (an ssl_art checkpoint) is hash-checked first.
    The backbone's own keys are picked out of an ssl_art checkpoint (which stores the whole student), then loaded
    by :func:`ssl_art.checkpoint.load_state_strict`: missing and shape-mismatched keys are an error naming the likely
    cause, never a half-initialised backbone.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model.init_checkpoint: no such file {p}")
    if Path(f"{p}.sha256").is_file() and not verify_checkpoint(p):
        raise CheckpointError(
            f"model.init_checkpoint {p} is truncated or corrupt (size/hash mismatch with its sidecar)"
        )
    obj = read_weights(p)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    # ssl_art checkpoints store the whole student; keep the backbone's own keys
    prefixes = ("backbone.model.", "model.", "backbone.")
    own = backbone.model.state_dict()
    picked: dict[str, Tensor] = {}
    for k, v in state.items():
        for pre in ("",) + prefixes:
            if k.startswith(pre) and k[len(pre) :] in own:
                picked[k[len(pre) :]] = v
                break
    saved = _stored_backbone(obj)
    fix = (
        f"Likely cause: it was saved from backbone '{saved}' while model.backbone='{backbone.name}'; "
        f"set model.backbone={saved}"
        if saved and saved != backbone.name
        else f"Likely cause: a checkpoint of another architecture than model.backbone='{backbone.name}'."
    )
    if not picked:
        raise ConfigError(
            f"model.init_checkpoint {p} holds no weights for this backbone (architecture mismatch). {fix}"
        )
    load_state_strict(backbone.model, picked, f"model.init_checkpoint {p}", fix)
    log.info("loaded %d backbone tensors from %s", len(picked), p)


def _checkpoint_globals() -> list[Any]:
    """Data-only types an ssl_art training checkpoint holds besides tensors: the NumPy RNG state.

    (The data layer registers its own bad-file report type with ``torch.serialization.add_safe_globals``.)
    """
    import numpy as np

    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's array unpickler (numpy.core or numpy._core by version)
    dtypes = [type(np.dtype(t)) for t in ("uint32", "int64", "float32", "float64")]
    return [reconstruct, np.ndarray, np.dtype, *dtypes]


def read_weights(p: Path) -> Any:
    """The tensors of a ``.safetensors`` file, or a ``.pt`` loaded with ``weights_only=True`` (no code runs).

    Raises:
        ConfigError: the file holds pickled code or objects other than tensors and plain containers.
    """
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    import pickle

    try:
        with torch.serialization.safe_globals(_checkpoint_globals()):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(
            f"model.init_checkpoint {p} holds pickled objects beyond tensors; it was refused because loading it "
            "could run code. Use a .safetensors file (`ssl-art export RUN --format safetensors`) or a plain state dict"
        ) from e


def _stored_backbone(obj: Any) -> str:
    """The ``model.backbone`` recorded in an ssl_art checkpoint's config, or ``""``."""
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        model = obj["config"].get("model")
        if isinstance(model, dict):
            return str(model.get("backbone", ""))
    return ""
