"""Run directories, logging, device and AMP selection: the bookkeeping around a training loop.

A new run refuses to write into a non-empty output directory unless ``run.resume`` or ``run.overwrite`` is set, so
results are never overwritten by accident. The resolved config is written as ``config.yaml`` in every run dir and a
``train.log`` file mirrors the console log.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

log = logging.getLogger("ssl_art")


class RunDirError(RuntimeError):
    """The output directory cannot be used as asked."""


def check_run_dir(output_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work starts, a non-empty ``output_dir`` unless ``resume`` or ``overwrite`` is asked.

    Raises:
        RunDirError: naming the three ways out.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"run.output_dir={out} is a file, not a folder; choose another run.output_dir")
    if out.exists() and any(out.iterdir()) and not resume and not overwrite:
        raise RunDirError(
            f"output dir {out} already holds a run. Use run.resume=true to continue it, "
            f"run.overwrite=true to replace it, or choose another run.output_dir."
        )
    if out.exists() and any(out.iterdir()) and overwrite and not resume and not (out / "config.yaml").is_file():
        raise RunDirError(
            f"run.overwrite=true only replaces an ssl_art run (a folder with config.yaml); {out} holds other files. "
            "Choose another run.output_dir or empty it yourself."
        )


def prepare_run_dir(output_dir: str, resume: bool, overwrite: bool, config: dict[str, Any]) -> Path:
    """Create (or reuse, on resume) the run directory and write the resolved ``config.yaml``."""
    out = Path(output_dir)
    check_run_dir(output_dir, resume, overwrite)
    if out.exists() and any(out.iterdir()) and not resume:
        shutil.rmtree(out)  # run.overwrite=true (check_run_dir refused everything else)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def run_cli(main: Callable[[], int]) -> int:
    """Run an entry point; a user-facing error becomes one ``error: ...`` line on stderr instead of a traceback.

    Configuration and argument errors (bad values, missing files, a refused run dir) exit with status 2 like
    argparse; data and numerical faults that stop a run (too many bad files, non-finite losses, a corrupt
    checkpoint) exit with 1. Anything else is a bug and keeps its traceback.
    """
    from ssl_art.checkpoint import CheckpointError
    from ssl_art.config import ConfigError
    from ssl_art.data.decode import TooManyBadFilesError
    from ssl_art.engine.loop import NonFiniteLossError

    try:
        return main()
    except (ConfigError, RunDirError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TooManyBadFilesError, NonFiniteLossError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def setup_logging(out: Path | None = None, rank: int = 0) -> None:
    """Console (rank 0 only) and ``train.log`` logging for the ``ssl_art`` logger tree."""
    root = logging.getLogger("ssl_art")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        root.addHandler(console)
        if out is not None:
            fh = logging.FileHandler(out / "train.log")
            fh.setFormatter(fmt)
            root.addHandler(fh)
    root.propagate = False


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
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


def init_distributed(backend: str, device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); returns ``(rank, world_size)``.

    A plain single process needs nothing and gets ``(0, 1)``. ``backend=auto`` picks nccl on CUDA, gloo otherwise.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(chosen)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 on CUDA, off elsewhere; fp16/bf16 on CPU are refused (slow, unsupported)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ValueError(f"run.amp={amp} needs CUDA; on {device.type} use run.amp=off or auto")
    if amp in ("auto", "bf16"):
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` when ``dtype`` is set, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def rng_state() -> dict[str, Any]:
    """All RNG states, for checkpoints."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
