"""Bad configuration and arguments: one clear ``error:`` line naming the problem and the fix, before any work.

Every case runs the real entry point the way the console script does (``run_cli(main)``), asserts exit status 2,
the message, no traceback, and that no output dir was created (the check ran before training or evaluation).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from reliability_helpers import ROOT, TINY

import main_linear
import main_pretrain
from ssl_art.checkpoint import save_checkpoint
from ssl_art.config import ConfigError, PretrainConfig, config_from_dict, config_to_dict
from ssl_art.methods.registry import build_pretrain_model
from ssl_art.models.backbone import Backbone, load_backbone_weights
from ssl_art.runtime.cli import run_cli

LINEAR = [
    "data.synthetic_size=42",
    "data.synthetic_image_size=32",
    "data.image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "model.backbone=test_resnet",
    "eval.folds=2",
    "eval.knn_k=5",
    "eval.linear_epochs=2",
    "eval.linear_lrs=[0.01]",
    "eval.compare_random=false",
    "run.progress=false",
    "run.device=cpu",
]


def _cli(main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and the final ``error: ...`` message of ``main(argv)`` run as the console script would."""
    try:
        code = run_cli(lambda: main(argv))
    except SystemExit as e:  # argparse (load_config) errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err[err.rindex("error: ") :] if "error: " in err else err


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr'. Did you mean 'optim.lr'?"),
        ("optim.epochs=ten", "optim.epochs: expected int, got str 'ten'"),
        ("run.resume=maybe", "run.resume: expected true/false"),
        ("method=byol", "method: 'byol' is not one of simclr, art_ssl"),
        ("optim.lr=-0.1", "optim.lr=-0.1 is out of range: a positive learning rate"),
        ("data.aug.min_scale=1.5", "data.aug.min_scale=1.5 is out of range: a crop area fraction in (0, 1]"),
        ("data.aug.n_views=1", "data.aug.n_views=1 is out of range: simclr contrasts views of one image"),
        ("data.max_bad_fraction=1.5", "data.max_bad_fraction=1.5 is out of range: a fraction in [0, 1]"),
        ("run.keep_last=0", "run.keep_last=0 is out of range: keep at least 1 checkpoint"),
        ("optim.accum_steps=0", "optim.accum_steps=0 is out of range"),
        ("data.batch_size=64", "data.batch_size=64 is larger than the collection <synthetic> (48 usable images); "),
        ("data.path=/no/such/folder", "data.path='/no/such/folder' does not exist; point it at an image folder"),
        ("model.init_checkpoint=/no/such.pt", "model.init_checkpoint='/no/such.pt' is not a file"),
        pytest.param(
            "run.amp=fp16",
            "run.amp=fp16 needs CUDA; on cpu use run.amp=off or auto",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only case"),
        ),
    ],
)
def test_pretrain_bad_argument(override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, err = _cli(main_pretrain.main, [*TINY, override, f"run.output_dir={out}"], capsys)
    assert code == 2
    assert message in err, err
    assert not out.exists()


def test_batch_message_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, err = _cli(main_pretrain.main, [*TINY, "data.batch_size=64", f"run.output_dir={tmp_path / 'r'}"], capsys)
    assert "lower data.batch_size to at most 48" in err


def _foreign_checkpoint(tmp_path: Path) -> Path:
    """An ssl_art checkpoint trained with backbone resnet10t."""
    cfg = config_from_dict(PretrainConfig, {"model": {"backbone": "resnet10t", "proj_hidden_dim": 16}})
    path = tmp_path / "resnet10t.pt"
    save_checkpoint(path, {"model": build_pretrain_model(cfg).state_dict(), "config": config_to_dict(cfg)})
    return path


def test_init_checkpoint_from_another_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _foreign_checkpoint(tmp_path)
    out = tmp_path / "run"
    code, err = _cli(main_pretrain.main, [*TINY, f"model.init_checkpoint={ckpt}", f"run.output_dir={out}"], capsys)
    assert code == 2
    assert f"model.init_checkpoint {ckpt}" in err
    fix = "it was saved from backbone 'resnet10t' while model.backbone='test_resnet'; set model.backbone=resnet10t"
    assert fix in err
    assert not out.exists()


def test_init_checkpoint_with_missing_weights_is_never_silently_partial(tmp_path: Path) -> None:
    small = Backbone("resnet18")
    torch.save(small.model.state_dict(), tmp_path / "r18.pt")  # every key also exists in resnet34, same shapes
    with pytest.raises(ConfigError, match=r"missing keys \['layer1\.2\.conv1\.weight'"):
        load_backbone_weights(Backbone("resnet34"), str(tmp_path / "r18.pt"))


def test_resume_with_another_architecture_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main_pretrain.main([*TINY, "optim.max_steps=1", f"run.output_dir={out}"]) == 0
    before = (out / "config.yaml").read_text()
    argv = [*TINY, "model.backbone=resnet10t", "run.resume=true", f"run.output_dir={out}"]
    code, err = _cli(main_pretrain.main, argv, capsys)
    assert code == 2
    assert "run.resume=true but the config differs from the run" in err
    assert "model.backbone: 'test_resnet' -> 'resnet10t'" in err and "resume with the original values" in err
    assert (out / "config.yaml").read_text() == before  # the run's record is untouched


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "eval.knn_k=50",
            "eval.knn_k=50 is larger than the kNN bank (21 training images with 2-fold CV on 42 "
            "labelled images); lower eval.knn_k to at most 21",
        ),
        ("eval.folds=1", "eval.folds=1 is out of range: cross-validation needs at least 2 folds"),
        ("eval.knn_t=0", "eval.knn_t=0.0 is out of range"),
        ("eval.checkpoint=/no/such/run", "eval.checkpoint='/no/such/run': no checkpoint there; give a pretraining"),
        ("eval.train_path=/no/such/folder", "eval.train_path='/no/such/folder' does not exist"),
        ("eval.linear_lrs=[]", "eval.linear_lrs=[] is out of range: one or more positive learning rates"),
    ],
)
def test_linear_bad_argument(override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    code, err = _cli(main_linear.main, [*LINEAR, override, f"run.output_dir={out}"], capsys)
    assert code == 2
    assert message in err, err
    assert not out.exists()


def test_eval_checkpoint_whose_weights_do_not_match_its_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights of one backbone stored under another's config: strict load lists missing and unexpected keys."""
    ckpt = _foreign_checkpoint(tmp_path)
    state = torch.load(ckpt, weights_only=False)
    state["config"]["model"]["backbone"] = "test_resnet"  # the architecture the loader will build
    save_checkpoint(ckpt, state)
    out = tmp_path / "eval"
    code, err = _cli(main_linear.main, [*LINEAR, f"eval.checkpoint={ckpt}", f"run.output_dir={out}"], capsys)
    assert code == 2
    assert f"{ckpt} does not match the model:" in err
    assert "6 missing keys ['backbone.model.layer3.0.conv3.weight'" in err
    assert "unexpected keys" in err and "71 shape mismatches ['backbone.model.conv1.0.weight'" in err
    assert "Was it saved with another backbone/method config?" in err
    assert not out.exists()


def test_console_script_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    """The real ``python main_pretrain.py`` process: status 2, one ``error:`` line, nothing created."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "main_pretrain.py", *TINY, "data.path=/no/such/folder", f"run.output_dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: data.path='/no/such/folder' does not exist; point it at an image folder, an ImageFolder tree or a "
        "CSV manifest (or data.path='' for the embedded synthetic collection)"
    ]
    assert not out.exists()


def test_every_shipped_config_passes_validation() -> None:
    from ssl_art.config import FinetuneConfig, LinearConfig, validate

    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        data.pop("_base_", None)
        for cls in (PretrainConfig, LinearConfig, FinetuneConfig):
            try:
                cfg = config_from_dict(cls, data)
            except ConfigError:
                continue
            validate(cfg)  # raises on an out-of-range default in a shipped YAML
            break
