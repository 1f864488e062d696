"""Epoch hooks: measurements :func:`~ssl_art.engine.loop.fit` runs between epochs and logs beside the train scalars.

A hook is any callable ``hook(method, epoch, step) -> {name: value}`` (the online kNN monitor,
:class:`~ssl_art.engine.monitor.KnnMonitor`, is one). ``fit`` calls :func:`run_epoch_hooks` once before the first
step of a fresh run (``epoch=0``) and after every completed epoch (``epoch`` = epochs done), before that epoch's
checkpoint is written: a run killed during a hook redoes the epoch and its measurement on resume, so the curve has no
hole. A hook decides itself whether this epoch is one it measures (an empty dict = nothing to log). Hooks run on
rank 0 only and must not use collectives. Values go to TensorBoard under their own names (``monitor/knn_top1``) at
the global step and to ``metrics.jsonl`` as ``{"step", "epoch", **values}`` lines.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import IO, Protocol

from torch.utils.tensorboard import SummaryWriter

from ssl_art.methods.base import PretrainMethod

log = logging.getLogger("ssl_art.engine")


class EpochHook(Protocol):
    """``hook(method, epoch, step) -> {name: value}``; an empty dict when this epoch is not one it measures."""

    def __call__(self, method: PretrainMethod, epoch: int, step: int) -> dict[str, float]: ...


def run_epoch_hooks(
    hooks: Sequence[EpochHook],
    method: PretrainMethod,
    epoch: int,
    step: int,
    writer: SummaryWriter | None,
    metrics_file: IO[str],
    rank: int = 0,
) -> dict[str, float]:
    """Run every hook (rank 0 only), log what they return, and return the merged values.

    Args:
        hooks: the hooks, in order.
        method: the model being trained (hooks must restore its train/eval mode).
        epoch: completed epochs (0 before the first step).
        step: completed optimiser steps.
        writer: the run's TensorBoard writer (``None`` on ranks other than 0, which write nothing).
        metrics_file: the run's open ``metrics.jsonl``.
        rank: this process's rank; other ranks do nothing.

    Returns:
        ``{name: value}`` of all hooks (empty when none measured this epoch).
    """
    if rank != 0 or not hooks:
        return {}
    values: dict[str, float] = {}
    for hook in hooks:
        values.update(hook(method, epoch, step))
    if values and writer is not None:
        for k, v in values.items():
            writer.add_scalar(k, v, step)
        writer.flush()
    if values:
        metrics_file.write(json.dumps({"step": step, "epoch": epoch, **values}) + "\n")
        metrics_file.flush()
        log.info("epoch %d (step %d): %s", epoch, step, " ".join(f"{k}={v:.4f}" for k, v in values.items()))
    return values
