"""The whole torch.distributed surface of the toolkit, safe to call when no process group exists.

Follows lightly's ``lightly/utils/dist.py``: ``rank``/``world_size``/``is_main`` answer 0/1/True in a plain single
process, ``gather`` wraps lightly's differentiable ``GatherLayer`` (gradients flow back to the rank that produced
each slice) and returns the input unchanged when uninitialised, and ``rank_zero_only`` guards side effects such as
writing files. ``init_from_env`` joins the process group that ``torchrun`` describes in the environment and does
nothing for a single process, so every entry point can call it unconditionally.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from lightly.utils.dist import GatherLayer
from torch import Tensor

__all__ = [
    "GatherLayer",
    "all_reduce_mean",
    "cleanup",
    "gather",
    "gather_cat",
    "init_from_env",
    "is_initialized",
    "is_main",
    "rank",
    "rank_zero_only",
    "world_size",
]

log = logging.getLogger(__name__)
R = TypeVar("R")

_BACKENDS = ("auto", "nccl", "gloo")


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a plain single process)."""
    return rank() == 0


def gather(x: Tensor) -> tuple[Tensor, ...]:
    """All ranks' ``x``, in rank order, with gradients flowing back to their owner (lightly ``GatherLayer``).

    Args:
        x: ``(B, ...)`` tensor; every rank must pass the same shape.

    Returns:
        ``world_size`` tensors of shape ``(B, ...)``; ``(x,)`` when not distributed.
    """
    if world_size() == 1:
        return (x,)
    return GatherLayer.apply(x)


def gather_cat(x: Tensor) -> Tensor:
    """``torch.cat(gather(x))``: ``(B, ...) -> (world_size * B, ...)``, rows of rank ``r`` at ``r*B:(r+1)*B``."""
    parts = gather(x)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over ranks (a new tensor; ``x`` itself when not distributed). Not differentiable."""
    if world_size() == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def rank_zero_only(fn: Callable[..., R]) -> Callable[..., R | None]:
    """Decorator: run ``fn`` on rank 0 only; other ranks get ``None``."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> R | None:
        return fn(*args, **kwargs) if is_main() else None

    return wrapped


def init_from_env(backend: str = "auto", device: torch.device | None = None) -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).

    Args:
        backend: ``auto`` (nccl on CUDA, else gloo), ``nccl`` or ``gloo``.
        device: the device this process trains on; ``auto`` picks nccl for a CUDA device and gloo otherwise, and a
            CUDA device is bound to ``LOCAL_RANK``. ``None``: whether CUDA is available decides.

    Returns:
        True when running distributed (``WORLD_SIZE > 1``), False for a single process (nothing is initialised).

    Raises:
        ValueError: unknown backend.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}; got '{backend}'")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    on_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if on_cuda else "gloo"
    if on_cuda or backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if is_initialized():
        return True
    dist.init_process_group(backend=backend)
    log.info("distributed: rank %d of %d (%s)", rank(), world_size(), backend)
    return True


def cleanup() -> None:
    """Destroy the process group if one exists."""
    if is_initialized():
        dist.destroy_process_group()
