"""The model side of retrieval: what an embedder is, the random-init baseline, the model hash, query images.

An *embedder* is anything with ``embed(x) -> {"pooled": (B, D), "stats": ..., "fused": ..., "gram": ...}`` and a
``default_embedding`` name: a pretraining method loaded from a checkpoint (``methods.load.load_method``) or
:class:`BackboneEmbedder`, a seeded random-init timm backbone used as the no-training baseline. :func:`model_hash`
fingerprints the weights so an index refuses queries from another model, and :func:`embed_images` embeds query
images in memory with the data layer's eval transform, exactly as :mod:`ssl_art.retrieval.embed` embedded the
collection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from ssl_art.config.choices import EMBEDDINGS
from ssl_art.models.stats import style_stats

KINDS = EMBEDDINGS


class Embedder(Protocol):
    """What retrieval needs from a model: ``embed(x) -> {"pooled": (B, D), ...}`` and a default kind."""

    default_embedding: str

    def embed(self, x: Tensor) -> dict[str, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def eval(self) -> Any: ...


class BackboneEmbedder(nn.Module):
    """Pooled features of a bare timm backbone: the random-init (or hub) baseline that needs no checkpoint.

    Args:
        name: timm model name.
        seed: seeds the random initialisation, so the model hash is reproducible.
        image_size: input side (for ViTs).
    """

    default_embedding = "pooled"

    def __init__(self, name: str = "resnet18", seed: int = 0, image_size: int = 224):
        super().__init__()
        from ssl_art.models.backbone import Backbone

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.backbone = Backbone(name, pretrained=False, img_size=image_size)
        self.eval()

    @torch.no_grad()
    def embed(self, x: Tensor) -> dict[str, Tensor]:
        """``(B, 3, H, W)`` -> ``{"pooled": (B, D), "stats": (B, 2 sum C_i)}`` (:func:`style_stats`)."""
        feats = self.backbone.features(x)
        return {"pooled": feats.pooled, "stats": style_stats(feats.intermediates)}


def load_embedder(checkpoint: str = "", backbone: str = "resnet18", seed: int = 0, image_size: int = 224) -> Any:
    """A pretraining checkpoint's method (``methods.load.load_method``), or a seeded random-init backbone."""
    if checkpoint:
        from ssl_art.methods.load import load_method

        method, _ = load_method(checkpoint)
        return method
    return BackboneEmbedder(backbone, seed=seed, image_size=image_size)


def model_hash(model: Embedder) -> str:
    """SHA-256 over the model's ``state_dict`` (sorted names, dtypes, shapes and bytes); 16 hex chars are kept."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def resolve_kind(model: Embedder, kind: str) -> str:
    """``auto`` -> the model's ``default_embedding``; other names are checked against :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"embedding must be one of {', '.join(KINDS)}; got '{kind}'")
    return str(getattr(model, "default_embedding", "pooled")) if kind == "auto" else kind


def pick_embedding(out: dict[str, Tensor], kind: str) -> Tensor:
    """``out[kind]`` as ``(B, D)`` float32, with an error naming the kinds this model has."""
    if kind not in out:
        raise ValueError(f"this model has no '{kind}' embedding; it provides {', '.join(sorted(out))}")
    return out[kind].detach().float().flatten(1)


def list_images(items: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths."""
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    out: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in exts)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    return out


def default_transform(image_size: int) -> Callable[[Any], Tensor]:
    """The data layer's eval transform (resize + centre crop + normalise), so queries match the collection."""
    from ssl_art.data import build_eval_transform

    return build_eval_transform(image_size)


@torch.no_grad()
def embed_images(
    model: Embedder, images: Sequence[Any], kind: str, image_size: int, batch_size: int = 32
) -> NDArray[np.float32]:
    """Embed query images (paths or PIL images) in memory: ``(Q, D)`` float32, L2-normalised.

    Raises:
        BadImageError: a file that cannot be decoded, or an image the decode guard refuses (too many pixels, extreme
            aspect ratio), before it is resized.
    """
    from PIL import Image

    from ssl_art.data import load_image

    tf = default_transform(image_size)
    model.eval()
    kind = resolve_kind(model, kind)
    outs = []
    for s in range(0, len(images), batch_size):
        xs = []
        for im in images[s : s + batch_size]:
            if not isinstance(im, Image.Image):
                im = load_image(str(im))  # the project's one decode guard (size, aspect) before any resize
            xs.append(tf(im.convert("RGB")))
        outs.append(pick_embedding(model.embed(torch.stack(xs)), kind).cpu().numpy())
    z = np.concatenate(outs).astype(np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
