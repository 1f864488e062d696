"""NaN injection through a real SimCLR ``main_pretrain`` run: skipped and counted, N in a row stops, nothing lost.

The hook wraps ``SimCLR.training_step`` so chosen calls return a non-finite loss (or a finite loss whose gradients
are NaN); everything else -- data, model, optimiser, checkpoints -- is the real pipeline. The fp16 loss-scale
back-off is checked on a CPU ``GradScaler`` (the same object CUDA uses) and, on a CUDA machine, end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_helpers import TINY, assert_same_weights, final_weights, read_json

import main_pretrain
import ssl_art.engine.step as step_mod
from ssl_art.checkpoint import load_checkpoint, verify_checkpoint
from ssl_art.engine.step import back_off_loss_scale
from ssl_art.methods.simclr import SimCLR
from ssl_art.runtime.errors import NonFiniteLossError

CKPT_EVERY = ["run.ckpt_every_steps=1", "run.keep_last=10", "run.deterministic=true"]


def _inject(monkeypatch: pytest.MonkeyPatch, calls: set[int], grad_only: bool = False) -> dict[str, int]:
    """Make SimCLR's ``calls``-th training steps (1-based) non-finite; returns the live call counter."""
    real = SimCLR.training_step
    counter = {"n": -1}  # call 0 is the engine's side-effect-free probe step (ssl_art.engine.ddp.freeze_unused)

    def step(self: SimCLR, views: list[torch.Tensor], progress: float) -> Any:
        out = real(self, views, progress)
        counter["n"] += 1
        if counter["n"] in calls:
            if grad_only:  # loss stays finite (+0), but d sqrt(x)/dx at 0 is inf and inf * 0 = NaN gradients
                p = next(self.parameters())
                out.loss = out.loss + torch.sqrt((p * 0).sum())
            else:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", step)
    return counter


def test_one_nan_loss_is_skipped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(monkeypatch, {2})
    backoffs: list[bool] = []
    real_backoff = step_mod.back_off_loss_scale

    def spy(scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
        backoffs.append(scaler.is_enabled())
        real_backoff(scaler, loss)

    monkeypatch.setattr(step_mod, "back_off_loss_scale", spy)
    out = tmp_path / "run"
    assert main_pretrain.main([*TINY, "optim.max_steps=3", f"run.output_dir={out}", *CKPT_EVERY]) == 0

    summary = read_json(out / "summary.json")
    assert summary["nonfinite_skipped"] == 1 and summary["steps"] == 3 and summary["stopped"] == "done"
    assert backoffs == [False]  # asked once; a no-op without fp16 (the scaler is disabled on CPU)
    log = (out / "train.log").read_text()
    assert "non-finite loss at step 1: step skipped (1 in a row)" in log
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "NaN" not in "".join(lines)
    assert all(torch.isfinite(v).all() for v in final_weights(out).values() if v.is_floating_point())


def test_nonfinite_gradients_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(monkeypatch, {2}, grad_only=True)
    out = tmp_path / "run"
    assert main_pretrain.main([*TINY, "optim.max_steps=3", f"run.output_dir={out}"]) == 0
    assert read_json(out / "summary.json")["nonfinite_skipped"] == 1
    assert "non-finite gradients at step 1: step skipped (1 in a row)" in (out / "train.log").read_text()
    assert all(torch.isfinite(v).all() for v in final_weights(out).values() if v.is_floating_point())


def test_nan_in_a_row_stops_keeps_last_good_checkpoint_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*TINY, "optim.max_steps=6", "run.max_nonfinite=3", *CKPT_EVERY]
    clean = tmp_path / "clean"
    assert main_pretrain.main([*args, f"run.output_dir={clean}"]) == 0

    counter = _inject(monkeypatch, {3, 4, 5})  # steps 1-2 fine, then three NaN losses in a row
    bad = tmp_path / "bad"
    with pytest.raises(NonFiniteLossError) as info:
        main_pretrain.main([*args, f"run.output_dir={bad}"])
    msg = str(info.value)
    assert "3 non-finite losses in a row at step 2 (run.max_nonfinite)" in msg
    assert f"the last good checkpoint is {bad / 'checkpoints' / 'ckpt-000000002.pt'}" in msg
    assert "optim.lr" in msg and "run.resume=true" in msg

    last = bad / "checkpoints" / "last.pt"
    assert verify_checkpoint(last)
    state = load_checkpoint(last)
    assert state["step"] == 2
    clean_step2 = load_checkpoint(clean / "checkpoints" / "ckpt-000000002.pt")["model"]
    assert_same_weights(state["model"], clean_step2)  # intact: exactly the good step-2 weights

    counter["n"] = 100  # the fault is gone; resume continues from the last good checkpoint
    assert main_pretrain.main([*args, f"run.output_dir={bad}", "run.resume=true"]) == 0
    assert read_json(bad / "summary.json")["steps"] == 6
    assert_same_weights(final_weights(bad), final_weights(clean))


def test_fp16_loss_scale_backs_off_on_nonfinite_loss() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, backoff_factor=0.5)
    nan = torch.tensor(float("nan"))
    back_off_loss_scale(scaler, nan)  # before any step: the lazily created scale is lowered too
    assert scaler.get_scale() == 512.0
    back_off_loss_scale(scaler, nan)
    assert scaler.get_scale() == 256.0
    # the scaler still works normally afterwards
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler.scale((w * 2).sum()).backward()  # type: ignore[no-untyped-call]
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 256.0 and torch.allclose(w.detach(), torch.full((2,), 0.8))
    off = torch.amp.GradScaler("cpu", enabled=False)
    back_off_loss_scale(off, nan)
    assert off.get_scale() == 1.0  # bf16 / fp32: nothing to do


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fp16 autocast)")
def test_fp16_nan_lowers_loss_scale_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(monkeypatch, {2})
    out = tmp_path / "run"
    argv = [*TINY, "run.device=cuda", "run.amp=fp16", "optim.max_steps=3", f"run.output_dir={out}"]
    assert main_pretrain.main(argv) == 0
    assert read_json(out / "summary.json")["nonfinite_skipped"] == 1
    scale = load_checkpoint(out / "checkpoints" / "last.pt")["scaler"]["scale"]
    assert scale <= 65536.0 / 2  # GradScaler's default init_scale, backed off at least once
