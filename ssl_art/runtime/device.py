"""Device and mixed-precision selection: ``run.device`` and ``run.amp`` made concrete, with errors naming the fix.

``resolve_device("auto")`` picks cuda, then mps, then cpu; ``amp_dtype`` turns ``run.amp`` into an autocast dtype
(bf16 on CUDA by default, off elsewhere) and ``autocast`` is ``torch.autocast`` or a no-op context when off.
``synchronize`` waits for a device's queued kernels, so a timer around GPU work measures the work, not its launch.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

__all__ = ["amp_dtype", "autocast", "cpu_has_bf16", "resolve_device", "synchronize"]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error.

    Raises:
        RuntimeError: ``cuda`` or ``mps`` asked for but not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is available; use run.device=auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("run.device=mps but MPS is not available; use run.device=auto or cpu")
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 on CUDA, off elsewhere; ``bf16`` also on a CPU with native bf16 (AMX etc.).

    On such a CPU (recent Xeons) bf16 autocast with ``run.channels_last=true`` runs a resnet18 SimCLR step about 1.6x
    faster than fp32 (0.76 vs 1.23 CPU-s, docs/benchmarks.md section 5); ``auto`` stays fp32 on CPU so nobody's
    numerics change unasked. fp16 on CPU is refused (slow, no GradScaler there).

    Raises:
        ValueError: ``fp16`` on a device other than CUDA, or ``bf16`` on one without bf16 support.
    """
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cpu" and amp == "bf16":
        if not cpu_has_bf16():
            raise ValueError("run.amp=bf16 on this CPU has no native bf16 (AVX512-BF16/AMX); use run.amp=off or auto")
        return torch.bfloat16
    if device.type != "cuda":
        raise ValueError(f"run.amp={amp} needs CUDA; on {device.type} use run.amp=off or auto")
    if amp in ("auto", "bf16"):
        return torch.bfloat16
    return torch.float16


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (without it bf16 is emulated and slower than fp32)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` when ``dtype`` is set, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def synchronize(device: torch.device) -> None:
    """Block until every kernel queued on ``device`` has finished (CUDA, MPS); a no-op on CPU.

    Call it on both ends of a timed region: CUDA and MPS run asynchronously, so without it a timer measures kernel
    launches, and whichever code happens to copy a result to the host pays for everything queued before it.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
