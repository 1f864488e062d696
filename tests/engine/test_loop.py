"""The fit loop: it really steps the optimiser, resumes exactly, guards non-finite losses and refuses bad setups."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from ssl_art.config import DataCfg, OptimCfg, RunCfg
from ssl_art.engine.loop import fit
from ssl_art.engine.rundir import prepare_run_dir
from ssl_art.methods.base import PretrainMethod, StepOutput
from ssl_art.runtime.errors import NonFiniteLossError, RunDirError


@dataclass
class FakeBatch:
    views: list[Tensor]
    targets: Tensor
    indices: Tensor
    bad: list[tuple[int, str, str]] = field(default_factory=list)


class FakeViews(torch.utils.data.Dataset):
    """Two noisy 'views' of a fixed random vector per index; the noise uses torch's RNG (seeded per sample)."""

    def __init__(self, n: int = 40, d: int = 8):
        self.base = torch.randn(n, d, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return [self.base[i] + 0.1 * torch.randn(8) for _ in range(2)], 0, i


def collate(items):
    views = [torch.stack([it[0][v] for it in items]) for v in range(2)]
    return FakeBatch(views, torch.zeros(len(items), dtype=torch.long), torch.tensor([it[2] for it in items]))


class TinyMethod(PretrainMethod):
    """A linear encoder with a cosine-alignment loss; ``nan_at`` makes chosen calls return NaN."""

    def __init__(self, nan_at: tuple[int, ...] = ()):
        super().__init__()
        self.backbone = nn.Linear(8, 4)
        self.calls, self.nan_at, self.after = 0, nan_at, 0

    def training_step(self, views, progress):
        self.calls += 1
        a, b = (nn.functional.normalize(self.backbone(v), dim=1) for v in views)
        loss = -(a * b).sum(1).mean() + 0.01 * self.backbone.weight.pow(2).sum()
        if self.calls in self.nan_at:
            loss = loss * float("nan")
        return StepOutput(loss, {"emb_std": 1.0})

    def after_optimizer_step(self, progress):
        self.after += 1

    def embed(self, x):
        return {"pooled": self.backbone(x)}


def _cfgs(tmp_path: Path, **run_kw):
    data = DataCfg(batch_size=8, num_workers=0)
    optim = OptimCfg(name="sgd", lr=0.5, epochs=3, warmup_epochs=0.5, weight_decay=0.0)
    run = RunCfg(output_dir=str(tmp_path), progress=False, log_every=1, keep_last=10, **run_kw)
    return data, optim, run


def _fit(tmp_path, method, **run_kw):
    data, optim, run = _cfgs(tmp_path, **run_kw)
    out = prepare_run_dir(str(tmp_path), run.resume, True, {"x": 1})
    return fit(method, FakeViews(), collate, data, optim, run, {"x": 1}, out)


def test_optimizer_really_steps(tmp_path):
    torch.manual_seed(0)
    m = TinyMethod()
    w0 = m.backbone.weight.detach().clone()
    res = _fit(tmp_path, m)
    assert res.steps == 15 and m.after == 15  # 40 // 8 = 5 steps x 3 epochs, after_optimizer_step each time
    assert not torch.allclose(w0, m.backbone.weight)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 15


def test_resume_matches_uninterrupted(tmp_path):
    torch.manual_seed(0)
    full = TinyMethod()
    _fit(tmp_path / "full", full)

    torch.manual_seed(0)
    part = TinyMethod()
    _stop_after(part, 7)  # stopped mid-epoch 2 (5 steps per epoch)
    res = _fit(tmp_path / "part", part)
    assert res.stopped == "signal" and res.steps == 7

    torch.manual_seed(123)  # a fresh process: other RNG state, new model object
    resumed = TinyMethod()
    res = _fit(tmp_path / "part", resumed, resume=True)
    assert res.steps == 15
    torch.testing.assert_close(resumed.backbone.weight, full.backbone.weight, rtol=1e-6, atol=1e-7)


def _stop_after(method: TinyMethod, n: int) -> None:
    """Make the loop see a SIGTERM right after step ``n`` (what a `kill -TERM` would do)."""
    import os
    import signal

    orig = method.after_optimizer_step

    def hook(progress):
        orig(progress)
        if method.after == n:
            os.kill(os.getpid(), signal.SIGTERM)

    method.after_optimizer_step = hook  # type: ignore[method-assign]


def test_sigterm_saves_and_reports(tmp_path):
    m = TinyMethod()
    _stop_after(m, 3)
    res = _fit(tmp_path, m)
    assert res.stopped == "signal" and res.steps == 3
    from ssl_art.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3


def test_nonfinite_step_skipped_and_counted(tmp_path):
    m = TinyMethod(nan_at=(2,))
    res = _fit(tmp_path, m)
    # the NaN batch is skipped, not applied: reaching 15 optimiser steps takes one extra batch
    assert res.nonfinite_skipped == 1 and res.steps == 15 and res.epochs > 3
    assert torch.isfinite(m.backbone.weight).all()


def test_nonfinite_in_a_row_stops(tmp_path):
    m = TinyMethod(nan_at=(3, 4, 5))
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        _fit(tmp_path, m, max_nonfinite=3)


def test_batch_larger_than_dataset(tmp_path):
    data, optim, run = _cfgs(tmp_path)
    with pytest.raises(ValueError, match="larger than the dataset"):
        fit(TinyMethod(), FakeViews(n=4), collate, data, optim, run, {}, tmp_path)


def test_existing_run_dir_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("x: 1")
    with pytest.raises(RunDirError, match="run.resume=true"):
        prepare_run_dir(str(tmp_path), resume=False, overwrite=False, config={})
