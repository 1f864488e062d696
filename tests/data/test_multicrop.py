"""Multi-crop local views (``data.aug.n_local``): the per-image path, the config's checks, both input paths end to
end. The batched path's parity with the per-sample reference is in ``test_batch_aug.py``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image

from ssl_art.config import AugCfg, ConfigError, PretrainConfig, config_from_dict, validate
from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_pretrain_transform


def _colour_spread(view: torch.Tensor) -> float:
    """Mean per-pixel std over the RGB channels (0 for a grayscale view), ImageNet normalisation undone."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return float((view * std + mean).std(dim=0).mean())


def test_per_image_locals_follow_the_globals_smaller_and_with_the_views_colours() -> None:
    img = Image.fromarray((torch.rand(48, 64, 3) * 255).to(torch.uint8).numpy())
    aug = AugCfg(preset="simclr", jitter_views="first", grayscale_prob=1.0, n_local=3, local_size=10)
    torch.manual_seed(0)
    views = build_pretrain_transform(aug, 24)(img)
    assert [tuple(v.shape) for v in views] == [(3, 24, 24)] * 2 + [(3, 10, 10)] * 3
    spread = [_colour_spread(v) for v in views]
    assert spread[0] < 1e-6 and min(spread[1:]) > 1e-3  # 'first': only view 0 jittered / grayscale
    every = build_pretrain_transform(AugCfg(preset="simclr", grayscale_prob=1.0, n_local=2), 24)(img)
    assert [tuple(v.shape[-2:]) for v in every] == [(24, 24)] * 2 + [(12, 12)] * 2  # local_size 0: half
    assert max(_colour_spread(v) for v in every) < 1e-6  # 'all': locals jittered like every view


def _cfg(**data: Any) -> PretrainConfig:
    base = {"synthetic_size": 16, "synthetic_image_size": 40, "image_size": 32, "batch_size": 8}
    return config_from_dict(PretrainConfig, {"data": base | data, "model": {"backbone": "test_resnet"}})


@pytest.mark.parametrize(
    ("aug", "key"),
    [
        ({"n_local": 2, "local_size": 32}, "data.aug.local_size"),  # not smaller than the global side
        ({"n_local": 2, "local_min_scale": 0.5}, "data.aug.local_min_scale"),  # above min_scale
        ({"n_local": 2, "crop_overlap": "split"}, "data.aug.crop_overlap"),
        ({"n_local": -1}, "data.aug.n_local"),
        ({"max_scale": 0.1}, "data.aug.max_scale"),  # below min_scale
    ],
)
def test_bad_multicrop_settings_name_the_key(aug: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_cfg(aug=aug))


@pytest.mark.parametrize("cache", ["ram", "off"])
@pytest.mark.parametrize("method", ["simclr", "art_ssl"])
def test_pretraining_with_local_views_on_both_input_paths(tmp_path: object, cache: str, method: str) -> None:
    from ssl_art.engine.pretrain import run_pretrain

    cfg = config_from_dict(
        PretrainConfig,
        {
            "method": method,
            "data": {"synthetic_size": 16, "synthetic_image_size": 40, "image_size": 32, "batch_size": 8,
                     "cache": cache, "num_workers": 0, "aug": {"n_local": 2, "jitter_views": "first"}},
            "model": {"backbone": "test_resnet"},
            "loss": {"queue_size": 16},
            "optim": {"max_steps": 2},
            "run": {"output_dir": str(tmp_path), "progress": False},
        },
    )  # fmt: skip
    res = run_pretrain(cfg)
    assert res.steps == 2 and res.stopped == "done"
