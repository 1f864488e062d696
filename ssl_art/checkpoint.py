"""Crash-safe checkpoints: write to a temp file, fsync, rename; keep the last K; verify with a SHA-256 sidecar.

A SIGKILL can land at any instant, so no reader ever sees a half-written file: ``ckpt-<step>.pt`` is renamed into
place only once fully on disk, and its ``.sha256`` sidecar is written after it. On resume, :func:`find_resumable`
walks checkpoints newest first and takes the first whose size and hash match, warning about any it had to skip.
Checkpoints are loaded with ``map_location="cpu"``, so a GPU run resumes or evaluates on a CPU machine.

Weights go into a module through :func:`load_state_strict`, the one strict loader every checkpoint reader uses
(resume, evaluation, fine-tuned models, ``model.init_checkpoint``): the file is hash-checked by
:func:`load_checkpoint`, and missing, unexpected and shape-mismatched keys are listed in one error, never loaded
half-way with ``strict=False``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_art.config import ConfigError

log = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")  # writers never share it
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> str:
    """Atomically save ``obj`` with ``torch.save`` and write ``<path>.sha256``; returns the hex digest."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    atomic_write_bytes(f"{path}.sha256", f"{digest}  {len(data)}\n".encode())
    return digest


def _sidecar_ok(path: Path, data: bytes) -> bool | None:
    """Whether ``data`` (the bytes of ``path``) match ``<path>.sha256``; ``None`` when there is no sidecar."""
    side = Path(f"{path}.sha256")
    if not side.is_file():
        return None
    parts = side.read_text().split()
    return len(parts) == 2 and int(parts[1]) == len(data) and hashlib.sha256(data).hexdigest() == parts[0]


def verify_checkpoint(path: str | Path) -> bool:
    """True when ``path`` exists and matches its sidecar's size and SHA-256 (no sidecar: loadable is enough)."""
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    ok = _sidecar_ok(path, data)
    if ok is not None:
        return ok
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception:
        return False
    return True


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on CPU after verifying it; raises :class:`CheckpointError` when it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()  # read once: hashed, then loaded from the same bytes
    corrupt = CheckpointError(
        f"checkpoint {path} is truncated or corrupt (size/hash mismatch); use an earlier ckpt-*.pt, or pass "
        "the run dir (eval.checkpoint / run.resume pick the newest checkpoint that verifies)"
    )
    if _sidecar_ok(path, data) is False:
        raise corrupt
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:  # no sidecar: loadable is the check
        raise corrupt from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not an ssl_art checkpoint (expected a dict)")
    return obj


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``ckpt-<step>.pt`` files in ``ckpt_dir``, newest (highest step) first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if _CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(_CKPT_RE.match(p.name).group(1)), reverse=True)  # type: ignore[union-attr]


def find_resumable(ckpt_dir: str | Path) -> Path | None:
    """Newest checkpoint that verifies; damaged newer ones are reported and skipped."""
    for p in list_checkpoints(ckpt_dir):
        if verify_checkpoint(p):
            return p
        log.warning("checkpoint %s is truncated or corrupt; falling back to the previous one", p)
    return None


def save_rolling(ckpt_dir: str | Path, step: int, obj: dict[str, Any], keep_last: int) -> Path:
    """Save ``ckpt-<step>.pt`` plus ``last.pt`` and delete all but the newest ``keep_last`` step checkpoints."""
    d = Path(ckpt_dir)
    path = d / f"ckpt-{step:09d}.pt"
    save_checkpoint(path, obj)
    # last.pt: a stable name for users and tools; hard link when possible (no second copy on disk)
    last, tmp = d / "last.pt", d / f".last.pt.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(path, tmp)
        os.replace(tmp, last)
        atomic_write_bytes(d / "last.pt.sha256", Path(f"{path}.sha256").read_bytes())
    except OSError:
        save_checkpoint(last, obj)
    for old in list_checkpoints(d)[max(1, keep_last) :]:
        old.unlink(missing_ok=True)
        Path(f"{old}.sha256").unlink(missing_ok=True)
    return path


STATE_HINT = "Was it saved with another backbone/method config?"


def _state_mismatch(module: nn.Module, state: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, shape_mismatched)`` keys of ``state`` against ``module.state_dict()``."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    return missing, unexpected, shape


def load_state_strict(module: nn.Module, state: Mapping[str, Any], source: str, hint: str = STATE_HINT) -> None:
    """``module.load_state_dict(state, strict=True)``, after checking every key so one error lists all faults.

    Args:
        module: the freshly built module.
        state: its state dict as read from ``source`` (use :func:`load_checkpoint` to read it hash-checked).
        source: what the weights are, for the message (a path, ``run.resume: <path>``, ``model.init_checkpoint``).
        hint: the likely cause and fix, appended to the message.

    Raises:
        ConfigError: (a ``ValueError``) listing missing and unexpected keys and shape mismatches.
    """
    missing, unexpected, shape = _state_mismatch(module, state)
    if missing or unexpected or shape:
        raise ConfigError(
            f"{source} does not match the model: {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}, {len(shape)} shape mismatches {shape[:4]}. {hint}"
        )
    module.load_state_dict(state, strict=True)
