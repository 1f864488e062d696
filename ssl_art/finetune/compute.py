"""Measured compute of gated inference against always-expensive and cheap-only, on the same images.

For each mode the whole test tensor is pushed through once under ``torch.utils.flop_counter.FlopCounterMode`` (so
the gated FLOPs reflect the routing that actually happened, not ``cheap + fraction * rest`` arithmetic), then
timed ``repeats`` times without the counter under ``torch.inference_mode`` after a full warm-up pass, the modes
interleaved round-robin so that background load hits all of them alike; the best pass gives images/s (the median
is kept too). Data loading is excluded: images are decoded and transformed
once beforehand, identically for every mode. FLOPs follow PyTorch's convention (a multiply-add counts 2).
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

Forward = Callable[[Tensor], tuple[Tensor, Tensor]]  # images -> (logits (B, K), routed (B,) bool)


def count_flops(fn: Callable[[Tensor], Any], x: Tensor) -> int:
    """Total FLOPs of ``fn(x)`` as counted by ``FlopCounterMode``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(x)
    return int(counter.get_total_flops())


def run_batches(fn: Forward, images: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Apply ``fn`` batch by batch; returns all logits ``(N, K)`` and routed flags ``(N,)``."""
    logits, routed = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            z, r = fn(images[i : i + batch_size])
            logits.append(z.float())
            routed.append(r)
    return torch.cat(logits), torch.cat(routed)


def mode_functions(gated: GatedTwoBranch) -> dict[str, Forward]:
    """The three inference modes of a gated model, each ``images -> (logits, routed)``.

    ``cheap_only`` = trunk + exit head; ``expensive_only`` = trunk + rest (the plain fine-tuned network);
    ``gated`` = trunk + exit head + selector, then rest + fusion on the routed rows only.
    """

    def cheap(x: Tensor) -> tuple[Tensor, Tensor]:
        return gated.cheap(x)[2], torch.zeros(len(x), dtype=torch.bool)

    def expensive(x: Tensor) -> tuple[Tensor, Tensor]:
        return gated.expensive(x)[1], torch.ones(len(x), dtype=torch.bool)

    def gate(x: Tensor) -> tuple[Tensor, Tensor]:
        out = gated(x, sample=False)
        return out.logits, out.routed.cpu()

    return {"cheap_only": cheap, "expensive_only": expensive, "gated": gate}


def measure_modes(
    gated: GatedTwoBranch, images: Tensor, batch_size: int, repeats: int = 3
) -> dict[str, dict[str, Any]]:
    """FLOPs/image, images/s, fraction routed to the expensive branch and the logits of each mode.

    Args:
        gated: the trained model (put in eval mode here).
        images: ``(N, 3, H, W)`` preprocessed test images on the model's device.
        batch_size: inference batch size (same for every mode).
        repeats: timed passes; the fastest is reported.

    Returns:
        mode -> ``{"gflops_per_image", "images_per_s", "images_per_s_median", "expensive_fraction",
        "logits" (N, K) numpy}``.
    """
    gated.eval()
    fns = mode_functions(gated)
    results: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        with FlopCounterMode(display=False) as counter:
            logits, routed = run_batches(fn, images, batch_size)
        results[name] = {
            "gflops_per_image": int(counter.get_total_flops()) / len(images) / 1e9,
            "expensive_fraction": float(routed.float().mean()),
            "logits": logits.cpu().numpy().astype(np.float32),
        }
        run_batches(fn, images, batch_size)  # warm-up: kernels for every batch shape this mode will see
    # round-robin timing, so every mode sees the same background load; best and median pass reported
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            run_batches(fn, images, batch_size)
            times[name].append(time.perf_counter() - t0)
    for name in fns:
        results[name]["images_per_s"] = len(images) / min(times[name])
        results[name]["images_per_s_median"] = len(images) / float(np.median(times[name]))
    return results
