"""Checks a fine-tuning run makes before it reads data: gate value ranges, the run dir, and ensemble members' splits.

:func:`preflight` refuses bad ``gate.*`` values, missing ensemble members and a run dir that already holds a run; a
killed run is recognised (checkpoints, no ``summary.json``) and the refusal says, in one line, to add
``run.resume=true``. :func:`check_ensemble_split` refuses ensemble members that trained on any of this run's test
images, read from the ``splits.json`` of each member's run dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssl_art.checkpoint import find_resumable
from ssl_art.config import ConfigError, FinetuneConfig, GateCfg, validate
from ssl_art.engine.rundir import check_run_dir
from ssl_art.runtime.errors import RunDirError

__all__ = ["check_ensemble_split", "preflight"]


def _check_gate(g: GateCfg) -> None:
    def need(ok: bool, key: str, value: Any, what: str) -> None:
        if not ok:
            raise ConfigError(f"gate.{key}={value!r} is out of range: {what}")

    need(0.0 <= g.fallback_threshold <= 1.0, "fallback_threshold", g.fallback_threshold, "a probability in [0, 1]")
    need(0.0 < g.alpha <= 1.0, "alpha", g.alpha, "a maximum fusion weight in (0, 1]")
    need(0.0 < g.budget <= 1.0, "budget", g.budget, "a fraction of images in (0, 1]")
    for key in ("exit_width", "hidden_dim", "stage1_batch_size", "cheap_stages"):
        need(getattr(g, key) >= 1, key, getattr(g, key), "a positive integer")
    for key in ("exit_lr_scale", "stage1_lr", "stage2_lr_scale"):
        need(getattr(g, key) > 0, key, getattr(g, key), "a positive number")
    for key in ("selector_weight", "cost", "budget_weight", "pg_weight", "stage1_weight_decay"):
        need(getattr(g, key) >= 0, key, getattr(g, key), "0 (off) or positive")
    need(0.0 <= g.baseline_momentum < 1.0, "baseline_momentum", g.baseline_momentum, "in [0, 1)")
    need(g.bench_repeats >= 1, "bench_repeats", g.bench_repeats, "at least 1 timed pass")
    need(g.bench_warmup >= 0, "bench_warmup", g.bench_warmup, "0 or more warm-up passes")


def preflight(cfg: FinetuneConfig) -> None:
    """Checks that must fail before any data is read: value ranges, missing ensemble members, the run dir.

    A non-empty ``run.output_dir`` holding a fine-tuning run that never finished (a ``checkpoints/`` folder and no
    ``summary.json``: killed, or stopped by an error) is refused with one message that says to add
    ``run.resume=true``.

    Raises:
        ConfigError: an out-of-range value or a missing file.
        RunDirError: the output dir holds a run and neither ``run.resume`` nor ``run.overwrite`` is set.
    """
    validate(cfg)
    _check_gate(cfg.gate)
    for path in cfg.ft.ensemble:
        if not Path(path).exists():
            raise ConfigError(f"ft.ensemble member {path} does not exist; give fine-tune run dirs or best.pt files")
    out = Path(cfg.run.output_dir)
    if out.is_dir() and not cfg.run.resume and not cfg.run.overwrite and not (out / "summary.json").is_file():
        ckpts = [find_resumable(d) for d in sorted((out / "checkpoints").glob("*")) if d.is_dir()]
        newest = [str(c) for c in ckpts if c is not None]
        if newest:
            raise RunDirError(
                f"{out} holds an unfinished fine-tuning run (last checkpoint {newest[-1]}); to continue it, rerun the "
                "same command with run.resume=true (or use run.overwrite=true to start over)"
            )
    check_run_dir(cfg.run.output_dir, cfg.run.resume, cfg.run.overwrite)


def _member_split_paths(path: str) -> set[str]:
    """Train paths of an ensemble member, from the ``splits.json`` of its run dir."""
    p = Path(path)
    run_dir = p if p.is_dir() else p.parent.parent  # <run>/checkpoints/best.pt
    split_file = run_dir / "splits.json"
    if not split_file.is_file():
        raise ConfigError(
            f"ft.ensemble member {path}: no splits.json in {run_dir}, so its training images cannot be checked "
            "against this run's test split; use members fine-tuned by main_finetune.py (with split.file=<this "
            "run's splits.json>)"
        )
    doc = json.loads(split_file.read_text())
    return set(doc["paths"]["train"])


def check_ensemble_split(members: tuple[str, ...], test_paths: list[str]) -> None:
    """Refuse members that trained on any of this run's test images (their train paths must miss them all).

    Raises:
        ConfigError: naming the member, how many test images it trained on, one example and the fix.
    """
    test = set(test_paths)
    for path in members:
        overlap = sorted(_member_split_paths(path) & test)
        if overlap:
            raise ConfigError(
                f"ft.ensemble member {path} was trained on {len(overlap)} of this run's test images (e.g. "
                f"{overlap[0]}); fine-tune members on this run's split (split.file=<this run's splits.json>)"
            )
