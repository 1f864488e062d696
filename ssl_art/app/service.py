"""What the web app computes, without any HTTP: classify an image, find similar works, describe and thumbnail works.

:class:`ClassifierService` wraps a fine-tuned checkpoint (``finetune.model.load_finetuned``, as ``ssl_art.predict``
does) with the *same* preprocessing as evaluation (:func:`~ssl_art.data.build_eval_transform` at the checkpoint's
image size): top-k labels per head plus a Grad-CAM overlay of the top label of the first head.
:class:`SimilarService` wraps a :class:`~ssl_art.retrieval.index.RetrievalIndex` and the model it was built from
(checked by hash). Every image goes through the project's decode guard (``data.decode``) before any resize.
Results carry work *rows*, file *names* and labels, never absolute server paths. The methods are synchronous and
thread-safe: the API runs them in its bounded worker pool. Grad-CAM needs hooks on a module, so it runs on a private
copy of the classifier under a lock; plain forward passes need no lock.
"""

from __future__ import annotations

import base64
import copy
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ssl_art.data import build_eval_transform
from ssl_art.data.collection import SYNTHETIC_PREFIX
from ssl_art.data.decode import MAX_ASPECT, BadImageError, decode_bytes, load_image
from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ssl_art.explain.gradcam import SelectHead, default_target_layer, gradcam
from ssl_art.retrieval.embedder import embed_images, model_hash
from ssl_art.retrieval.index import RetrievalIndex

THUMB = 192  # thumbnail box side (px)
CAM_SIDE = 256  # Grad-CAM overlay side (px)


class NotFoundError(LookupError):
    """A work row (or a feature: no classifier / no index loaded) that does not exist."""


@dataclass(frozen=True)
class DecodeLimits:
    """The decode guard's limits for uploads (``data.decode.check_geometry``)."""

    max_pixels: int = 50_000_000
    max_aspect: float = MAX_ASPECT

    def decode(self, data: bytes, name: str) -> Image.Image:
        """Upload bytes -> RGB image, or :class:`BadImageError` naming ``name``."""
        return decode_bytes(data, name or "upload", self.max_pixels, self.max_aspect)


def _png_data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def overlay(rgb: np.ndarray, cam: np.ndarray, side: int = CAM_SIDE, alpha: float = 0.45) -> Image.Image:
    """``(H, W, 3)`` RGB in [0, 1] and ``(H, W)`` heatmap in [0, 1] -> jet-blended ``side x side`` image."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    mix = np.clip((1 - alpha) * rgb + alpha * heat, 0, 1)
    return Image.fromarray((mix * 255).round().astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)


class ClassifierService:
    """Top-k labels per head and a Grad-CAM overlay, for a fine-tuned classifier.

    Args:
        model: ``load_finetuned``'s model (a ``Classifier`` or a ``GatedTwoBranch``), in eval mode.
        spec: its ``ModelSpec`` (heads, classes, image size).
        name: shown in the health endpoint (e.g. the run folder's name).
    """

    def __init__(self, model: torch.nn.Module, spec: Any, name: str = "") -> None:
        from ssl_art.models.gated import GatedTwoBranch

        self.model, self.spec, self.name = model.eval(), spec, name
        self.gated = isinstance(model, GatedTwoBranch)
        self.columns: list[str] = list(spec.columns[:1] if self.gated else spec.columns)
        self.transform = build_eval_transform(spec.image_size)  # identical to evaluation / predict
        self._cam_model: torch.nn.Module | None = None
        self._cam_layer: torch.nn.Module | None = None
        if spec.kind == "classifier":
            self._cam_model = copy.deepcopy(SelectHead(model, 0)).eval()
            self._cam_layer = default_target_layer(self._cam_model)
        self._cam_lock = threading.Lock()

    @staticmethod
    def load(path: str) -> ClassifierService:
        """From a fine-tune run folder or checkpoint file (``best.pt``/``gated.pt``)."""
        from ssl_art.finetune.model import load_finetuned

        if not Path(path).exists():
            raise FileNotFoundError(f"classifier {path} not found: pass a fine-tune run folder or checkpoint")
        model, spec, _ = load_finetuned(path)
        return ClassifierService(model, spec, Path(path).resolve().name)

    def info(self) -> dict[str, Any]:
        """Heads, class counts and image size (for ``/api/health``)."""
        heads = [{"name": c, "classes": len(self.spec.classes[c])} for c in self.columns]
        return {"name": self.name, "kind": self.spec.kind, "image_size": self.spec.image_size, "heads": heads}

    @torch.no_grad()
    def probabilities(self, img: Image.Image) -> dict[str, np.ndarray]:
        """Softmax per head ``{column: (C,)}`` for one RGB image."""
        x = self.transform(img)[None]
        logits = [self.model(x, sample=False).logits] if self.gated else list(self.model(x))
        return {c: z[0].float().softmax(-1).numpy() for c, z in zip(self.columns, logits)}

    def classify(self, img: Image.Image, k: int = 5, cam: bool = True) -> dict[str, Any]:
        """``{"heads": [{"name", "top": [{"label", "prob"}]}], "gradcam": {...} | None}`` for one image."""
        probs = self.probabilities(img)
        heads = []
        for c, p in probs.items():
            order = np.argsort(-p, kind="stable")[:k]
            names = self.spec.classes[c]
            heads.append({"name": c, "top": [{"label": names[j], "prob": float(p[j])} for j in order]})
        out: dict[str, Any] = {"heads": heads, "gradcam": None}
        if cam and self._cam_model is not None and self._cam_layer is not None:
            top = int(np.argmax(probs[self.columns[0]]))
            x = self.transform(img)[None]
            with self._cam_lock:  # Grad-CAM hooks live on this private copy only
                heat = gradcam(self._cam_model, self._cam_layer, x, [top], backend="own")[0]
            mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
            rgb = (x[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            label = self.spec.classes[self.columns[0]][top]
            out["gradcam"] = {"head": self.columns[0], "label": label, "image": _png_data_url(overlay(rgb, heat))}
        return out


class SimilarService:
    """Nearest works of an image or of a collection work, plus work descriptions and thumbnails.

    Args:
        index: a loaded index (its manifest already verified).
        model: the embedder the index was built from.

    Raises:
        ModelMismatchError: ``model`` is not the index's model.
    """

    def __init__(self, index: RetrievalIndex, model: Any) -> None:
        index.check_model(model_hash(model))
        self.index, self.model = index, model
        self.indexed = np.zeros(len(index.paths), dtype=bool)
        self.indexed[index.ids] = True
        self.label_column = next(iter(index.labels), None)
        self._thumbs: dict[int, bytes] = {}
        self._thumb_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """Collection size, embedding and index kind, model hash (for ``/api/health``)."""
        m = self.index.meta
        return {
            "works": int(len(self.index.ids)),
            "embedding": m.kind,
            "dim": m.dim,
            "index": self.index.params.index_kind,
            "model": m.model_hash,
            "label_columns": list(self.index.labels),
        }

    def check_row(self, row: int) -> None:
        """Raise :class:`NotFoundError` unless ``row`` is an indexed work."""
        if not 0 <= row < len(self.indexed) or not self.indexed[row]:
            raise NotFoundError(f"work {row} is not in the index (rows 0..{len(self.indexed) - 1})")

    def work(self, row: int) -> dict[str, Any]:
        """``{"row", "name", "labels", "label", "thumb"}``: what the page shows of a work (no server path)."""
        self.check_row(row)
        labels = {c: v[row] for c, v in self.index.labels.items()}
        path = self.index.paths[row]
        name = path[len(SYNTHETIC_PREFIX) :] if path.startswith(SYNTHETIC_PREFIX) else Path(path).name
        label = labels.get(self.label_column) if self.label_column else None
        return {"row": row, "name": name, "labels": labels, "label": label, "thumb": f"/api/works/{row}/thumb"}

    def image(self, row: int) -> Image.Image:
        """The decoded image of a work (decode guard applied)."""
        self.check_row(row)
        path = self.index.paths[row]
        if path.startswith(SYNTHETIC_PREFIX):
            raise BadImageError("missing", f"work {row}", "a synthetic work has no image file")
        try:
            return load_image(path)
        except BadImageError as e:  # report the work, not the server path
            raise BadImageError(e.kind, f"work {row} ({Path(path).name})", e.kind.replace("_", " ")) from e

    def _hits(self, scores: np.ndarray, rows: np.ndarray, skip: int, k: int) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = []
        for s, r in zip(scores, rows):
            if r < 0 or r == skip:
                continue
            hits.append(self.work(int(r)) | {"rank": len(hits) + 1, "score": float(s)})
            if len(hits) == k:
                break
        return hits

    def by_image(self, img: Image.Image, k: int) -> list[dict[str, Any]]:
        """Top-``k`` works for an image, embedded exactly as the collection was."""
        q = embed_images(self.model, [img], self.index.meta.kind, self.index.meta.image_size)
        scores, rows = self.index.search(q, k)
        return self._hits(scores[0], rows[0], -1, k)

    def by_row(self, row: int, k: int) -> list[dict[str, Any]]:
        """Top-``k`` works for collection work ``row`` (itself excluded), from its stored vector when available."""
        self.check_row(row)
        q = self.index.vectors(np.array([row]))
        if q is None:
            q = embed_images(self.model, [self.image(row)], self.index.meta.kind, self.index.meta.image_size)
        scores, rows = self.index.search(q, k + 1)
        return self._hits(scores[0], rows[0], row, k)

    def thumb(self, row: int) -> bytes:
        """JPEG thumbnail of a work (cached); :class:`BadImageError` for an unreadable or refused file."""
        with self._thumb_lock:
            cached = self._thumbs.get(row)
        if cached is not None:
            return cached
        im = self.image(row)
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        with self._thumb_lock:
            if len(self._thumbs) < 4096:
                self._thumbs[row] = buf.getvalue()
        return buf.getvalue()


@dataclass
class AppState:
    """What the server has loaded: a classifier, an index, or both."""

    classifier: ClassifierService | None = None
    similar: SimilarService | None = None
    limits: DecodeLimits = DecodeLimits()

    def __post_init__(self) -> None:
        if self.classifier is None and self.similar is None:
            raise ValueError("nothing to serve: give a classifier (--classifier RUN), an index (--index DIR) or both")

    def need_classifier(self) -> ClassifierService:
        if self.classifier is None:
            raise NotFoundError("no classifier is loaded: start the server with --classifier RUN")
        return self.classifier

    def need_index(self) -> SimilarService:
        if self.similar is None:
            raise NotFoundError("no index is loaded: start the server with --index DIR")
        return self.similar
