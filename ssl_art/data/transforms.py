"""Multi-view augmentations for self-supervised pretraining and the deterministic evaluation transform.

``preset='simclr'`` is the SimCLR recipe (Chen et al., 2020): random resized crop, horizontal flip, colour jitter
(brightness/contrast/saturation ``0.8*s``, hue ``0.2*s``), random grayscale and optional Gaussian blur.
``preset='art'`` deliberately drops colour jitter and grayscale: for art, palette *is* style, and teaching the model
to be invariant to it would erase exactly the signal we want it to learn (blur is still optional but off by
default because it destroys brush texture). ``preset='none'`` is the evaluation transform. Every parameter comes
from :class:`~ssl_art.config.AugCfg`; all views end with ImageNet normalisation. Built on
``torchvision.transforms.v2`` so randomness comes from torch's RNG (seeded per DataLoader worker). The eval
transform starts with :class:`SizeGuard`, the decode guard's post-resize check (``data.decode.check_geometry``),
so an image handed over directly (not via ``load_image``) still cannot turn "shorter side -> S" into a bomb.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from ssl_art.config import AugCfg
from ssl_art.data.decode import MAX_ASPECT, MAX_RESIZED_PIXELS, check_geometry

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PRESETS: tuple[str, ...] = ("simclr", "art", "none")

Transform = Callable[[Image.Image], Tensor]


def _to_normalised_tensor() -> list[v2.Transform]:
    """PIL -> ``(3, H, W)`` float32 in [0, 1] -> ImageNet-normalised."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


class SizeGuard:
    """Pass an image through unchanged after :func:`~ssl_art.data.decode.check_geometry` for a resize to ``side``.

    Args:
        side: the following ``Resize(side)``'s target shorter side.
        max_aspect: largest ``long / short`` side ratio.
        max_resized_pixels: largest pixel count after the resize.

    Raises (when called):
        BadImageError: kind ``decompression_bomb``, before any resize happens.
    """

    def __init__(self, side: int, max_aspect: float = MAX_ASPECT, max_resized_pixels: int = MAX_RESIZED_PIXELS):
        self.side, self.max_aspect, self.max_resized_pixels = side, max_aspect, max_resized_pixels

    def __call__(self, image: Image.Image | Tensor) -> Image.Image | Tensor:
        if isinstance(image, Image.Image):
            w, h = image.size
        else:
            h, w = int(image.shape[-2]), int(image.shape[-1])
        name = getattr(image, "filename", "") or "image"
        check_geometry(w, h, name, w * h, self.max_aspect, self.side, self.max_resized_pixels)
        return image

    def __repr__(self) -> str:
        return (
            f"SizeGuard(side={self.side}, max_aspect={self.max_aspect}, max_resized_pixels={self.max_resized_pixels})"
        )


def build_eval_transform(image_size: int) -> Transform:
    """Guard the size, resize the shorter side to ``image_size``, centre-crop a square: ``(3, S, S)`` normalised."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return v2.Compose(
        [
            SizeGuard(image_size),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            *_to_normalised_tensor(),
        ]
    )


def build_view_transform(aug: AugCfg, image_size: int) -> Transform:
    """One random view ``(3, S, S)`` of a PIL image, according to ``aug.preset``.

    Args:
        aug: augmentation parameters (``color_jitter_*`` and ``grayscale_prob`` are ignored by ``preset='art'``).
        image_size: output side ``S``.

    Returns:
        A callable PIL image -> normalised float tensor ``(3, S, S)``.

    Raises:
        ValueError: for an unknown preset or out-of-range parameters.
    """
    if aug.preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {aug.preset!r}; valid presets: {', '.join(PRESETS)}")
    if not 0.0 < aug.min_scale <= aug.max_scale <= 1.0:
        raise ValueError(f"aug.min_scale <= aug.max_scale must be in (0, 1], got {aug.min_scale}, {aug.max_scale}")
    for name in ("hflip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob"):
        value = getattr(aug, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"aug.{name} must be a probability in [0, 1], got {value}")
    if aug.preset == "none":
        return build_eval_transform(image_size)
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=(aug.min_scale, aug.max_scale), antialias=True),
        v2.RandomHorizontalFlip(aug.hflip_prob),
    ]
    if aug.preset == "simclr":
        s = aug.color_jitter_strength
        jitter = v2.ColorJitter(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=min(0.2 * s, 0.5))
        ops += [v2.RandomApply([jitter], p=aug.color_jitter_prob), v2.RandomGrayscale(aug.grayscale_prob)]
    if aug.blur_prob > 0:
        kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # ~10% of the side, odd (SimCLR)
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=aug.blur_prob))
    return v2.Compose(ops + _to_normalised_tensor())


def split_halves(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The two non-overlapping halves of ``image`` cut across its longer side (an odd middle line is left out),
    in random order (``torch.rand``: seeded per sample like every other draw); see ``data.aug.crop_overlap``."""
    w, h = image.size
    if w >= h:
        a, b = image.crop((0, 0, w // 2, h)), image.crop((w - w // 2, 0, w, h))
    else:
        a, b = image.crop((0, 0, w, h // 2)), image.crop((0, h - h // 2, w, h))
    return (a, b) if float(torch.rand(())) >= 0.5 else (b, a)


def keep_colours(aug: AugCfg) -> AugCfg:
    """``aug`` without colour jitter and grayscale: the views after the first under ``jitter_views='first'``."""
    return dataclasses.replace(aug, color_jitter_prob=0.0, grayscale_prob=0.0)


def local_view_cfg(aug: AugCfg) -> AugCfg:
    """The augmentation of the ``aug.n_local`` local views: crop area in ``[local_min_scale, min_scale]``, colour
    jitter and grayscale as the views after the first (none under ``jitter_views='first'``)."""
    scale = (aug.local_min_scale, aug.min_scale)
    out = dataclasses.replace(aug, min_scale=scale[0], max_scale=scale[1], jitter_views="all", n_local=0)
    return keep_colours(out) if aug.jitter_views == "first" and aug.preset == "simclr" else out


def local_side(aug: AugCfg, image_size: int) -> int:
    """Side of the local views: ``aug.local_size``, or half the global side."""
    return aug.local_size or image_size // 2


class MultiView:
    """``n_views`` independent random views of a PIL image (then ``n_local`` local ones) -> list of ``(3, S, S)``.

    Args:
        transform: the single-view transform of view 0 (e.g. from :func:`build_view_transform`).
        n_views: number of (global) views (at least 1).
        others: the transform of views 1.. (default ``transform``); ``data.aug.jitter_views=first`` gives one
            without colour jitter.
        split: crop view ``k`` from half ``k % 2`` of the canvas (:func:`split_halves`): ``data.aug.crop_overlap``.
        local: the transform of the ``n_local`` local views that follow the global ones (multi-crop).
        n_local: number of local views (needs ``local``).
    """

    def __init__(
        self,
        transform: Transform,
        n_views: int = 2,
        others: Transform | None = None,
        split: bool = False,
        local: Transform | None = None,
        n_local: int = 0,
    ) -> None:
        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        if n_local < 0 or (n_local and local is None):
            raise ValueError(f"n_local must be >= 0 and needs a local transform, got {n_local}")
        self.transform, self.n_views, self.split = transform, n_views, split
        self.others = others if others is not None else transform
        self.local, self.n_local = local, n_local

    def __call__(self, image: Image.Image) -> list[Tensor]:
        halves = split_halves(image) if self.split else (image, image)
        views = [(self.transform if k == 0 else self.others)(halves[k % 2]) for k in range(self.n_views)]
        return views + [self.local(image) for _ in range(self.n_local)] if self.local is not None else views

    def __repr__(self) -> str:
        extra = f", others={self.others!r}" if self.others is not self.transform else ""
        extra += f", n_local={self.n_local}, local={self.local!r}" if self.n_local else ""
        return f"MultiView(n_views={self.n_views}, split={self.split}, transform={self.transform!r}{extra})"


def build_pretrain_transform(aug: AugCfg, image_size: int) -> MultiView:
    """``aug.n_views`` random views per image: the transform pretraining datasets use.

    ``aug.jitter_views='first'``: colour jitter and grayscale on view 0 only; ``aug.crop_overlap='split'``: every
    view crops its own half of the canvas (two views share no pixel); ``aug.n_local``: that many local views of
    side :func:`local_side` follow (:func:`local_view_cfg`).
    """
    first = build_view_transform(aug, image_size)
    others = None
    if aug.jitter_views == "first" and aug.preset == "simclr":
        others = build_view_transform(keep_colours(aug), image_size)
    local = build_view_transform(local_view_cfg(aug), local_side(aug, image_size)) if aug.n_local else None
    split = aug.crop_overlap == "split" and aug.preset != "none"
    return MultiView(first, aug.n_views, others, split=split, local=local, n_local=aug.n_local)
