"""DistributedDataParallel for pretraining methods: unused-parameter freezing, SyncBatchNorm and the wrapper.

Methods expose ``training_step(views, progress) -> StepOutput`` rather than ``forward``, so :class:`TrainStep` is the
``nn.Module`` whose ``forward`` *is* the training step; :func:`wrap` puts it in PyTorch's
``DistributedDataParallel`` (rank 0's weights broadcast at construction, bucketed gradient all-reduce overlapping
backward). DDP is built with ``find_unused_parameters=False``: :func:`freeze_unused` first runs one side-effect-free
probe step (buffers and RNG restored) and freezes every trainable parameter the loss does not reach (a Gram head
with ``loss.w_gram=0``, a ViT's final norm under fusion), so no optimiser ever decays weights that never train and
DDP never waits for their gradients. The EMA teacher is a frozen sub-module: DDP ignores its parameters and the
method updates it after each optimiser step, identically on every rank. Buffers are not broadcast each step
(``broadcast_buffers=False``): with SyncBatchNorm the running statistics agree anyway, and queues of gathered keys
are equal on every rank by construction.

``dist.sync_bn`` converts BatchNorm layers: PyTorch's ``nn.SyncBatchNorm`` on CUDA, and on CPU/gloo (where PyTorch's
kernel refuses to run) :class:`CPUSyncBatchNorm`, which computes the global mean and variance with two differentiable
all-reduces, so the gradient is that of BatchNorm over the global batch.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from ssl_art import distributed
from ssl_art.methods.base import PretrainMethod, StepOutput
from ssl_art.runtime.seeding import rng_state, set_rng_state

__all__ = [
    "CPUSyncBatchNorm",
    "TrainStep",
    "convert_sync_bn",
    "freeze_unused",
    "gather_bad",
    "mean_over_ranks",
    "no_sync",
    "prepare",
    "use_sync_bn",
    "wrap",
]

log = logging.getLogger("ssl_art.engine")

SYNC_BN = ("auto", "on", "off")


class TrainStep(nn.Module):
    """``forward(views, progress) = method.training_step(views, progress)``: what DDP wraps.

    Args:
        method: the pretraining method (registered as ``method``; its ``state_dict`` keys are unchanged).
    """

    def __init__(self, method: PretrainMethod):
        super().__init__()
        self.method = method

    def forward(self, views: list[Tensor], progress: float) -> StepOutput:
        return self.method.training_step(views, progress)


def use_sync_bn(mode: str, world: int) -> bool:
    """``dist.sync_bn``: ``auto`` = on when more than one process trains; ``on``/``off`` force it.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in SYNC_BN:
        raise ValueError(f"dist.sync_bn must be one of {', '.join(SYNC_BN)}; got '{mode}'")
    return mode == "on" or (mode == "auto" and world > 1)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the backward all-reduces the gradient (each rank's loss reaches every input)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A synchronised BatchNorm that runs on CPU (gloo): batch statistics over every rank's rows.

    (Not an ``nn.SyncBatchNorm`` subclass: DDP refuses those on CPU modules.)

    Training forward with a process group: ``mean = all_reduce(sum x) / N`` and
    ``var = all_reduce(sum (x - mean)^2) / N`` over the ``N`` rows x positions of all ranks, through
    all-reduces whose backward all-reduces the gradient, so the result and its gradient are
    those of ``BatchNorm`` on the concatenated global batch. Running statistics use the unbiased global variance, as
    ``BatchNorm`` does. Evaluation, or no process group: plain ``F.batch_norm``.
    """

    def _check_input_dim(self, input: Tensor) -> None:  # noqa: A002 (nn.BatchNorm's name)
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 (nn.BatchNorm's name)
        self._check_input_dim(input)
        if not (self.training and distributed.world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.ndim)]
        shape = [1, -1] + [1] * (input.ndim - 2)
        x = input.float()
        count = torch.tensor([float(x.numel() // x.shape[1])], dtype=torch.float32, device=x.device)
        total = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                unbiased = var.detach() * n.detach() / (n.detach() - 1).clamp_min(1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_sync_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm*d`` of ``module`` as a synchronised one (weights, buffers and mode kept); returns the module.

    CUDA: PyTorch's own ``nn.SyncBatchNorm.convert_sync_batchnorm``. Elsewhere: :class:`CPUSyncBatchNorm`.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (nn.SyncBatchNorm, CPUSyncBatchNorm)
    ):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)  # fmt: skip
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def freeze_unused(method: PretrainMethod, views: list[Tensor]) -> list[str]:
    """Freeze (``requires_grad=False``) every trainable parameter the training loss does not depend on.

    One probe ``training_step`` on ``views`` (the real batch shape), differentiated with ``allow_unused``; buffers
    (BatchNorm statistics, queues, step counters) and the RNG state are restored afterwards, so training starts as
    if the probe never ran. Collective when distributed (the step gathers), so every rank must call it.

    Returns:
        The names of the parameters frozen (logged once on rank 0).
    """
    named = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    if not named:
        return []
    buffers = {n: b.detach().clone() for n, b in method.named_buffers()}
    rng = rng_state()
    try:
        loss = method.training_step(views, 0.0).loss
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    finally:
        with torch.no_grad():
            for n, b in method.named_buffers():
                b.copy_(buffers[n])
        set_rng_state(rng)
    frozen = [n for (n, p), g in zip(named, grads) if g is None]
    for n, p in named:
        if n in frozen:
            p.requires_grad_(False)
    if frozen:
        log.warning(
            "%d parameter tensors get no gradient from the loss and are frozen (never optimised): %s",
            len(frozen),
            ", ".join(frozen[:6]) + (" ..." if len(frozen) > 6 else ""),
        )
    return frozen


def wrap(method: PretrainMethod, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(TrainStep(method))`` when distributed, else the plain :class:`TrainStep`.

    Call after :func:`freeze_unused` and the optional :func:`convert_sync_bn`; rank 0's parameters and buffers are
    broadcast to every rank here.
    """
    step = TrainStep(method)
    if distributed.world_size() == 1:
        return step
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # buffers: synced once at construction, never per step (newer torch spells broadcast_buffers=False this way)
    no_buffer_sync: dict[str, Any] = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        step, device_ids=ids, find_unused_parameters=False, process_group=dist.group.WORLD, **no_buffer_sync
    )


def no_sync(model: nn.Module, skip: bool) -> Any:
    """``model.no_sync()`` when ``skip`` and ``model`` is DDP (accumulation micro-steps keep local gradients)."""
    if skip and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def prepare(
    method: PretrainMethod,
    dataset: Dataset[Any],
    collate: Callable[[list[Any]], Any],
    batch_size: int,
    device: torch.device,
    sync_bn: bool,
) -> nn.Module:
    """Everything between a built method and its first step: returns the module the loop calls.

    A probe batch (the first ``batch_size`` items of ``dataset``, RNG state restored afterwards) feeds
    :func:`freeze_unused`; then, when distributed, the lightly version is checked, BatchNorm becomes SyncBatchNorm
    if ``sync_bn`` and the step is wrapped in DDP (:func:`wrap`). Collective: every rank must call it.
    """
    rng = rng_state()
    try:
        probe = collate([dataset[i] for i in range(min(batch_size, len(dataset)))])  # type: ignore[arg-type]
        views = [v.to(device) for v in probe.views]
        if views and views[0].shape[0] >= 2:
            freeze_unused(method, views)
    finally:
        set_rng_state(rng)
    if distributed.world_size() > 1:
        distributed.check_lightly_gather()
        if sync_bn:
            convert_sync_bn(method, device)
    return wrap(method, device)


def gather_bad(local: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """Collective: every rank's ``(index, kind, path)`` bad samples of this step, rank by rank."""
    return [t for part in distributed.all_gather_objects(list(local)) for t in part]


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Collective: each scalar averaged over ranks (every rank logs the same keys in the same order)."""
    if distributed.world_size() == 1 or not metrics:
        return dict(metrics)
    keys = list(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=distributed.collective_device())
    vals = distributed.all_reduce_mean(t).tolist()
    return dict(zip(keys, vals))
