"""View and eval transforms: shapes, the art preset keeping colour, the simclr preset changing it, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_art.config import AugCfg
from ssl_art.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiView,
    build_eval_transform,
    build_pretrain_transform,
    build_view_transform,
)

FLAT = (180, 60, 30)


def _reference_normalised(rgb: tuple[int, int, int]) -> torch.Tensor:
    """Naive ImageNet normalisation of one 8-bit colour, ``(3,)``."""
    return torch.tensor([(c / 255.0 - m) / s for c, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD)])


def _flat(size: tuple[int, int] = (50, 40)) -> Image.Image:
    return Image.new("RGB", size, FLAT)


@pytest.mark.parametrize("preset", ["simclr", "art", "none"])
@pytest.mark.parametrize("size", [32, 48])
def test_shapes(preset: str, size: int) -> None:
    t = build_view_transform(AugCfg(preset=preset, blur_prob=0.5), size)
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (37, 61, 3), dtype=np.uint8))
    x = t(im)
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_eval_transform_resize_then_centre_crop() -> None:
    a = np.zeros((40, 80, 3), dtype=np.uint8)
    a[:, 20:60] = 255  # white centre square of a 2:1 image
    x = build_eval_transform(20)(Image.fromarray(a))
    assert x.shape == (3, 20, 20)
    # Shorter side 40 -> 20, width 80 -> 40, the centre 20 columns are the white square (the antialiasing filter
    # only blends black into the outermost columns).
    white = _reference_normalised((255, 255, 255))[:, None, None]
    assert torch.allclose(x[:, :, 1:-1], white.expand(3, 20, 18), atol=1e-5)
    assert (x[:, :, 0] < white[:, :, 0]).all() and torch.allclose(x[:, :, 0], x[:, :, -1], atol=1e-5)


def test_art_preset_keeps_colour_statistics() -> None:
    aug = AugCfg(preset="art", color_jitter_prob=1.0, grayscale_prob=1.0, min_scale=0.2)  # both ignored by art
    t = build_view_transform(aug, 32)
    ref = _reference_normalised(FLAT)
    torch.manual_seed(0)
    for _ in range(10):
        x = t(_flat())
        assert torch.allclose(x.mean(dim=(1, 2)), ref, atol=1e-4)
        assert x.std(dim=(1, 2)).max() < 1e-4


def test_simclr_preset_changes_colour_statistics() -> None:
    aug = AugCfg(preset="simclr", color_jitter_prob=1.0, grayscale_prob=0.0, color_jitter_strength=0.5)
    t = build_view_transform(aug, 32)
    ref = _reference_normalised(FLAT)
    torch.manual_seed(0)
    diffs = [float((t(_flat()).mean(dim=(1, 2)) - ref).abs().max()) for _ in range(10)]
    assert min(diffs) > 1e-3 and max(diffs) > 0.1
    grey = build_view_transform(dataclasses.replace(aug, color_jitter_prob=0.0, grayscale_prob=1.0), 32)(_flat())
    assert torch.allclose(grey[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], grey[1] * IMAGENET_STD[1] + IMAGENET_MEAN[1])


def test_multiview_independent_views() -> None:
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mv = build_pretrain_transform(AugCfg(preset="art", n_views=3), 24)
    assert isinstance(mv, MultiView)
    views = mv(im)
    assert len(views) == 3 and all(v.shape == (3, 24, 24) for v in views)
    assert not torch.equal(views[0], views[1])
    with pytest.raises(ValueError):
        MultiView(build_eval_transform(8), 0)


def test_validation() -> None:
    with pytest.raises(ValueError, match="simclr, art, none"):
        build_view_transform(AugCfg(preset="heavy"), 32)
    with pytest.raises(ValueError, match="min_scale"):
        build_view_transform(AugCfg(min_scale=0.0), 32)
    with pytest.raises(ValueError, match="hflip_prob"):
        build_view_transform(AugCfg(hflip_prob=1.5), 32)
