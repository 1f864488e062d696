"""``data.aug.crop_overlap=split`` and ``data.aug.jitter_views=first`` on both input paths (issue 16's invariances)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from ssl_art.config import AugCfg
from ssl_art.data import batch_aug as ba
from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_pretrain_transform, split_halves


def _two_colour(h: int, w: int) -> torch.Tensor:
    """``(3, h, w)`` uint8: the first half (across the longer side) pure red, the second pure blue."""
    x = torch.zeros(3, h, w, dtype=torch.uint8)
    if w >= h:
        x[0, :, : w // 2], x[2, :, w // 2 :] = 255, 255
    else:
        x[0, : h // 2], x[2, h // 2 :] = 255, 255
    return x


def _redness(view: torch.Tensor) -> torch.Tensor:
    """Per-image mean of (red - blue) in [0, 1] units, undoing the ImageNet normalisation: +1 red, -1 blue."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = view * std + mean
    return (x[:, 0] - x[:, 2]).mean(dim=(1, 2))


@pytest.mark.parametrize(("h", "w"), [(30, 50), (51, 31), (40, 40)])
def test_split_regions_are_disjoint_halves(h: int, w: int) -> None:
    b, v = 64, 2
    u = ba.draw_uniforms(list(range(b)), v)[:, 0, ba._SPLIT]
    r = ba.split_regions(torch.full((b * v,), h), torch.full((b * v,), w), u, v)
    a, c = r[:b], r[b:]
    assert (r[:, 0] >= 0).all() and (r[:, 1] >= 0).all()
    assert (r[:, 0] + r[:, 2] <= h).all() and (r[:, 1] + r[:, 3] <= w).all()
    # the two views' regions never overlap: separated along the longer side
    if w >= h:
        assert ((a[:, 1] + a[:, 3] <= c[:, 1]) | (c[:, 1] + c[:, 3] <= a[:, 1])).all()
    else:
        assert ((a[:, 0] + a[:, 2] <= c[:, 0]) | (c[:, 0] + c[:, 2] <= a[:, 0])).all()
    first_is_top_left = (a[:, :2] == 0).all(dim=1)
    assert 0 < int(first_is_top_left.sum()) < b  # which half view 0 gets is random per sample


@pytest.mark.parametrize(("h", "w", "transposed"), [(32, 48, False), (48, 32, True)])
def test_batched_split_views_never_share_a_half(h: int, w: int, transposed: bool) -> None:
    b = 32
    upright = torch.stack([_two_colour(h, w)] * b)
    canvas = upright.transpose(-1, -2).contiguous() if transposed else upright
    hw = torch.tensor([list(canvas.shape[-2:])] * b)
    aug = AugCfg(preset="art", crop_overlap="split", min_scale=0.2, hflip_prob=0.0)
    u = ba.draw_uniforms(list(range(b)), 2)
    v0, v1 = ba.BatchAugment(aug, 16)(canvas, hw, torch.full((b,), transposed), u)
    r0, r1 = _redness(v0), _redness(v1)
    assert (r0 * r1 < 0).all(), (r0, r1)  # one view all red, the other all blue, for every sample
    assert (r0.abs() > 0.9).all() and (r1.abs() > 0.9).all()
    # without the split the two views overlap: some pairs see the same colour
    any_aug = dataclasses.replace(aug, crop_overlap="any")
    same = ba.BatchAugment(any_aug, 16)(canvas, hw, torch.full((b,), transposed), u)
    assert (_redness(same[0]) * _redness(same[1]) > 0).any()


def test_per_image_split_halves_and_views() -> None:
    img = Image.new("RGB", (41, 20))
    torch.manual_seed(0)
    halves = [split_halves(img) for _ in range(40)]
    assert all(a.size == (20, 20) and b.size == (20, 20) for a, b in halves)
    pic = Image.fromarray(_two_colour(24, 40).permute(1, 2, 0).numpy())
    t = build_pretrain_transform(AugCfg(preset="art", crop_overlap="split", min_scale=0.2, hflip_prob=0.0), 16)
    firsts = []
    for s in range(24):
        torch.manual_seed(s)
        v0, v1 = t(pic)
        r0, r1 = float(_redness(v0[None])), float(_redness(v1[None]))
        assert r0 * r1 < 0 and abs(r0) > 0.9 and abs(r1) > 0.9
        firsts.append(r0 > 0)
    assert 0 < sum(firsts) < len(firsts)  # random which view gets which half


def test_batched_jitter_on_first_view_only() -> None:
    b = 24
    canvas = (torch.rand(b, 3, 20, 28) * 255).to(torch.uint8)
    hw, tr = torch.tensor([[20, 28]] * b), torch.zeros(b, dtype=torch.bool)
    u = ba.draw_uniforms(list(range(b)), 2)
    aug = AugCfg(preset="simclr", jitter_views="first", color_jitter_prob=1.0, grayscale_prob=0.5)
    first = ba.BatchAugment(aug, 16)(canvas, hw, tr, u)
    plain = ba.BatchAugment(dataclasses.replace(aug, color_jitter_prob=0.0, grayscale_prob=0.0), 16)(canvas, hw, tr, u)
    every = ba.BatchAugment(dataclasses.replace(aug, jitter_views="all"), 16)(canvas, hw, tr, u)
    torch.testing.assert_close(first[1], plain[1])  # view 1: crop + flip only, colours kept
    torch.testing.assert_close(first[0], every[0])  # view 0: jittered exactly as with jitter on every view
    assert not torch.allclose(first[0], plain[0])
    assert not torch.allclose(every[1], plain[1])


def test_per_image_jitter_on_first_view_only() -> None:
    img = Image.fromarray((torch.rand(24, 24, 3) * 255).to(torch.uint8).numpy())
    aug = AugCfg(preset="simclr", jitter_views="first", color_jitter_prob=1.0, grayscale_prob=0.0, min_scale=1.0)
    t = build_pretrain_transform(dataclasses.replace(aug, hflip_prob=0.0), 24)
    torch.manual_seed(0)
    v0, v1 = t(img)
    ref = build_pretrain_transform(AugCfg(preset="art", min_scale=1.0, hflip_prob=0.0), 24)(img)[0]
    torch.testing.assert_close(v1, ref)  # the second view keeps the painting's colours
    assert not torch.allclose(v0, ref)


def test_the_per_image_pretraining_path_applies_every_view_option(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data.cache=off`` (or a collection too large to cache) trains on the PIL path: it must build the views
    ``build_pretrain_transform`` builds (``jitter_views=first``: the second view keeps its colours), not a plain
    ``MultiView`` that silently jitters every view."""
    from ssl_art.config import PretrainConfig, config_from_dict
    from ssl_art.engine import pretrain

    seen: list[object] = []

    class Stop(Exception):
        pass

    def spy(collection: object, transform: object, **kw: object) -> None:
        seen.append(transform)
        raise Stop

    monkeypatch.setattr(pretrain, "ImageDataset", spy)
    aug = {"preset": "simclr", "jitter_views": "first", "color_jitter_prob": 1.0, "grayscale_prob": 1.0}
    cfg = config_from_dict(
        PretrainConfig,
        {
            "data": {"synthetic_size": 16, "synthetic_image_size": 32, "image_size": 24, "batch_size": 8,
                     "cache": "off", "aug": aug},
            "model": {"backbone": "test_resnet"},
            "run": {"output_dir": str(tmp_path), "progress": False},
        },
    )  # fmt: skip
    with pytest.raises(Stop):
        pretrain.run_pretrain(cfg)
    img = Image.fromarray(_two_colour(40, 40).permute(1, 2, 0).numpy())
    views = seen[0](img)  # type: ignore[operator]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    spread = [float((v * std + mean).std(dim=0).mean()) for v in views]  # 0 for a grayscale view
    assert spread[0] < 1e-6 < spread[1]  # view 0 jittered + grayscale (p = 1), view 1 keeps its colours
