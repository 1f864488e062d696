"""The whole torch.distributed surface of the toolkit, safe to call when no process group exists.

Follows lightly's ``lightly/utils/dist.py``: ``rank``/``world_size``/``is_main`` answer 0/1/True in a plain single
process, ``gather`` wraps lightly's differentiable ``GatherLayer`` (gradients flow back to the rank that produced
each slice) and returns the input unchanged when uninitialised, and ``rank_zero_only`` guards side effects such as
writing files. ``init_from_env`` joins the process group that ``torchrun`` describes in the environment and does
nothing for a single process, so every entry point can call it unconditionally.

Multi-process runs hold together through a few collectives that every rank calls at the same point: ``any_rank``
(one stop decision for all ranks), ``all_gather_objects`` (the global list of bad files), ``broadcast_object``
(rank 0's decision, e.g. where a resumable export stands), ``raise_together`` (an error on one rank stops every
rank with that rank's message instead of leaving the others blocked in a collective) and ``barrier``. Each is a
no-op (or the identity) in a single process.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from lightly.utils.dist import GatherLayer
from torch import Tensor

__all__ = [
    "LIGHTLY_GATHER_MIN",
    "GatherLayer",
    "all_gather_objects",
    "all_reduce_mean",
    "any_rank",
    "barrier",
    "broadcast_object",
    "check_lightly_gather",
    "cleanup",
    "collective_device",
    "gather_objects",
    "gather",
    "gather_cat",
    "init_from_env",
    "is_initialized",
    "is_main",
    "rank",
    "raise_together",
    "rank_zero_only",
    "shard",
    "world_size",
]

log = logging.getLogger(__name__)
R = TypeVar("R")

_BACKENDS = ("auto", "nccl", "gloo")
# lightly's GatherLayer returns the right gradient from this release on (earlier ones are off by ~50% with
# gathered negatives); setup.cfg requires it and check_lightly_gather refuses an older install at run time
LIGHTLY_GATHER_MIN = (1, 5, 4)


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


def collective_device() -> torch.device:
    """Where small control tensors must live for the current backend (NCCL only reduces CUDA tensors)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(*flags: bool) -> list[bool]:
    """Collective: for each flag, whether it is set on *any* rank (a stop decision every rank takes together).

    In a single process the flags come back unchanged.
    """
    if world_size() == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def all_gather_objects(obj: R) -> list[R]:
    """Collective: every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj: R) -> list[R] | None:
    """Collective: every rank's picklable ``obj`` in rank order on rank 0; ``None`` on the other ranks."""
    if world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: R) -> R:
    """Collective: rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if world_size() == 1:
        return obj
    box: list[Any] = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Collective: wait until every rank gets here (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def raise_together(err: BaseException | None) -> None:
    """Collective: when any rank failed, raise on *every* rank, so no rank is left waiting in a collective.

    A rank re-raises its own ``err``; a rank that did not fail raises the first failing rank's exception (same type
    and message when it pickles, else a ``RuntimeError`` with its text). Nothing happens when no rank failed.
    """
    if world_size() == 1:
        if err is not None:
            raise err
        return
    try:
        payload: BaseException | str | None = pickle.loads(pickle.dumps(err)) if err is not None else None
    except Exception:  # an exception that does not pickle travels as its text
        payload = f"{type(err).__name__}: {err}"
    errors = all_gather_objects(payload)
    if err is not None:
        raise err
    for r, e in enumerate(errors):
        if isinstance(e, BaseException):
            raise e
        if e is not None:
            raise RuntimeError(f"rank {r} failed: {e}")


def shard(n: int) -> range:
    """The rows ``0..n-1`` this rank handles in a sharded pass: ``range(rank, n, world_size)``."""
    return range(rank(), n, world_size())


def check_lightly_gather() -> None:
    """Refuse a lightly older than :data:`LIGHTLY_GATHER_MIN` when gathering across ranks (wrong gradients).

    Raises:
        RuntimeError: naming the installed version and the fix.
    """
    try:
        have = version("lightly")
    except PackageNotFoundError:
        return
    parts = tuple(int(p) if p.isdigit() else 0 for p in (have.split("+")[0].split(".") + ["0", "0"])[:3])
    if parts < LIGHTLY_GATHER_MIN:
        need = ".".join(map(str, LIGHTLY_GATHER_MIN))
        raise RuntimeError(
            f"lightly {have} is installed; multi-process training with dist.gather=true needs lightly>={need} "
            f"(older GatherLayer gradients are wrong). Fix: pip install 'lightly>={need}', or set dist.gather=false"
        )


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
