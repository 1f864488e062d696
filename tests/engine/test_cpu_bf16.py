"""`run.amp=bf16` on CPU: allowed with native bf16, refused with the fix otherwise; fp16 stays CUDA-only."""

from __future__ import annotations

import pytest
import torch

from ssl_art.runtime import device as dev

CPU = torch.device("cpu")


def test_bf16_on_a_cpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.amp_dtype("bf16", CPU) is torch.bfloat16
    assert dev.amp_dtype("auto", CPU) is None  # auto never changes CPU numerics unasked
    assert dev.amp_dtype("off", CPU) is None


def test_bf16_refused_without_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="run.amp=off"):
        dev.amp_dtype("bf16", CPU)


def test_fp16_on_cpu_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    with pytest.raises(ValueError, match="needs CUDA"):
        dev.amp_dtype("fp16", CPU)


@pytest.mark.skipif(not dev.cpu_has_bf16(), reason="this CPU has no native bf16")
def test_bf16_cpu_pretraining_steps_and_stays_finite(tmp_path: object) -> None:
    from ssl_art.config import PretrainConfig, config_from_dict
    from ssl_art.engine.pretrain import run_pretrain

    cfg = config_from_dict(
        PretrainConfig,
        {
            "method": "art_ssl",
            "data": {"synthetic_size": 32, "synthetic_image_size": 32, "image_size": 32, "batch_size": 8},
            "model": {"backbone": "test_resnet", "fusion": {"enabled": True}, "gram": {"enabled": True}},
            "loss": {"w_gram": 0.5, "w_distill": 0.5, "w_soft": 0.5},
            "optim": {"max_steps": 3},
            "run": {"amp": "bf16", "channels_last": True, "output_dir": str(tmp_path), "progress": False},
        },
    )
    res = run_pretrain(cfg)
    assert res.steps == 3 and res.stopped == "done"
