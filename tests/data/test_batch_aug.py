"""Batched augmentation vs the per-image torchvision v2 path: crop distributions, fixed-box resample, colour ops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ssl_art.config import AugCfg
from ssl_art.data import batch_aug as ba
from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD, local_view_cfg

N = 4000


def _v2_boxes(h: int, w: int, scale: tuple[float, float], n: int) -> np.ndarray:
    rrc = v2.RandomResizedCrop(32, scale=scale)
    img = torch.zeros(3, h, w)
    torch.manual_seed(0)
    out = []
    for _ in range(n):
        p = rrc.make_params([img])
        out.append((p["top"], p["left"], p["height"], p["width"]))
    return np.array(out, dtype=np.float64)


def _ours(h: int, w: int, scale: tuple[float, float], n: int) -> np.ndarray:
    u = ba.draw_uniforms(list(range(n)), 1)[:, 0]
    hh, ww = torch.full((n,), h), torch.full((n,), w)
    return ba.crop_params(u, hh, ww, scale).numpy().astype(np.float64)


@pytest.mark.parametrize(
    ("h", "w", "scale"), [(37, 49, (0.25, 1.0)), (40, 40, (0.08, 1.0)), (37, 37, (0.9, 1.0)), (48, 40, (0.05, 0.25))]
)
def test_crop_scale_aspect_and_position_match_v2(h: int, w: int, scale: tuple[float, float]) -> None:
    ref, ours = _v2_boxes(h, w, scale, N), _ours(h, w, scale, N)
    for name, a, b in [
        ("scale", ref[:, 2] * ref[:, 3] / (h * w), ours[:, 2] * ours[:, 3] / (h * w)),
        ("log_aspect", np.log(ref[:, 3] / ref[:, 2]), np.log(ours[:, 3] / ours[:, 2])),
        ("top", ref[:, 0] / h, ours[:, 0] / h),
        ("left", ref[:, 1] / w, ours[:, 1] / w),
    ]:
        res = ks_2samp(a, b)
        assert res.pvalue > 1e-3, (name, res)
    # every box lies inside the image
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= h).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= w).all()


def test_crop_fallback_is_v2_central_crop() -> None:
    # a 4:1 strip: with scale=1 no attempt fits, so v2 falls back to the central crop at the largest valid ratio
    u = ba.draw_uniforms([1, 2], 1)[:, 0]
    got = ba.crop_params(u, torch.tensor([20, 80]), torch.tensor([80, 20]), (1.0, 1.0))
    ref = []
    for h, w in [(20, 80), (80, 20)]:
        p = v2.RandomResizedCrop(8, scale=(1.0, 1.0)).make_params([torch.zeros(3, h, w)])
        ref.append([p["top"], p["left"], p["height"], p["width"]])
    assert got.tolist() == ref


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 6), max(2, w // 6), generator=g)
    return torch.nn.functional.interpolate(low, (h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]


@pytest.mark.parametrize(("box", "size"), [((3, 5, 20, 26), 32), ((0, 0, 40, 50), 32), ((2, 4, 30, 30), 24)])
def test_fixed_box_equals_v2_resized_crop(box: tuple[int, int, int, int], size: int) -> None:
    img = _smooth(40, 50)
    ref = TF.resized_crop(img, *box, [size, size], antialias=True)
    got = ba.resized_crops(img[None], torch.tensor([0]), torch.tensor([box]), torch.tensor([False]), size)[0]
    err = (got - ref).abs()
    if box[2] <= size and box[3] <= size:  # enlarging: the same bilinear, except that v2 clamps at the crop border
        assert err[:, 2:-2, 2:-2].max() < 1e-4  # while roi_align reads the real pixels just outside it
    assert err.mean() < 0.005 and err.max() < 0.06  # shrinking: roi_align averages samples (a box-like filter)


def test_transposed_canvas_crops_the_upright_image() -> None:
    upright = _smooth(50, 40)  # portrait, as the cache stores it: transposed into a landscape canvas
    canvas = upright.transpose(-1, -2).contiguous()
    box = torch.tensor([[6, 3, 30, 24]])
    a = ba.resized_crops(upright[None], torch.tensor([0]), box, torch.tensor([False]), 16)
    b = ba.resized_crops(canvas[None], torch.tensor([0]), box, torch.tensor([True]), 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_colour_ops_match_v2_functional_per_sample() -> None:
    x = torch.stack([_smooth(16, 16, s) for s in range(6)])
    f = torch.tensor([0.0, 0.4, 0.9, 1.0, 1.3, 1.8])
    hue = torch.tensor([-0.5, -0.3, -0.05, 0.0, 0.2, 0.45])
    for k in range(6):
        torch.testing.assert_close(ba.adjust_brightness(x, f)[k], TF.adjust_brightness(x[k], float(f[k])))
        torch.testing.assert_close(ba.adjust_contrast(x, f)[k], TF.adjust_contrast(x[k], float(f[k])))
        torch.testing.assert_close(ba.adjust_saturation(x, f)[k], TF.adjust_saturation(x[k], float(f[k])))
        torch.testing.assert_close(ba.adjust_hue(x, hue)[k], TF.adjust_hue(x[k], float(hue[k])), atol=1e-5, rtol=0)
        torch.testing.assert_close(ba.grayscale(x)[k], TF.rgb_to_grayscale(x[k]))
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.7])
    blurred = ba.gaussian_blur(x, 5, sigma)
    for k in range(6):
        ref = TF.gaussian_blur(x[k], [5, 5], [float(sigma[k])] * 2)
        torch.testing.assert_close(blurred[k], ref, atol=1e-5, rtol=0)


def test_jitter_ranges_are_those_of_the_per_image_path() -> None:
    s = 0.5
    ref = v2.ColorJitter(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=min(0.2 * s, 0.5))
    c = ba.color_ranges(s)
    assert c.brightness == pytest.approx(ref.brightness) and c.contrast == pytest.approx(ref.contrast)
    assert c.saturation == pytest.approx(ref.saturation) and c.hue == pytest.approx(ref.hue)
    assert ba.color_ranges(0.0) == ba.ColorParams(None, None, None, None)


def _reference_view(canvas: torch.Tensor, hw: tuple[int, int], u: torch.Tensor, aug: AugCfg, size: int) -> torch.Tensor:
    """One view the plain way: v2 functional ops one after the other, parameters read from the same uniforms."""
    h, w = hw
    scale = (aug.min_scale, aug.max_scale)
    top, left, ch, cw = ba.crop_params(u[None], torch.tensor([h]), torch.tensor([w]), scale)[0].tolist()
    x = TF.resized_crop(canvas.float() / 255, top, left, ch, cw, [size, size], antialias=True)
    if u[22] < aug.hflip_prob:
        x = TF.horizontal_flip(x)
    c = ba.color_ranges(aug.color_jitter_strength)
    if aug.preset == "simclr" and u[23] < aug.color_jitter_prob:
        for op in torch.argsort(u[24:28]).tolist():
            lo, hi = (c.brightness, c.contrast, c.saturation, c.hue)[op]  # type: ignore[misc]
            f = float(lo + (hi - lo) * u[28 + op])
            fn = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)[op]
            x = fn(x, f)
    if aug.preset == "simclr" and u[32] < aug.grayscale_prob:
        x = TF.rgb_to_grayscale(x, 3)
    if u[33] < aug.blur_prob:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        sig = float(0.1 + 1.9 * u[34])
        x = TF.gaussian_blur(x, [k, k], [sig, sig])
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


@pytest.mark.parametrize("preset", ["simclr", "art"])
def test_batched_pipeline_equals_per_sample_reference(preset: str) -> None:
    aug = dataclasses.replace(AugCfg(preset=preset), blur_prob=0.5, min_scale=0.6)
    size, b = 24, 12
    canvas = (torch.stack([_smooth(26, 34, s) for s in range(b)]) * 255).round().to(torch.uint8)
    hw = torch.tensor([[26, 34]] * b)
    u = ba.draw_uniforms(list(range(100, 100 + b)), 2)
    views = ba.BatchAugment(aug, size)(canvas, hw, torch.zeros(b, dtype=torch.bool), u)
    assert len(views) == 2 and views[0].shape == (b, 3, size, size)
    for v in range(2):
        for k in range(b):
            ref = _reference_view(canvas[k], (26, 34), u[k, v], aug, size)
            assert (views[v][k] - ref).abs().mean() < 0.02, (v, k)  # resample filter differs slightly on shrink


@pytest.mark.parametrize("jitter_views", ["all", "first"])
def test_multicrop_globals_unchanged_and_locals_equal_the_per_sample_reference(jitter_views: str) -> None:
    aug = AugCfg(preset="simclr", min_scale=0.3, jitter_views=jitter_views, n_local=3, local_min_scale=0.1)
    size, b = 24, 8
    canvas = (torch.stack([_smooth(26, 34, s) for s in range(b)]) * 255).round().to(torch.uint8)
    hw, tr = torch.tensor([[26, 34]] * b), torch.zeros(b, dtype=torch.bool)
    seeds = list(range(100, 100 + b))
    u = ba.draw_uniforms(seeds, 2 + 3)
    torch.testing.assert_close(u[:, :2], ba.draw_uniforms(seeds, 2))  # more rows per sample: the first ones stay
    views = ba.build_batch_augment(aug, size)(canvas, hw, tr, u)
    assert [tuple(v.shape[-2:]) for v in views] == [(24, 24)] * 2 + [(12, 12)] * 3  # local_size 0: half the side
    alone = ba.BatchAugment(dataclasses.replace(aug, n_local=0), size)(canvas, hw, tr, u[:, :2])
    for v in range(2):
        torch.testing.assert_close(views[v], alone[v])  # adding locals leaves the global views as they were
    local = local_view_cfg(aug)
    assert (local.min_scale, local.max_scale) == (0.1, 0.3)
    assert (local.color_jitter_prob == 0.0) == (jitter_views == "first")  # 'first': locals keep the colours
    for j in range(3):
        for k in range(b):
            ref = _reference_view(canvas[k], (26, 34), u[k, 2 + j], local, 12)
            assert (views[2 + j][k] - ref).abs().mean() < 0.03, (j, k)


def test_views_depend_only_on_the_sample_seed() -> None:
    aug = AugCfg(preset="simclr", blur_prob=0.3)
    canvas = (torch.stack([_smooth(20, 20, s) for s in range(4)]) * 255).to(torch.uint8)
    hw, tr = torch.tensor([[20, 20]] * 4), torch.zeros(4, dtype=torch.bool)
    seeds = [ba.sample_seed(0, 1, i) for i in range(4)]
    full = ba.BatchAugment(aug, 16)(canvas, hw, tr, ba.draw_uniforms(seeds, 2))
    part = ba.BatchAugment(aug, 16)(canvas[2:], hw[2:], tr[2:], ba.draw_uniforms(seeds[2:], 2))
    torch.testing.assert_close(full[0][2:], part[0])
    torch.testing.assert_close(full[1][2:], part[1])
    assert not torch.equal(full[0], full[1])  # two views differ


def test_sample_seed_matches_seeded_dataset() -> None:
    from ssl_art.engine.sampler import SeededDataset

    class Probe(torch.utils.data.Dataset[int]):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> int:
            return torch.initial_seed()

    assert SeededDataset(Probe(), seed=3)[2 * 10 + 7] == ba.sample_seed(3, 2, 7)


def test_rejects_bad_preset() -> None:
    with pytest.raises(ValueError, match="valid presets"):
        ba.BatchAugment(AugCfg(preset="nope"), 16)
