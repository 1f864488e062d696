"""``main_linear`` end to end on tiny synthetic and generated-folder collections (CPU, a few seconds each)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_art.checkpoint import save_checkpoint
from ssl_art.config import (
    ConfigError,
    DataCfg,
    LinearConfig,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    load_yaml,
    validate,
)
from ssl_art.eval.run import _build_models, run_linear_eval
from ssl_art.methods.registry import build_pretrain_model


def _load_main():  # type: ignore[no-untyped-def]
    """Import ``main_linear.py`` from the repository root, wherever pytest was started."""
    path = Path(__file__).resolve().parents[2] / "main_linear.py"
    spec = importlib.util.spec_from_file_location("main_linear", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


main_linear = _load_main()

TINY = [
    "data.synthetic_size=42",
    "data.synthetic_image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "model.backbone=resnet10t",
    "model.n_intermediates=2",
    "eval.folds=2",
    "eval.knn_k=5",
    "eval.linear_epochs=3",
    "eval.linear_lrs=[0.01]",
    "eval.linear_wds=[0.0,0.001]",
    "run.progress=false",
    "run.device=cpu",
]


def _checkpoint(tmp_path: Path, image_size: int = 32) -> Path:
    cfg = config_from_dict(
        PretrainConfig,
        {
            "model": {"backbone": "resnet10t", "n_intermediates": 2, "proj_hidden_dim": 16, "proj_out_dim": 8},
            "data": {"image_size": image_size},
        },
    )
    torch.manual_seed(123)
    method = build_pretrain_model(cfg)
    path = tmp_path / "pre" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint(path, {"model": method.state_dict(), "config": config_to_dict(cfg)})
    return path


def _assert_metrics(m: dict, n_classes: int, random: bool = True) -> None:  # type: ignore[type-arg]
    for key in ("knn_top1", "knn_top5", "linear_top1", "linear_top5"):
        assert 0.0 <= m[key] <= 1.0
        assert m[key + "_std"] >= 0.0
        if random:
            assert m["random_init"] is not None and 0.0 <= m["random_init"][key] <= 1.0
    if not random:
        assert "random_init" not in m
    assert m["knn_top5"] >= m["knn_top1"] and m["linear_top5"] >= m["linear_top1"]
    assert len(m["classes"]) == n_classes


def test_main_linear_cv_on_synthetic_with_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(tmp_path)
    out = tmp_path / "eval"
    main_linear.main([*TINY, f"eval.checkpoint={ckpt.parent.parent}", f"run.output_dir={out}"])
    m = json.loads((out / "metrics.json").read_text())
    _assert_metrics(m, 7)
    assert m["n_train"] + m["n_eval"] == 42 and len(m["folds"]) == 2
    assert m["image_size"] == 32  # from the checkpoint's config, not LinearConfig's default (112)
    assert m["random_init"] != {k: v for k, v in m.items() if k in m["random_init"]}  # a different model
    printed = capsys.readouterr().out
    assert "random init" in printed and "knn_top1" in printed
    saved = load_config(LinearConfig, ["--config", str(out / "config.yaml")])  # the resolved config loads strictly
    assert saved.eval.checkpoint == str(ckpt.parent.parent)
    with pytest.raises(FileExistsError, match="overwrite"):
        main_linear.main([*TINY, f"eval.checkpoint={ckpt}", f"run.output_dir={out}"])


def test_checkpoint_weights_are_used_and_random_twin_is_not(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    cfg = load_config(LinearConfig, [*TINY, f"eval.checkpoint={ckpt}"])
    method, pcfg, random_method = _build_models(cfg)
    stored = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    key = next(k for k in stored if k.endswith("conv1.0.weight") or k.endswith("conv1.weight"))
    assert torch.equal(method.state_dict()[key], stored[key])
    assert random_method is not None and not torch.equal(random_method.state_dict()[key], stored[key])
    assert pcfg.model.backbone == "resnet10t"


def _write_tree(root: Path, classes: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for ci, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            base = np.zeros((24, 24, 3)) + 80 * ci  # class = brightness
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")


def test_train_eval_split_on_folders_with_a_broken_file(tmp_path: Path) -> None:
    _write_tree(tmp_path / "train", {"a": 8, "b": 8, "c": 8}, 0)
    _write_tree(tmp_path / "val", {"a": 3, "b": 3, "d": 2}, 1)  # 'd' never seen in training: always wrong
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    out = tmp_path / "eval"
    m = run_linear_eval(
        load_config(
            LinearConfig,
            [
                *TINY,
                "data.image_size=32",
                "data.max_bad_fraction=0.2",
                f"eval.train_path={tmp_path / 'train'}",
                f"eval.eval_path={tmp_path / 'val'}",
                f"run.output_dir={out}",
                "eval.compare_random=false",
                "model.init_checkpoint=" + str(_backbone_file(tmp_path)),
            ],
        )
    )
    _assert_metrics(m, 4, random=False)
    assert m["classes"] == ["a", "b", "c", "d"]
    assert m["n_train"] == 24 and m["n_eval"] == 8 and m["protocol"] == "train/eval split"
    assert m["n_bad"] == 1
    assert m["knn_top1"] <= 6 / 8 and m["linear_top1"] <= 6 / 8  # the two 'd' images cannot be right


def _backbone_file(tmp_path: Path) -> Path:
    # a local init_checkpoint makes the model "not random", so compare_random is meaningful; here it is off
    from ssl_art.models.backbone import Backbone

    path = tmp_path / "backbone.pt"
    torch.save(Backbone("resnet10t", n_intermediates=2).model.state_dict(), path)
    return path


def test_too_many_bad_files_is_an_error(tmp_path: Path) -> None:
    from ssl_art.data import TooManyBadFilesError

    _write_tree(tmp_path / "train", {"a": 4, "b": 4}, 0)
    for i in range(3):
        (tmp_path / "train" / "b" / f"bad{i}.jpg").write_bytes(b"garbage")
    cfg = load_config(
        LinearConfig, [*TINY, f"eval.train_path={tmp_path / 'train'}", f"run.output_dir={tmp_path / 'o'}"]
    )
    with pytest.raises(TooManyBadFilesError):
        run_linear_eval(cfg)


def test_default_yaml_loads_and_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = config_from_dict(LinearConfig, load_yaml(root / "configs" / "linear" / "default.yaml"))
    assert cfg.eval.knn_k == 20 and cfg.eval.knn_t == pytest.approx(0.07)
    with pytest.raises(SystemExit):
        main_linear.main(["--help"])
    assert "eval.knn_k" in capsys.readouterr().out


def test_eval_image_size_overrides_the_checkpoint_even_at_the_data_default(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, image_size=32)
    default = DataCfg().image_size  # 112: data.image_size=112 could not ask for it; eval.image_size can
    argv = [*TINY, f"eval.checkpoint={ckpt}", "eval.compare_random=false"]
    m = run_linear_eval(
        load_config(LinearConfig, [*argv, f"eval.image_size={default}", f"run.output_dir={tmp_path / 'a'}"])
    )
    assert m["image_size"] == default
    m = run_linear_eval(load_config(LinearConfig, [*argv, f"run.output_dir={tmp_path / 'b'}"]))
    assert m["image_size"] == 32  # eval.image_size=0: the checkpoint's size
    with pytest.raises(ConfigError, match="eval.image_size"):
        validate(config_from_dict(LinearConfig, {"eval": {"image_size": -1}}))
