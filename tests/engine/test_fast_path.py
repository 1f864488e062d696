"""Choosing the input path in real tiny runs: auto caches and says why, reuses the cache, falls back to PIL when it
does not fit; the cache never lands in the data folder; channels_last / compile options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main_pretrain
from ssl_art.engine.fast_path import apply_speed_options
from ssl_art.runtime.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--config", str(ROOT / "configs" / "tiny.yaml"), "model.backbone=test_resnet", "run.device=cpu"]


def _input_lines(run: Path) -> list[str]:
    log = (run / "train.log").read_text().splitlines()
    return [line.split("ssl_art.input: ", 1)[1] for line in log if "ssl_art.input: input path:" in line]


def test_auto_builds_then_reuses_and_falls_back(tmp_path: Path) -> None:
    assert main_pretrain.main([*TINY, f"run.output_dir={tmp_path / 'a'}"]) == 0
    first = _input_lines(tmp_path / "a")
    assert len(first) == 1 and "cached batched augmentation on cpu, ram cache" in first[0] and "built in" in first[0]
    assert str(tmp_path / ".ssl_art_cache") in first[0]  # default: next to the run, not in the data folder
    assert main_pretrain.main([*TINY, f"run.output_dir={tmp_path / 'b'}"]) == 0
    assert "reused from" in _input_lines(tmp_path / "b")[0]
    assert main_pretrain.main([*TINY, f"run.output_dir={tmp_path / 'c'}", "data.cache_max_gb=0"]) == 0
    line = _input_lines(tmp_path / "c")[0]
    assert line.startswith("input path: per-image PIL DataLoader") and "data.cache_max_gb=0" in line
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["steps"] == 2


def test_disk_cache_in_cache_dir_leaves_the_data_folder_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for k in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(data / f"{k}.jpg")
    before = sorted(p.name for p in data.iterdir())
    args = [*TINY, f"data.path={data}", "data.cache=disk", f"data.cache_dir={tmp_path / 'cc'}"]
    assert main_pretrain.main([*args, f"run.output_dir={tmp_path / 'run'}"]) == 0
    assert sorted(p.name for p in data.iterdir()) == before
    (folder,) = list((tmp_path / "cc").iterdir())
    assert (folder / "pixels.u8").stat().st_size == 10 * 3 * 37 * round(37 * 40 / 30)  # 3:4 portraits, 1.15 x 32 px


def test_bad_cache_value_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(lambda: main_pretrain.main([*TINY, "data.cache=fast", f"run.output_dir={tmp_path}"]))
    assert code == 2
    err = capsys.readouterr().err
    assert "error: data.cache='fast' is out of range: one of off, auto, ram, disk" in err and "Traceback" not in err


def test_channels_last_applies_to_conv_weights() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    apply_speed_options(model, channels_last=True, compile_model=False)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert model(x).shape == (2, 4, 6, 6)


def test_channels_last_run(tmp_path: Path) -> None:
    assert main_pretrain.main([*TINY, "run.channels_last=true", f"run.output_dir={tmp_path}"]) == 0


@pytest.mark.slow
def test_compiled_run_keeps_checkpoint_keys(tmp_path: Path) -> None:
    assert main_pretrain.main([*TINY, "run.compile=true", f"run.output_dir={tmp_path}"]) == 0
    state = torch.load(tmp_path / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert not any("_orig_mod" in k for k in state)


def test_fast_path_is_the_default_and_the_demo_uses_it(tmp_path: Path) -> None:
    from ssl_art.config import PretrainConfig, load_config
    from ssl_art.data.cache import plan_cache

    assert PretrainConfig().data.cache == "auto"
    demo = load_config(PretrainConfig, ["--config", str(ROOT / "configs" / "pretrain" / "demo.yaml")])
    d = demo.data
    nbytes = d.synthetic_size * 3 * 74 * 74  # 64 px -> stored 74 x 74 (square synthetic images)
    assert plan_cache(d.cache, nbytes, d.cache_max_gb, d.cache_ram_gb, 10**12)[0] == "ram"
