"""Batched multi-view augmentation of ``(B, 3, S, L)`` uint8 canvases on the training device.

The per-image ``torchvision.transforms.v2`` recipe of :mod:`ssl_art.data.transforms` (random resized crop, flip,
and for ``preset='simclr'`` colour jitter in random order, random grayscale; optional Gaussian blur; ImageNet
normalisation) applied to a whole batch at once: every view of every sample is one box of a single
``torchvision.ops.roi_align`` resample, the colour ops take per-sample factors, the blur is one grouped
convolution with per-sample kernels. Parameters follow v2's distributions exactly (same scale / log-ratio draws
and centre-crop fallback as ``RandomResizedCrop.make_params``, same factor ranges as ``ColorJitter``), but come
from a per-sample generator seeded by ``(seed, epoch, index)`` (:func:`sample_seed`, the formula of
:class:`~ssl_art.engine.sampler.SeededDataset`), so a view depends only on which sample it is, never on batch
composition, device or what ran before: exact resume holds. Canvases come from
:class:`~ssl_art.data.cache.ImageCache`: valid region ``hw`` at the top-left, portrait images stored transposed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from ssl_art.config import AugCfg
from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PRESETS, local_side, local_view_cfg

N_UNIFORMS = 40  # uniforms drawn per view; layout below
_AREA, _RATIO = slice(0, 10), slice(10, 20)  # 10 crop attempts, as v2
_TOP, _LEFT, _FLIP, _JITTER, _ORDER, _FACTORS = 20, 21, 22, 23, slice(24, 28), slice(28, 32)
_GRAY, _BLUR, _SIGMA, _SPLIT = 32, 33, 34, 35
RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's default aspect-ratio range
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The per-sample augmentation seed, identical to :class:`~ssl_art.engine.sampler.SeededDataset`'s."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63)


def draw_uniforms(seeds: Sequence[int], n_views: int) -> Tensor:
    """``(B, n_views, N_UNIFORMS)`` float64 uniforms in [0, 1), row ``b`` a pure function of ``seeds[b]``."""
    out = torch.empty(len(seeds), n_views, N_UNIFORMS, dtype=torch.float64)
    g = torch.Generator()
    for b, s in enumerate(seeds):
        g.manual_seed(int(s))
        out[b] = torch.rand(n_views, N_UNIFORMS, generator=g, dtype=torch.float64)
    return out


def crop_params(
    u: Tensor, height: Tensor, width: Tensor, scale: tuple[float, float], ratio: tuple[float, float] = RATIO
) -> Tensor:
    """Vectorised ``v2.RandomResizedCrop.make_params``: ``(K, 4)`` int64 ``(top, left, h, w)`` per view.

    Args:
        u: ``(K, N_UNIFORMS)`` uniforms (see module layout).
        height, width: ``(K,)`` image sizes.
        scale: area fraction range; ratio: aspect-ratio (w / h) range, sampled log-uniformly.
    """
    h_img, w_img = height.to(torch.float64)[:, None], width.to(torch.float64)[:, None]
    area = h_img * w_img * (scale[0] + (scale[1] - scale[0]) * u[:, _AREA])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[:, _RATIO])
    w = torch.round(torch.sqrt(area * aspect))  # round half to even, like Python's round
    h = torch.round(torch.sqrt(area / aspect))
    ok = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)  # the first attempt that fits
    hit = ok.any(dim=1)
    ch, cw = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    h_img, w_img = h_img[:, 0], w_img[:, 0]
    top = torch.floor(u[:, _TOP] * (h_img - ch + 1))
    left = torch.floor(u[:, _LEFT] * (w_img - cw + 1))
    # fallback: central crop with the aspect ratio clamped into range
    in_ratio = w_img / h_img
    fw = torch.where(in_ratio > ratio[1], torch.round(h_img * ratio[1]), w_img)
    fh = torch.where(in_ratio < ratio[0], torch.round(w_img / ratio[0]), h_img)
    ftop, fleft = torch.div(h_img - fh, 2, rounding_mode="floor"), torch.div(w_img - fw, 2, rounding_mode="floor")
    out = torch.stack(
        [
            torch.where(hit, top, ftop),
            torch.where(hit, left, fleft),
            torch.where(hit, ch, fh),
            torch.where(hit, cw, fw),
        ],
        dim=1,
    )
    return out.to(torch.int64)


def split_regions(height: Tensor, width: Tensor, u_split: Tensor, n_views: int) -> Tensor:
    """``(V*B, 4)`` int64 ``(top, left, h, w)`` half-canvas regions for ``crop_overlap='split'``, view-major rows.

    Each canvas is cut in two along its longer side (the halves never overlap; an odd middle line is left out);
    view ``k`` of sample ``i`` gets half ``(k + flip_i) % 2``, ``flip_i = u_split[i] < 0.5``, so two views never
    share a pixel: they share the painting's style, not its content. As
    :func:`~ssl_art.data.transforms.split_halves` on the per-image path.

    Args:
        height, width: ``(V*B,)`` upright image sizes (view-major, as in :meth:`BatchAugment.__call__`).
        u_split: ``(B,)`` uniforms (view 0's ``_SPLIT``).
    """
    b = u_split.shape[0]
    half = (torch.arange(n_views).repeat_interleave(b) + (u_split < 0.5).to(torch.int64).repeat(n_views)) % 2
    wide = width >= height
    hh, hw = torch.where(wide, height, height // 2), torch.where(wide, width // 2, width)
    top = torch.where(wide, torch.zeros_like(height), half * (height - hh))
    left = torch.where(wide, half * (width - hw), torch.zeros_like(width))
    return torch.stack([top, left, hh, hw], dim=1).to(torch.int64)


def center_params(height: Tensor, width: Tensor) -> Tensor:
    """``(K, 4)`` centred square boxes of side ``min(h, w)``: the eval transform's resize + centre crop."""
    side = torch.minimum(height, width)
    return torch.stack([(height - side) // 2, (width - side) // 2, side, side], dim=1).to(torch.int64)


def resized_crops(canvas: Tensor, batch_index: Tensor, boxes: Tensor, transposed: Tensor, size: int) -> Tensor:
    """Crop every box and resize it to ``size x size`` in one ``roi_align`` call.

    Args:
        canvas: ``(B, 3, S, L)`` float images (valid region top-left, edge-replicated beyond it).
        batch_index: ``(K,)`` row of ``canvas`` each box reads.
        boxes: ``(K, 4)`` ``(top, left, h, w)`` in the image's upright orientation.
        transposed: ``(K,)`` bool, the canvas holds the image transposed (portrait stored landscape).
        size: output side.

    Returns:
        ``(K, 3, size, size)``: bilinear, averaging ``ceil(box / size)`` samples per output pixel when shrinking.
    """
    top, left, h, w = boxes.to(canvas.dtype).unbind(1)
    y0, x0 = torch.where(transposed, left, top), torch.where(transposed, top, left)
    bh, bw = torch.where(transposed, w, h), torch.where(transposed, h, w)
    rois = torch.stack([batch_index.to(canvas.dtype), x0, y0, x0 + bw, y0 + bh], dim=1)
    out = roi_align(canvas, rois.to(canvas.device), (size, size), 1.0, -1, True)
    return _where_rows(transposed, out, lambda y: y.transpose(-1, -2))


def _where_rows(mask: Tensor, x: Tensor, fn: Any) -> Tensor:
    """``x`` with ``fn`` applied to the rows where ``mask`` is set (in place; only those rows are computed)."""
    sel = mask.nonzero()[:, 0].to(x.device)
    if sel.numel():
        x[sel] = fn(x[sel])
    return x


def grayscale(x: Tensor) -> Tensor:
    """``(K, 3, H, W)`` -> ``(K, 1, H, W)`` luma with torchvision's weights."""
    r, g, b = x.unbind(1)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


# The colour ops below return new tensors and work in place on their own temporaries: on CPU a fresh allocation
# costs more than the arithmetic (page faults), so each op allocates as few full-size tensors as it can.


def _col(f: Tensor, x: Tensor) -> Tensor:
    return f.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    """Per-sample ``F.adjust_brightness`` on ``[0, 1]`` floats: ``clamp(f * x)``."""
    return x.mul(_col(f, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    """Per-sample ``F.adjust_contrast``: blend with the image's mean luma."""
    fc = _col(f, x)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return x.mul(fc).add_(mean.mul_(1.0 - fc)).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    """Per-sample ``F.adjust_saturation``: blend with the luma image."""
    fc = _col(f, x)
    return x.mul(fc).add_(grayscale(x).mul_(1.0 - fc)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, f: Tensor) -> Tensor:
    """Per-sample ``F.adjust_hue``: rotate the HSV hue by ``f`` (in turns, ``[-0.5, 0.5]``).

    RGB -> HSV as torchvision (hue sector by the max channel, ties in r, g, b order); HSV -> RGB branch-free:
    channel ``n`` is ``v - v*s*clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6h) mod 6`` and ``v*s = max - min``.
    """
    r, g, b = x.unbind(1)
    minc, maxc = torch.aminmax(x, dim=1)
    delta = maxc - minc
    d = delta.clamp_min(1e-12)  # delta == 0: grey, the hue is irrelevant (v*s = 0)
    h = torch.where(
        maxc == r, (g - b).div_(d), torch.where(maxc == g, (b - r).div_(d).add_(2.0), (r - g).div_(d).add_(4.0))
    )
    h6 = h.add_(f.to(device=x.device, dtype=x.dtype).view(-1, 1, 1) * 6.0).remainder_(6.0)
    out = torch.empty_like(x)
    for c, n in enumerate((5.0, 3.0, 1.0)):
        k = (h6 + n).remainder_(6.0)
        t = torch.minimum(k, torch.sub(4.0, k)).clamp_(0.0, 1.0).mul_(delta)
        torch.sub(maxc, t, out=out[:, c])
    return out


def gaussian_blur(x: Tensor, kernel: int, sigma: Tensor) -> Tensor:
    """Per-sample ``F.gaussian_blur`` (square kernel, reflect padding) as one grouped separable convolution."""
    k, c = x.shape[0], x.shape[1]
    half = (kernel - 1) / 2.0
    pos = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    w1 = torch.softmax(-0.5 * (pos[None, :] / sigma.to(x).view(-1, 1)) ** 2, dim=1)  # (K, kernel), sums to 1
    w1 = w1.repeat_interleave(c, dim=0)  # (K*C, kernel)
    y = F.pad(x.reshape(1, k * c, *x.shape[2:]), [kernel // 2] * 4, mode="reflect")
    y = F.conv2d(y, w1[:, None, None, :], groups=k * c)  # along W
    y = F.conv2d(y, w1[:, None, :, None], groups=k * c)  # along H
    return y.reshape(x.shape)


@dataclass(frozen=True)
class ColorParams:
    """v2 ``ColorJitter`` ranges (``None`` = op disabled), from :func:`color_ranges`."""

    brightness: tuple[float, float] | None
    contrast: tuple[float, float] | None
    saturation: tuple[float, float] | None
    hue: tuple[float, float] | None


def color_ranges(strength: float) -> ColorParams:
    """Factor ranges of ``v2.ColorJitter(0.8*s, 0.8*s, 0.8*s, min(0.2*s, 0.5))`` as the per-image path builds it."""
    b = 0.8 * strength
    rng = (max(0.0, 1.0 - b), 1.0 + b) if b > 0 else None
    hue = min(0.2 * strength, 0.5)
    return ColorParams(rng, rng, rng, (-hue, hue) if hue > 0 else None)


class BatchAugment:
    """``n_views`` augmented views of a batch of cached canvases, on the canvases' device.

    Args:
        aug: the same :class:`~ssl_art.config.AugCfg` the per-image path uses.
        image_size: output side.
        normalize: end with ImageNet normalisation (as the per-image path does).

    Raises:
        ValueError: unknown preset or out-of-range probabilities.
    """

    def __init__(self, aug: AugCfg, image_size: int, normalize: bool = True) -> None:
        if aug.preset not in PRESETS:
            raise ValueError(f"unknown augmentation preset {aug.preset!r}; valid presets: {', '.join(PRESETS)}")
        if not 0.0 < aug.min_scale <= aug.max_scale <= 1.0:
            raise ValueError(f"aug.min_scale <= aug.max_scale must be in (0, 1], got {aug.min_scale}, {aug.max_scale}")
        self.aug, self.size, self.normalize = aug, image_size, normalize
        self.scale = (aug.min_scale, aug.max_scale)
        self.color = color_ranges(aug.color_jitter_strength)
        self.blur_kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # as build_view_transform

    def __call__(self, canvas: Tensor, hw: Tensor, transposed: Tensor, u: Tensor) -> list[Tensor]:
        """Augment.

        Args:
            canvas: ``(B, 3, S, L)`` uint8 (or float in [0, 1]) on the target device.
            hw: ``(B, 2)`` valid ``(h, w)`` of each canvas, in stored orientation.
            transposed: ``(B,)`` bool, stored transposed.
            u: ``(B, V, N_UNIFORMS)`` uniforms from :func:`draw_uniforms`.

        Returns:
            ``V`` tensors ``(B, 3, size, size)`` float32 on ``canvas.device``; row ``b`` of view ``v`` uses ``u[b, v]``.
        """
        b, v = u.shape[0], u.shape[1]
        dev = canvas.device
        x = canvas.float().div_(255.0) if canvas.dtype == torch.uint8 else canvas.float()
        uu = u.transpose(0, 1).reshape(b * v, N_UNIFORMS)  # view-major: rows v*B .. v*B+B-1 are view v
        t = transposed.cpu().repeat(v)
        hw_c = hw.cpu().to(torch.int64)
        height = torch.where(transposed.cpu(), hw_c[:, 1], hw_c[:, 0]).repeat(v)  # upright sizes
        width = torch.where(transposed.cpu(), hw_c[:, 0], hw_c[:, 1]).repeat(v)
        a = self.aug
        if a.preset == "none":
            boxes = center_params(height, width)
        elif a.crop_overlap == "split":  # each view crops its own half of the canvas
            region = split_regions(height, width, u[:, 0, _SPLIT], v)
            boxes = crop_params(uu, region[:, 2], region[:, 3], self.scale)
            boxes[:, :2] += region[:, :2]
        else:
            boxes = crop_params(uu, height, width, self.scale)
        out = resized_crops(x, torch.arange(b).repeat(v), boxes, t, self.size)
        if a.preset != "none":
            out = _where_rows(uu[:, _FLIP] < a.hflip_prob, out, lambda y: y.flip(-1))
        if a.preset == "simclr":
            colour = torch.ones(b * v, dtype=torch.bool)  # jitter_views='first': rows of view 0 only
            if a.jitter_views == "first":
                colour[b:] = False
            out = self._jitter(out, uu, colour)
            out = _where_rows(colour & (uu[:, _GRAY] < a.grayscale_prob), out, lambda y: grayscale(y).expand_as(y))
        if a.preset != "none" and a.blur_prob > 0:
            sel = (uu[:, _BLUR] < a.blur_prob).nonzero()[:, 0]
            if sel.numel():
                sigma = 0.1 + (2.0 - 0.1) * uu[sel, _SIGMA]
                sel_d = sel.to(dev)
                out[sel_d] = gaussian_blur(out[sel_d], self.blur_kernel, sigma.to(dev))
        if self.normalize:
            mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
            out = (out - mean) / std
        return list(out.split(b))

    def _jitter(self, x: Tensor, u: Tensor, rows: Tensor) -> Tensor:
        """``RandomApply([ColorJitter], p)`` on the ``rows`` mask: each sample's four ops in its own random order."""
        c = self.color
        ranges = (c.brightness, c.contrast, c.saturation, c.hue)
        fns = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        apply = rows & (u[:, _JITTER] < self.aug.color_jitter_prob)
        order = torch.argsort(u[:, _ORDER], dim=1)  # a uniform random permutation per sample (like randperm(4))
        uf = u[:, _FACTORS]
        for stage in range(4):
            for op, (rng, fn) in enumerate(zip(ranges, fns, strict=True)):
                if rng is None:
                    continue
                sel = (apply & (order[:, stage] == op)).nonzero()[:, 0]
                if sel.numel() == 0:
                    continue
                factor = (rng[0] + (rng[1] - rng[0]) * uf[sel, op]).to(x.device)
                sel_d = sel.to(x.device)
                x[sel_d] = fn(x[sel_d], factor)
        return x


class MultiCropAugment:
    """``n_views`` global views (:class:`BatchAugment`) then ``n_local`` local ones of side
    :func:`~ssl_art.data.transforms.local_side` (:func:`~ssl_art.data.transforms.local_view_cfg`), as the per-image
    path's :class:`~ssl_art.data.transforms.MultiView`. Uniforms ``u[:, :n_views]`` drive the global views exactly
    as without locals, ``u[:, n_views:]`` the local ones."""

    def __init__(self, aug: AugCfg, image_size: int, normalize: bool = True) -> None:
        self.n_views = aug.n_views
        self.globals = BatchAugment(aug, image_size, normalize)
        self.locals = BatchAugment(local_view_cfg(aug), local_side(aug, image_size), normalize)

    def __call__(self, canvas: Tensor, hw: Tensor, transposed: Tensor, u: Tensor) -> list[Tensor]:
        v = self.n_views
        return self.globals(canvas, hw, transposed, u[:, :v]) + self.locals(canvas, hw, transposed, u[:, v:])


def build_batch_augment(aug: AugCfg, image_size: int) -> BatchAugment | MultiCropAugment:
    """The batched views of ``aug``: ``aug.n_views + aug.n_local`` tensors per batch (uniform rows per sample)."""
    return MultiCropAugment(aug, image_size) if aug.n_local else BatchAugment(aug, image_size)
