"""The optimiser step shared by pretraining (:func:`~ssl_art.engine.loop.fit`) and fine-tuning.

:class:`OptimStep` owns what every training loop must get right the same way: the forward's autocast context, a
``GradScaler`` enabled exactly under fp16, gradient accumulation over ``accum_steps`` micro-batches (each loss divided
by ``accum_steps``, so the summed gradient equals the big-batch mean), gradient clipping, and the finite-loss policy:
a non-finite loss or gradient skips the step (gradients dropped, the fp16 loss scale lowered) and only
``max_nonfinite`` of them in a row stop the run with :class:`~ssl_art.runtime.errors.NonFiniteLossError`, whose
message names the last good checkpoint. The loop keeps what is its own: the lr schedule, data, metrics, and when to
save (:func:`checkpoint_due`). Distributed loops pass ``all_finite`` (every rank must agree to skip) and
``sync_grads`` (all-reduce before unscaling); a single process needs neither.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssl_art import checkpoint as ckpt_io
from ssl_art.runtime.device import autocast
from ssl_art.runtime.errors import NonFiniteLossError

__all__ = ["OptimStep", "StepResult", "back_off_loss_scale", "checkpoint_due", "nonfinite_message"]

log = logging.getLogger("ssl_art.engine")


@dataclass(frozen=True)
class StepResult:
    """What :meth:`OptimStep.backward` did with one micro-batch's loss.

    Attributes:
        status: ``stepped`` (the optimiser moved), ``accumulating`` (gradient kept, step later) or ``skipped``
            (non-finite loss or gradients; nothing applied).
        grad_norm: the clipped-over gradient norm of a ``stepped`` result, ``nan`` otherwise.
    """

    status: str
    grad_norm: float = math.nan

    @property
    def stepped(self) -> bool:
        return self.status == "stepped"


def _local_finite(loss: Tensor) -> bool:
    return bool(torch.isfinite(loss).all())


class OptimStep:
    """Backward, accumulation, clipping, GradScaler and the non-finite policy around one optimiser.

    Args:
        optimizer: the optimiser (its lr is set by the caller's schedule).
        params: the trainable parameters (clipped, and checked for finite gradients).
        device: where the model runs (the GradScaler's device type).
        dtype: autocast dtype or ``None``; ``torch.float16`` enables the GradScaler.
        accum_steps: micro-batches per optimiser step (>= 1).
        clip_grad: max gradient norm; ``<= 0`` only measures it.
        max_nonfinite: non-finite steps in a row that stop the run.
        ckpt_dir: where the caller's checkpoints are, named in the stop message.
        all_finite: ``loss -> bool`` agreement across ranks (default: this process's loss).
        sync_grads: called once per optimiser step before unscaling (all-reduce under DDP).
    """

    def __init__(
        self,
        optimizer: Any,
        params: Iterable[torch.nn.Parameter],
        device: torch.device,
        dtype: torch.dtype | None,
        accum_steps: int = 1,
        clip_grad: float = 0.0,
        max_nonfinite: int = 5,
        ckpt_dir: Path | None = None,
        all_finite: Callable[[Tensor], bool] | None = None,
        sync_grads: Callable[[], None] | None = None,
    ):
        if accum_steps < 1:
            raise ValueError(f"optim.accum_steps must be >= 1, got {accum_steps}")
        self.optimizer = optimizer
        self.params = [p for p in params if p.requires_grad]
        self.device, self.dtype = device, dtype
        self.accum_steps, self.clip_grad, self.max_nonfinite = accum_steps, clip_grad, max_nonfinite
        self.ckpt_dir = ckpt_dir
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
        self._all_finite = all_finite or _local_finite
        self._sync_grads = sync_grads
        self.micro = 0  # micro-batches accumulated toward the next optimiser step
        self.consecutive_bad = 0
        self.nonfinite_total = 0

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward's autocast context (a no-op without AMP)."""
        return autocast(self.device, self.dtype)

    def reset(self) -> None:
        """Drop a partial accumulation (epoch end, skipped step)."""
        self.micro = 0
        self.optimizer.zero_grad(set_to_none=True)

    def _skip(self, what: str, step: int) -> StepResult:
        self.nonfinite_total += 1
        self.consecutive_bad += 1
        log.warning("non-finite %s at step %d: step skipped (%d in a row)", what, step, self.consecutive_bad)
        if self.consecutive_bad >= self.max_nonfinite:
            plural = "losses" if what == "loss" else what
            raise NonFiniteLossError(nonfinite_message(plural, self.consecutive_bad, step, self.ckpt_dir))
        return StepResult("skipped")

    def backward(self, loss: Tensor, step: int) -> StepResult:
        """Backward one micro-batch's mean loss; step the optimiser when ``accum_steps`` have accumulated.

        Args:
            loss: the micro-batch's scalar mean loss.
            step: the global optimiser step (for messages).

        Raises:
            NonFiniteLossError: ``max_nonfinite`` non-finite losses or gradients in a row.
        """
        if not self._all_finite(loss.detach()):
            self.reset()
            back_off_loss_scale(self.scaler, loss)
            return self._skip("loss", step)
        self.scaler.scale(loss / self.accum_steps).backward()
        self.micro += 1
        if self.micro < self.accum_steps:
            return StepResult("accumulating")
        self.micro = 0
        if self._sync_grads is not None:
            self._sync_grads()
        self.scaler.unscale_(self.optimizer)
        limit = self.clip_grad if self.clip_grad > 0 else math.inf
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, limit)
        if not torch.isfinite(gnorm):
            self.scaler.update()  # fp16: lowers the loss scale; otherwise a no-op
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip("gradients", step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.consecutive_bad = 0
        return StepResult("stepped", float(gnorm))

    def state_dict(self) -> dict[str, Any]:
        """``{"scaler", "nonfinite"}`` for checkpoints (the keys :func:`~ssl_art.engine.loop.fit` has always used)."""
        return {"scaler": self.scaler.state_dict(), "nonfinite": self.nonfinite_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.scaler.load_state_dict(state["scaler"])
        self.nonfinite_total = int(state["nonfinite"])


def checkpoint_due(step: int, every: int) -> bool:
    """Whether ``run.ckpt_every_steps = every`` asks for a checkpoint after optimiser step ``step`` (0 = never)."""
    return every > 0 and step > 0 and step % every == 0


def back_off_loss_scale(scaler: torch.amp.GradScaler, loss: Tensor) -> None:
    """fp16: lower the loss scale after a non-finite loss, as ``GradScaler.update`` does for non-finite grads.

    The scaler backs off by itself only when ``unscale_`` saw inf/NaN gradients; a loss that is already
    non-finite never reaches backward, so the scale is lowered here by the same ``backoff_factor``. No-op when the
    scaler is disabled (bf16, fp32).
    """
    if not scaler.is_enabled():
        return
    scaler.scale(loss.detach())  # creates the scale tensor (on the loss's device) if no step has run yet
    scaler.update(scaler.get_scale() * scaler.get_backoff_factor())


def nonfinite_message(what: str, n: int, step: int, ckpt_dir: Path | None) -> str:
    """The stop message: how many, where, the last good checkpoint, and the fixes."""
    last = ckpt_io.find_resumable(ckpt_dir) if ckpt_dir is not None else None
    where = f"the last good checkpoint is {last}" if last else f"no checkpoint was written yet in {ckpt_dir}"
    return (
        f"{n} non-finite {what} in a row at step {step} (run.max_nonfinite); stopping, {where}. Fix: lower "
        "optim.lr, raise optim.warmup_epochs, use run.amp=bf16 or off, or set optim.clip_grad; then resume with "
        "run.resume=true."
    )
