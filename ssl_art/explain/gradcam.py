"""Grad-CAM heatmaps (Selvaraju et al. 2017) for a classifier, and PNG overlays.

Uses ``pytorch-grad-cam`` (the ``grad-cam`` package) when installed, else an own implementation of the same formula:
for the target class score ``y_c`` and the target layer's activations ``A (B, K, h, w)``,
``w_k = mean_{ij} dy_c/dA_kij`` and ``cam = ReLU(sum_k w_k A_k)``, min-max scaled to ``[0, 1]`` per image and
bilinearly resized to the input size. Grad-CAM needs the layer's activations and their gradients, which only hooks
can provide for an arbitrary layer; the hooks are removed before returning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn


def _scale(cam: Tensor) -> Tensor:
    """Per-image min-max scaling of ``(B, H, W)`` to ``[0, 1]`` (pytorch-grad-cam's ``scale_cam_image``)."""
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    cam = cam - lo
    hi = cam.flatten(1).max(dim=1).values[:, None, None]
    return cam / (hi + 1e-7)


def gradcam_own(model: nn.Module, target_layer: nn.Module, x: Tensor, targets: list[int] | None = None) -> Tensor:
    """Grad-CAM from activations and gradients of ``target_layer``.

    Args:
        model: classifier ``(B, 3, H, W) -> (B, C)`` logits.
        target_layer: a sub-module producing ``(B, K, h, w)`` maps (e.g. the last conv stage).
        x: ``(B, 3, H, W)`` normalised images.
        targets: class per image; default the predicted class.

    Returns:
        ``(B, H, W)`` heatmaps in ``[0, 1]``.
    """
    store: dict[str, Tensor] = {}

    def fwd_hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))

    handle = target_layer.register_forward_hook(fwd_hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            cls = logits.argmax(dim=1).tolist() if targets is None else targets
            model.zero_grad()
            logits[torch.arange(len(cls)), torch.as_tensor(cls)].sum().backward()
    finally:
        handle.remove()
        model.train(was_training)
    act, grad = store["act"].detach(), store["grad"].detach()
    if act.ndim != 4:
        raise ValueError(f"target layer must output (B, K, h, w) maps, got {tuple(act.shape)}")
    weights = grad.mean(dim=(2, 3))  # (B, K)
    cam = F.relu((weights[:, :, None, None] * act).sum(dim=1))  # (B, h, w)
    cam = _scale(cam)
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _scale(cam.clamp_min(0))


def gradcam(
    model: nn.Module, target_layer: nn.Module, x: Tensor, targets: list[int] | None = None, backend: str = "auto"
) -> NDArray[np.float32]:
    """Grad-CAM heatmaps ``(B, H, W)`` in ``[0, 1]``; ``backend`` = ``auto | grad-cam | own``."""
    if backend not in ("auto", "grad-cam", "own"):
        raise ValueError(f"backend must be auto, grad-cam or own; got '{backend}'")
    if backend != "own":
        try:
            from pytorch_grad_cam import GradCAM
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        except ImportError:
            if backend == "grad-cam":
                raise
        else:
            tg = None if targets is None else [ClassifierOutputTarget(t) for t in targets]
            with GradCAM(model=model, target_layers=[target_layer]) as cam:
                return np.asarray(cam(input_tensor=x, targets=tg), dtype=np.float32)
    return gradcam_own(model, target_layer, x, targets).cpu().numpy().astype(np.float32)


def save_gradcam_overlay(
    images: NDArray[Any], cams: NDArray[Any], path: str | Path, titles: list[str] | None = None, alpha: float = 0.45
) -> Path:
    """PNG grid: each image with its heatmap (jet colormap) blended on top.

    Args:
        images: ``(B, H, W, 3)`` RGB in ``[0, 1]`` (un-normalised) or uint8.
        cams: ``(B, H, W)`` heatmaps in ``[0, 1]``.
        path: output PNG.
        titles: optional caption per image.
        alpha: heatmap opacity.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = np.asarray(images, dtype=np.float32)
    imgs = imgs / 255.0 if imgs.max() > 1.0 else imgs
    b = len(imgs)
    fig, axes = plt.subplots(1, b, figsize=(3 * b, 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        heat = plt.get_cmap("jet")(np.clip(cams[i], 0, 1))[..., :3]
        ax.imshow((1 - alpha) * imgs[i] + alpha * heat)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.suptitle("Grad-CAM", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


class SelectHead(nn.Module):
    """A multi-head classifier (``forward -> list of (B, C_t)``) seen as one ``(B, C)`` logit model for Grad-CAM."""

    def __init__(self, model: nn.Module, head: int = 0):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out[self.head] if isinstance(out, (list, tuple)) else out


def default_target_layer(model: nn.Module) -> nn.Module:
    """The last feature stage of the (first) timm network inside ``model`` (e.g. ``layer4`` of a ResNet).

    Raises:
        ValueError: no timm network with ``feature_info`` inside, or its last stage outputs tokens (ViT), for
            which Grad-CAM needs a reshape this helper does not guess.
    """
    for m in model.modules():
        info = getattr(m, "feature_info", None)
        if info is not None and len(info):
            name = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
            if "blocks" in name and "stages" not in name:
                raise ValueError(f"last stage '{name}' outputs tokens (ViT): pass a convolutional target layer")
            layer: nn.Module = m.get_submodule(name)
            return layer
    raise ValueError("no timm network with feature_info found: pass target_layer explicitly")


def gradcam_png(
    model: nn.Module,
    images: list[str],
    path: str | Path,
    image_size: int,
    target_layer: nn.Module | None = None,
    class_names: list[str] | None = None,
    backend: str = "auto",
) -> Path:
    """Grad-CAM overlays of image files for their predicted class, one PNG (captions: class and probability).

    Args:
        model: classifier ``(B, 3, H, W) -> (B, C)`` (wrap multi-head models in :class:`SelectHead`).
        images: image file paths.
        path: output PNG.
        image_size: eval transform size (the classifier's training size).
        target_layer: default :func:`default_target_layer`.
        class_names: names for the captions.
        backend: ``auto | grad-cam | own``.
    """
    from PIL import Image

    from ssl_art.data import build_eval_transform
    from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    tf = build_eval_transform(image_size)
    xs = []
    for p in images:
        with Image.open(p) as f:
            xs.append(tf(f.convert("RGB")))
    x = torch.stack(xs)
    layer = target_layer if target_layer is not None else default_target_layer(model)
    with torch.no_grad():
        probs = model.eval()(x).softmax(dim=1)
    pred = probs.argmax(dim=1).tolist()
    cams = gradcam(model, layer, x, pred, backend)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    rgb = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    titles = [
        f"{class_names[c] if class_names else c} {probs[i, c]:.2f}\n{Path(images[i]).name[:20]}"
        for i, c in enumerate(pred)
    ]
    return save_gradcam_overlay(rgb, cams, path, titles)
