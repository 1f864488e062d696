"""Outputs are never overwritten by accident, and a collapsing representation is warned about.

``main_linear`` into a non-empty dir (for example the pretraining run it evaluates) refuses unless
``run.overwrite=true``, and then replaces only its own files. ``main_pretrain`` refuses an existing run dir unless
``run.resume`` or ``run.overwrite``. A method whose embeddings are constant triggers the collapse warning, in a
fake-method ``fit`` and in a real SimCLR run whose projection output is forced constant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_helpers import TINY, read_json
from torch import Tensor, nn

import main_linear
import main_pretrain
import ssl_art.engine.pretrain as pretrain_mod
from ssl_art.checkpoint import verify_checkpoint
from ssl_art.config import DataCfg, OptimCfg, RunCfg
from ssl_art.engine.loop import COLLAPSE_STD, fit
from ssl_art.engine.rundir import prepare_run_dir
from ssl_art.losses.collapse import embedding_std
from ssl_art.methods.base import PretrainMethod, StepOutput
from ssl_art.runtime.errors import RunDirError

LINEAR = [
    "data.synthetic_size=42",
    "data.synthetic_image_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "eval.folds=2",
    "eval.knn_k=5",
    "eval.linear_epochs=2",
    "eval.linear_lrs=[0.01]",
    "eval.linear_wds=[0.0]",
    "eval.compare_random=false",
    "run.progress=false",
    "run.device=cpu",
]


@pytest.fixture
def pretrain_run(tmp_path: Path) -> Path:
    run = tmp_path / "pre"
    assert main_pretrain.main([*TINY, "optim.max_steps=1", f"run.output_dir={run}"]) == 0
    return run


def test_linear_into_a_nonempty_dir_refuses_then_overwrite_keeps_other_files(pretrain_run: Path) -> None:
    config_before = (pretrain_run / "config.yaml").read_text()
    argv = [*LINEAR, f"eval.checkpoint={pretrain_run}", f"run.output_dir={pretrain_run}"]
    with pytest.raises(FileExistsError, match=r"is not empty .*set run\.overwrite=true .*or choose another"):
        main_linear.main(argv)
    assert (pretrain_run / "config.yaml").read_text() == config_before and not (pretrain_run / "metrics.json").exists()

    main_linear.main([*argv, "run.overwrite=true"])  # asked for: writes metrics.json, deletes nothing
    assert read_json(pretrain_run / "metrics.json")["n_train"] > 0
    assert verify_checkpoint(pretrain_run / "checkpoints" / "last.pt")
    assert (pretrain_run / "summary.json").is_file()
    with pytest.raises(FileExistsError, match="run.overwrite=true"):  # and a second plain run refuses again
        main_linear.main(argv)


def test_pretrain_into_existing_run_refuses_unless_resume_or_overwrite(pretrain_run: Path) -> None:
    argv = [*TINY, "optim.max_steps=1", f"run.output_dir={pretrain_run}"]
    with pytest.raises(RunDirError, match=r"already holds a run\. Use run\.resume=true .* run\.overwrite=true"):
        main_pretrain.main(argv)
    assert read_json(pretrain_run / "summary.json")["steps"] == 1
    (pretrain_run / "marker.txt").write_text("from the first run")
    assert main_pretrain.main([*argv, "run.overwrite=true"]) == 0
    assert not (pretrain_run / "marker.txt").exists()  # replaced, as asked


# ---------------------------------------------------------------------------------------------- collapse


def test_embedding_std_signal() -> None:
    """Naive reference: mean per-dimension std of the unit vectors times sqrt(D); constant 0, isotropic about 1."""
    torch.manual_seed(0)
    assert embedding_std(torch.ones(64, 32)) == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(4096, 32)
    zn = z / z.norm(dim=1, keepdim=True)
    naive = sum(zn[:, d].std().item() for d in range(32)) / 32 * 32**0.5
    assert embedding_std(z) == pytest.approx(naive, rel=1e-4) and 0.9 < naive < 1.1


@dataclass
class _Batch:
    views: list[Tensor]
    targets: Tensor
    indices: Tensor
    bad: list[tuple[int, str, str]] = field(default_factory=list)


class _Views(torch.utils.data.Dataset[Any]):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> Any:
        g = torch.Generator().manual_seed(i)
        return [torch.randn(8, generator=g) for _ in range(2)], 0, i


def _collate(items: list[Any]) -> _Batch:
    views = [torch.stack([it[0][v] for it in items]) for v in range(2)]
    return _Batch(views, torch.zeros(len(items), dtype=torch.long), torch.tensor([it[2] for it in items]))


class _Method(PretrainMethod):
    """A linear encoder; ``collapsed`` multiplies its input by zero, so every embedding is the bias vector."""

    def __init__(self, collapsed: bool) -> None:
        super().__init__()
        self.backbone = nn.Linear(8, 16)
        self.collapsed = collapsed

    def training_step(self, views: list[Tensor], progress: float) -> StepOutput:
        z = [self.backbone(v * (0.0 if self.collapsed else 1.0)) for v in views]
        loss = -nn.functional.cosine_similarity(z[0], z[1]).mean()
        return StepOutput(loss, {"emb_std": embedding_std(z[0])})

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        return {"pooled": self.backbone(x)}


@pytest.mark.parametrize("collapsed", [True, False])
def test_fit_warns_on_collapse_only(tmp_path: Path, caplog: pytest.LogCaptureFixture, collapsed: bool) -> None:
    run = RunCfg(output_dir=str(tmp_path), progress=False, log_every=1)
    out = prepare_run_dir(str(tmp_path), False, True, {})
    with caplog.at_level(logging.WARNING, logger="ssl_art"):
        fit(_Method(collapsed), _Views(), _collate, DataCfg(batch_size=8, num_workers=0),
            OptimCfg(name="sgd", lr=0.1, max_steps=2, warmup_epochs=0), run, {}, out)  # fmt: skip
    warned = "representations may be collapsing" in caplog.text
    assert warned == collapsed


def test_real_simclr_run_with_constant_embeddings_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build: Callable[[Any], PretrainMethod] = getattr(pretrain_mod, "build_pretrain_model")  # noqa: B009

    def build_collapsed(cfg: Any) -> PretrainMethod:
        method = real_build(cfg)
        last = [m for m in method.modules() if isinstance(m, nn.Linear)][-1]  # projection output layer
        with torch.no_grad():
            last.weight.zero_()  # z = bias for every image: a fully collapsed embedding
        return method

    monkeypatch.setattr(pretrain_mod, "build_pretrain_model", build_collapsed)
    out = tmp_path / "run"
    assert main_pretrain.main([*TINY, "optim.max_steps=1", "optim.lr=1e-9", f"run.output_dir={out}"]) == 0
    log = (out / "train.log").read_text()
    assert "representations may be collapsing" in log
    assert read_json(out / "summary.json")["last_metrics"]["emb_std"] < COLLAPSE_STD
