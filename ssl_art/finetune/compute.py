"""Measured compute of gated inference against always-expensive and cheap-only, on the same images.

For each mode the whole test tensor is pushed through once under ``torch.utils.flop_counter.FlopCounterMode`` (so
the gated FLOPs reflect the routing that actually happened, not ``cheap + fraction * rest`` arithmetic). Then every
mode gets ``warmup`` untimed passes of its own (kernels and caches for every batch shape it will see) and is timed
``repeats`` times under ``torch.inference_mode``, the modes interleaved round-robin so that background load hits
all of them alike. Each timed region starts and ends with :func:`~ssl_art.runtime.device.synchronize`, and no mode
copies anything to the host inside it (routing flags stay on the device until the pass is over), so on a GPU every
mode is charged for its own kernels, not for their launches. The best pass gives images/s (the median is kept too).
Data loading is excluded: images are decoded and transformed once beforehand, identically for every mode. FLOPs
follow PyTorch's convention (a multiply-add counts 2). The gated mode also reports which share of the images reached
the expensive branch through the selector and which through the fall-back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from ssl_art.models.gated import GatedTwoBranch
from ssl_art.runtime.device import synchronize

Forward = Callable[[Tensor], tuple[Tensor, Tensor]]  # images -> (logits (B, K), routed (B,) bool)


def count_flops(fn: Callable[[Tensor], Any], x: Tensor) -> int:
    """Total FLOPs of ``fn(x)`` as counted by ``FlopCounterMode``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(x)
    return int(counter.get_total_flops())


def run_batches(fn: Forward, images: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Apply ``fn`` batch by batch; returns all logits ``(N, K)`` and flags ``(N, ...)`` (on the images' device)."""
    logits, flags = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            z, r = fn(images[i : i + batch_size])
            logits.append(z)
            flags.append(r)
    return torch.cat(logits), torch.cat(flags)


def timed_pass(fn: Forward, images: Tensor, batch_size: int) -> float:
    """Seconds for one synchronised pass of ``fn`` over ``images``."""
    synchronize(images.device)
    t0 = time.perf_counter()
    run_batches(fn, images, batch_size)
    synchronize(images.device)
    return time.perf_counter() - t0


def mode_functions(gated: GatedTwoBranch, reference: GatedTwoBranch | None = None) -> dict[str, Forward]:
    """The three inference modes, each ``images -> (logits (B, K), flags (B, 3) bool: routed, selector, fall-back)``.

    ``cheap_only`` = trunk + exit head; ``expensive_only`` = trunk + rest (the plain fine-tuned network);
    ``gated`` = trunk + exit head + selector, then rest (+ fusion on hard rows) on the routed rows only. The two
    single-branch modes come from ``reference`` when given (the stage-1 model, whose branches are the saved
    classifiers, when ``gated`` went through stage 2).
    """
    ref = reference if reference is not None else gated

    def cheap(x: Tensor) -> tuple[Tensor, Tensor]:
        return ref.cheap(x)[2], torch.zeros(len(x), 3, dtype=torch.bool, device=x.device)

    def expensive(x: Tensor) -> tuple[Tensor, Tensor]:
        flags = torch.zeros(len(x), 3, dtype=torch.bool, device=x.device)
        flags[:, 0] = True
        return ref.expensive(x)[1], flags

    def gate(x: Tensor) -> tuple[Tensor, Tensor]:
        out = gated(x, sample=False)
        return out.logits, torch.stack([out.routed, out.action, out.fallback], dim=1)

    return {"cheap_only": cheap, "expensive_only": expensive, "gated": gate}


def measure_modes(
    gated: GatedTwoBranch,
    images: Tensor,
    batch_size: int,
    repeats: int = 3,
    warmup: int = 1,
    reference: GatedTwoBranch | None = None,
) -> dict[str, dict[str, Any]]:
    """FLOPs/image, images/s, fraction routed to the expensive branch and the logits of each mode.

    Args:
        gated: the trained model (put in eval mode here).
        images: ``(N, 3, H, W)`` preprocessed test images on the model's device.
        batch_size: inference batch size (same for every mode).
        repeats: timed passes; the fastest is reported, and the median.
        warmup: untimed passes per mode before timing.
        reference: model whose branches give the cheap-only and expensive-only rows (default ``gated``).

    Returns:
        mode -> ``{"gflops_per_image", "images_per_s", "images_per_s_median", "expensive_fraction",
        "selector_fraction", "fallback_fraction", "logits" (N, K) numpy}``.
    """
    gated.eval()
    if reference is not None:
        reference.eval()
    fns = mode_functions(gated, reference)
    results: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        with FlopCounterMode(display=False) as counter:
            logits, flags = run_batches(fn, images, batch_size)
        flags = flags.cpu()
        results[name] = {
            "gflops_per_image": int(counter.get_total_flops()) / len(images) / 1e9,
            "expensive_fraction": float(flags[:, 0].float().mean()),
            "selector_fraction": float(flags[:, 1].float().mean()),
            "fallback_fraction": float(flags[:, 2].float().mean()),
            "logits": logits.float().cpu().numpy().astype(np.float32),
        }
    for fn in fns.values():  # warm-up: every mode, before any is timed
        for _ in range(max(0, warmup)):
            run_batches(fn, images, batch_size)
    synchronize(images.device)
    # round-robin timing, so every mode sees the same background load; best and median pass reported
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            times[name].append(timed_pass(fn, images, batch_size))
    for name in fns:
        results[name]["images_per_s"] = len(images) / min(times[name])
        results[name]["images_per_s_median"] = len(images) / float(np.median(times[name]))
    return results
