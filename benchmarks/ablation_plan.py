"""Cost side of the ablation: the measured CPU seconds per optimiser step of each variant and the ``--plan`` estimate.

A step is timed on a fixed random batch (forward, backward, optimiser step, EMA update) with this process's CPU
clock (on a GPU, ``run.device`` resolving to cuda: wall seconds between synchronisations, the GPU being the cost),
once per distinct method/model/loss (augmentation changes no step cost, except local multi-crop views: extra
forwards) and cached in ``step_cost.json``.
The plan multiplies the steps of every run by its step cost, adds 15% for data loading, and estimates the monitor's
and the evaluation's forward passes from the same measurement (an image forward ~ 1/3 of its training step) plus
about a minute per run for the linear probe's cross-validation: a rough guide, not a measurement.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ssl_art.checkpoint import atomic_write_bytes
from ssl_art.config import PretrainConfig, config_to_dict
from ssl_art.data.transforms import local_side
from ssl_art.engine.fast_path import apply_speed_options
from ssl_art.methods.registry import build_pretrain_model
from ssl_art.runtime.device import amp_dtype, autocast, resolve_device, synchronize


def fingerprint(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def collection_id(path: str) -> str:
    """A collection by what it holds, not where it lies: its folder name, file count and a digest of every file's
    relative path and size. The same collection checked out elsewhere (another machine, CI) keeps its records; a
    changed one (a file added, removed or rewritten to another size) does not. ``''`` (synthetic) stays ``''``."""
    if not path:
        return ""
    root = Path(path)
    files = sorted((str(f.relative_to(root)), f.stat().st_size) for f in root.rglob("*") if f.is_file())
    return f"{root.name}:{len(files)}:{fingerprint(files)}"


def step_cost(cfg: PretrainConfig, steps: int = 2, warmup: int = 1) -> float:
    """Seconds per optimiser step on a fixed random batch (forward, backward, step, EMA update), median.

    On ``run.device``, under the run's ``run.amp`` (bf16 autocast on a CPU that has it) and ``run.channels_last``, as
    the engine runs it: this process's CPU seconds on the CPU, wall seconds between synchronisations on a GPU.
    """
    torch.manual_seed(0)
    dev = resolve_device(cfg.run.device)
    method = build_pretrain_model(cfg).to(dev).train()
    apply_speed_options(method, cfg.run.channels_last, False)  # in place
    dtype = amp_dtype(cfg.run.amp, dev)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    b, s = cfg.data.batch_size, cfg.data.image_size
    aug = cfg.data.aug
    views = [torch.randn(b, 3, s, s, device=dev) for _ in range(aug.n_views)]
    side = local_side(aug, s)
    views += [torch.randn(b, 3, side, side, device=dev) for _ in range(aug.n_local)]  # multi-crop
    clock = time.process_time if dev.type == "cpu" else time.perf_counter
    times = []
    for i in range(warmup + steps):
        synchronize(dev)
        t0 = clock()
        with autocast(dev, dtype):
            out = method.training_step(views, i / (warmup + steps))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_optimizer_step(i / (warmup + steps))
        synchronize(dev)
        if i >= warmup:
            times.append(clock() - t0)
    return sorted(times)[len(times) // 2]


def measure_costs(
    runs: list[tuple[str, Any, int]],
    a: argparse.Namespace,
    cache: Path,
    make_cfg: Callable[[Any], PretrainConfig],
) -> dict[str, float]:
    """Step cost per variant, measured once per distinct model/loss (cached in ``cache``; augmentation is free but
    for local views)."""
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    costs: dict[str, float] = {}
    guesses: dict[str, float] = {}  # --plan's, per model
    for name, v, _ in runs:
        if name in costs:
            continue
        cfg = make_cfg(v)
        d = config_to_dict(cfg)
        key = fingerprint({k: d[k] for k in ("method", "model", "loss")} | {"b": cfg.data.batch_size,
                           "s": cfg.data.image_size, "threads": torch.get_num_threads(),
                           "amp": cfg.run.amp, "cl": cfg.run.channels_last})  # fmt: skip
        if (dev := resolve_device(cfg.run.device).type) != "cpu":  # a GPU's cost is another clock (CPU keys unchanged)
            key += f"@{dev}"
        if cfg.data.aug.n_local:  # local views are extra forwards: they do cost (keys without them stay as they were)
            key += f"+{cfg.data.aug.n_local}x{local_side(cfg.data.aug, cfg.data.image_size)}"
        if key in known:
            costs[name] = known[key]
        elif getattr(a, "report", False):  # a report measures nothing: made elsewhere (a CPU tabling GPU runs), this
            continue  # machine's step would be another machine's cost under its label; the table shows '-'
        elif a.plan:  # a rough guide: one timed step, never cached (the table needs a real measurement)
            if key not in guesses:
                guesses[key] = step_cost(cfg, steps=1)
            costs[name] = guesses[key]
        else:
            known[key] = costs[name] = step_cost(cfg, steps=3, warmup=2)  # a process's first steps run slow
            atomic_write_bytes(cache, json.dumps(known, indent=1).encode())
    return costs


def n_steps(a: argparse.Namespace) -> int:
    if not a.unlabeled:
        n = int(a.synthetic_size)
    else:
        from ssl_art.data import load_collection

        n = len(load_collection(a.unlabeled))
    return int(a.epochs) * max(1, n // int(a.batch_size))


def print_plan(runs: list[tuple[str, Any, int]], costs: dict[str, float], a: argparse.Namespace) -> float:
    """The runs with their steps and estimated CPU time; returns the total in CPU hours."""
    steps = n_steps(a)
    fwd = costs.get("simclr", min(costs.values())) / (3 * 2 * a.batch_size)  # one image forward ~ 1/3 of its step
    checks = (a.epochs // a.monitor_every + 1) if a.monitor_every else 0
    n_lab = 1400 if a.labelled else a.synthetic_size
    probe_s = 60.0 * (n_lab / 1400) * (a.linear_epochs / 100)  # ~1 min for the 5-fold probe on 1400 images
    eval_s = fwd * n_lab * (2 if a.synthetic else 1) + probe_s
    total = 0.0
    print(f"{len(runs)} runs x {steps} steps (batch {a.batch_size}, {a.epochs} epochs), {torch.get_num_threads()} "
          "threads; step CPU-s measured, data loading +15%, monitor and eval estimated")  # fmt: skip
    print("| run | steps | step CPU-s | est. CPU-min |\n|---|---|---|---|")
    for name, _, seed in runs:
        s = steps * costs[name] * 1.15 + checks * a.monitor_max_images * fwd + eval_s
        total += s
        print(f"| {name}/seed{seed} | {steps} | {costs[name]:.3f} | {s / 60:.1f} |")
    threads = torch.get_num_threads()
    total += eval_s  # the random-init reference row: evaluation only
    wall = total / 3600 / threads
    print(
        f"total: {total / 3600:.1f} CPU-hours = {total / 60:.0f} CPU-min (~{wall:.1f} h wall on {threads} free cores)"
    )
    return float(total / 3600)
