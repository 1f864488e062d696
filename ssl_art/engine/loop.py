"""``fit()``: the pretraining loop shared by every method.

Per step: lr from a pure schedule, forward under autocast, finite-loss guard, backward (GradScaler for fp16),
gradient clipping, ``optimizer.step()``, then ``method.after_optimizer_step`` (EMA teachers). Around it: resumable
data order, checkpoints every epoch / N steps written atomically, SIGTERM/SIGINT save-and-stop, an optional
wall-clock budget (equal-time benchmarks), bad-file accounting, TensorBoard scalars and ``metrics.jsonl``.
The loop mirrors MAE's ``engine_pretrain.train_one_epoch`` without its ``args`` coupling.

Under ``torchrun`` the method trains inside ``DistributedDataParallel`` (:mod:`ssl_art.engine.ddp`) and the ranks
stay in lock step: every rank gets the same number of equal batches, the bad files of a step are gathered so each
rank keeps the same global count, and every stop (signal, time budget, bad-file threshold, non-finite steps) is
decided from all ranks' flags at the same step. Rank 0 alone writes checkpoints, ``metrics.jsonl`` and TensorBoard;
logged metrics are averaged over ranks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssl_art import checkpoint as ckpt_io
from ssl_art import distributed
from ssl_art.config import DataCfg, OptimCfg, RunCfg
from ssl_art.data.decode import BadFileReport
from ssl_art.engine import ddp
from ssl_art.engine.hooks import EpochHook, run_epoch_hooks
from ssl_art.engine.optim import build_optimizer
from ssl_art.engine.sampler import ResumableSampler, SeededDataset
from ssl_art.engine.step import OptimStep, checkpoint_due
from ssl_art.methods.base import PretrainMethod
from ssl_art.runtime.device import amp_dtype, resolve_device
from ssl_art.runtime.errors import TooManyBadFilesError
from ssl_art.runtime.schedules import cosine_schedule, scaled_lr
from ssl_art.runtime.seeding import rng_state, seed_everything, set_rng_state

log = logging.getLogger("ssl_art.engine")

COLLAPSE_STD = 0.05  # emb_std below this (1 = well spread) means the embeddings have collapsed


@dataclass
class FitResult:
    """What a finished (or stopped) run did."""

    steps: int
    epochs: float
    stopped: str  # done | time_budget | signal
    seconds: float
    images_per_s: float
    nonfinite_skipped: int
    bad_files: dict[str, Any] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step boundary and returns."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received signal %d: saving a checkpoint and stopping after this step", signum)

    def __enter__(self) -> _StopFlag:
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _make_loader(
    dataset: Dataset[Any],
    collate: Callable[[list[Any]], Any],
    data: DataCfg,
    seed: int,
    rank: int,
    world: int,
    keep: int,
) -> tuple[DataLoader[Any], ResumableSampler]:
    sampler = ResumableSampler(len(dataset), seed, rank=rank, world_size=world, keep=keep)  # type: ignore[arg-type]
    workers = data.num_workers
    loader: DataLoader[Any] = DataLoader(
        SeededDataset(dataset, seed),
        batch_size=data.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=data.pin_memory,
        persistent_workers=data.persistent_workers and workers > 0,
    )
    return loader, sampler


def fit(
    method: PretrainMethod,
    dataset: Dataset[Any],
    collate: Callable[[list[Any]], Any],
    data: DataCfg,
    optim: OptimCfg,
    run: RunCfg,
    config: dict[str, Any],
    out: Path,
    bad: BadFileReport | None = None,
    dist_backend: str = "auto",
    sync_bn: str = "auto",
    batches: Callable[[ResumableSampler], Iterable[Any]] | None = None,
    epoch_hooks: Sequence[EpochHook] = (),
) -> FitResult:
    """Train ``method`` on ``dataset`` (multi-view samples) and checkpoint into ``out/checkpoints``.

    Args:
        method: a :class:`PretrainMethod`.
        dataset: returns ``(views, target, index)`` or a bad-sample marker; ``collate`` turns a list into a ``Batch``.
        collate: batch collation that drops bad samples and lists them in ``batch.bad``.
        data: batching options (batch size, workers, bad-file threshold).
        optim: optimiser and schedule.
        run: output dir, seed, device, AMP, checkpoint cadence, budget.
        config: the resolved config as a dict, stored in every checkpoint.
        out: the prepared run directory.
        bad: files already found unreadable while indexing (counted toward the threshold).
        dist_backend: torch.distributed backend when launched with torchrun (``auto``: nccl on CUDA, else gloo).
        sync_bn: ``dist.sync_bn`` (``auto``: SyncBatchNorm when more than one process trains).
        batches: the cached input path: builds the batch iterable from the resumable sampler instead of
            a DataLoader over ``dataset`` (which then only gives the length).
        epoch_hooks: measurements run before the first step and after each epoch (``ssl_art.engine.hooks``).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: batch larger than the dataset.
        NonFiniteLossError: ``run.max_nonfinite`` non-finite steps in a row (nothing is saved after the last good
            checkpoint, whose path the message names).
        TooManyBadFilesError: more than ``data.max_bad_fraction`` unreadable; ``out/bad_files.json`` is written first.
        ConfigError: on resume, the checkpoint's weights do not match ``method`` (keys listed).
    """
    n = len(dataset)  # type: ignore[arg-type]
    seed_everything(run.seed, run.deterministic)
    device = resolve_device(run.device)
    distributed.init_from_env(dist_backend, device)
    rank, world = distributed.rank(), distributed.world_size()
    global_batch = data.batch_size * world
    if global_batch > n:
        raise ValueError(f"data.batch_size={data.batch_size} x {world} ranks is larger than the dataset ({n} images)")
    dtype = amp_dtype(run.amp, device)
    method.to(device)
    method.train()
    # unused parameters frozen, SyncBatchNorm, DDP (rank 0's weights broadcast); the plain step in one process
    model = ddp.prepare(method, SeededDataset(dataset, run.seed), collate, data.batch_size, device,
                        ddp.use_sync_bn(sync_bn, world))  # fmt: skip
    batches_per_epoch = n // global_batch
    steps_per_epoch = max(1, batches_per_epoch // optim.accum_steps)
    total = optim.max_steps if optim.max_steps > 0 else optim.epochs * steps_per_epoch
    warmup = int(optim.warmup_epochs * steps_per_epoch)
    peak_lr = scaled_lr(optim.lr, data.batch_size, optim.accum_steps, world)
    opt = build_optimizer(method, optim.name, peak_lr, optim.weight_decay, optim.momentum)
    params = [p for p in method.parameters() if p.requires_grad]
    report = bad if bad is not None else BadFileReport()

    step, epoch, pos, elapsed_before = 0, 0, 0, 0.0
    bad_idx: set[int] = set()  # dataset indices found unreadable while training: each file counts once
    saved_at = (-1, -1)  # (step, pos) of the last checkpoint: never write the same state twice
    ckpt_dir = out / "checkpoints"
    stepper = OptimStep(
        opt, params, device, dtype, optim.accum_steps, optim.clip_grad, run.max_nonfinite, ckpt_dir,
        all_finite=lambda loss: _all_finite(loss, world),
        sync_grads=None,  # DDP all-reduces the gradients during backward
    )  # fmt: skip
    if run.resume:
        found = ckpt_io.find_resumable(ckpt_dir)
        if found is None:
            log.warning("run.resume=true but no valid checkpoint in %s: starting from scratch", ckpt_dir)
        else:
            state = ckpt_io.load_checkpoint(found)
            ckpt_io.load_state_strict(method, state["model"], f"run.resume: {found}")
            opt.load_state_dict(state["optimizer"])
            stepper.load_state_dict(state)
            step, epoch, pos = state["step"], state["epoch"], state["pos"]
            elapsed_before = state["elapsed"]
            report = state.get("bad_report", report)
            bad_idx = set(state.get("bad_indices", []))
            set_rng_state(state["rng"])
            log.info("resumed from %s at step %d (epoch %d, sample %d)", found, step, epoch, pos)

    def save() -> None:
        nonlocal saved_at
        if rank != 0:
            return
        if saved_at == (step, pos):
            return
        saved_at = (step, pos)
        state = {
            "model": method.state_dict(),
            "optimizer": opt.state_dict(),
            **stepper.state_dict(),  # scaler, nonfinite
            "step": step,
            "epoch": epoch,
            "pos": pos,
            "elapsed": elapsed_before + (time.time() - t0),
            "rng": rng_state(),
            "config": config,
            "bad_report": report,
            "bad_indices": sorted(bad_idx),
        }
        path = ckpt_io.save_rolling(ckpt_dir, step, state, run.keep_last)
        (out / "bad_files.json").write_text(json.dumps(report.to_dict(), indent=2))
        log.debug("checkpoint %s", path)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb")) if rank == 0 else None
    metrics_file = open(out / "metrics.jsonl" if rank == 0 else os.devnull, "a")
    keep = batches_per_epoch * global_batch  # whole global batches per epoch, the same on every rank
    loader: Iterable[Any]
    if batches is None:
        loader, sampler = _make_loader(dataset, collate, data, run.seed, rank, world, keep)
    else:
        sampler = ResumableSampler(n, run.seed, rank=rank, world_size=world, keep=keep)
        loader = batches(sampler)
    t0 = time.time()
    # the budget clock: wall time, or this process's CPU time (fair equal-compute budgets on a shared machine)
    clock = time.process_time if run.budget_clock == "process" else time.time
    c0 = clock()

    def budget_used(before: float) -> float:
        return (before if run.budget_clock == "wall" else 0.0) + clock() - c0

    seen_imgs = 0
    stopped = "done"
    last_metrics: dict[str, float] = {}
    t_log, imgs_log = time.time(), 0
    closing = contextlib.closing(writer) if writer is not None else contextlib.nullcontext()
    with _StopFlag() as flag, metrics_file, closing:  # closed on errors too
        if step == 0:  # a fresh run: the curve's epoch-0 point (the initialisation)
            run_epoch_hooks(epoch_hooks, method, 0, 0, writer, metrics_file, rank)
        while step < total:
            sampler.set_epoch(epoch, start=pos)
            bar = tqdm(
                total=batches_per_epoch,
                initial=pos // global_batch,
                desc=f"epoch {epoch}",
                disable=not run.progress or rank != 0,
                leave=False,
                dynamic_ncols=True,
            )
            interrupted = False
            for batch in loader:
                pos += global_batch
                bar.update(1)
                b = int(batch.indices.numel())
                any_bad, too_small = distributed.any_rank(bool(batch.bad), b < 2)
                for idx, kind, path in ddp.gather_bad(batch.bad) if any_bad else ():  # every rank's, rank order
                    if idx not in bad_idx:
                        bad_idx.add(idx)
                        report.add(kind, path)
                seen_imgs += b
                # bad fraction = bad files / (files read so far, at most one epoch + files dropped while indexing)
                looked = min(epoch * batches_per_epoch * global_batch + pos, batches_per_epoch * global_batch)
                if report.total and looked >= min(50, batches_per_epoch * global_batch):
                    try:
                        report.check(looked + report.total - len(bad_idx), data.max_bad_fraction)
                    except TooManyBadFilesError:
                        if rank == 0:
                            (out / "bad_files.json").write_text(json.dumps(report.to_dict(), indent=2))
                        raise
                if too_small:  # nothing to contrast (on some rank: all skip, or the collectives pair up wrong)
                    continue
                progress = step / total
                if stepper.micro == 0:
                    lr = cosine_schedule(step, total, peak_lr, optim.min_lr, warmup)
                    for g in opt.param_groups:
                        g["lr"] = lr
                views = [v.to(device, non_blocking=True) for v in batch.views]
                with ddp.no_sync(model, stepper.micro + 1 < optim.accum_steps):  # DDP all-reduces on the last one
                    with stepper.autocast():
                        out_step = model(views, progress)
                    loss = out_step.loss
                    result = stepper.backward(loss, step)
                if not result.stepped:
                    continue
                gnorm = result.grad_norm
                method.after_optimizer_step(progress)
                step += 1
                imgs_log += b
                if step % run.log_every == 0 or step == total:
                    now = time.time()
                    last_metrics = {
                        "lr": opt.param_groups[0]["lr"],
                        "grad_norm": float(gnorm),  # of the all-reduced gradients: the same on every rank
                        "images_per_s": imgs_log * world / max(now - t_log, 1e-9),
                        **ddp.mean_over_ranks({"loss": float(loss.detach()), **out_step.metrics}),
                    }
                    t_log, imgs_log = now, 0
                    for k, v in last_metrics.items():
                        if writer is not None:
                            writer.add_scalar(k if "/" in k else f"train/{k}", v, step)
                    metrics_file.write(json.dumps({"step": step, "epoch": epoch, **last_metrics}) + "\n")
                    metrics_file.flush()
                    bar.set_postfix(loss=f"{last_metrics['loss']:.3f}", lr=f"{last_metrics['lr']:.2e}")
                    std = last_metrics.get("emb_std")
                    if std is not None and std < COLLAPSE_STD:
                        log.warning("embedding std %.4f: representations may be collapsing", std)
                if checkpoint_due(step, run.ckpt_every_steps):
                    save()
                signalled, over_budget = distributed.any_rank(  # one decision for all ranks, at this step
                    bool(flag.signum), bool(run.time_budget_s) and budget_used(elapsed_before) >= run.time_budget_s
                )
                if signalled:
                    stopped, interrupted = "signal", True
                elif over_budget:
                    stopped, interrupted = "time_budget", True
                if step >= total or interrupted:
                    break
            bar.close()
            if interrupted:
                break
            if pos >= batches_per_epoch * global_batch:
                epoch, pos = epoch + 1, 0
                stepper.reset()
                run_epoch_hooks(epoch_hooks, method, epoch, step, writer, metrics_file, rank)  # before the save
                save()
                log.info("epoch %d done: step %d/%d %s", epoch, step, total, _fmt(last_metrics))
        save()
    distributed.barrier()  # the last checkpoint is on disk before any rank returns
    seconds = time.time() - t0
    return FitResult(
        steps=step,
        epochs=epoch + pos / max(1, batches_per_epoch * global_batch),
        stopped=stopped,
        seconds=seconds,
        images_per_s=seen_imgs * world / max(seconds, 1e-9),
        nonfinite_skipped=stepper.nonfinite_total,
        bad_files=report.to_dict(),
        last_metrics=last_metrics,
    )


def _all_finite(loss: torch.Tensor, world: int) -> bool:
    """Whether the loss is finite on every rank (all ranks must agree to skip, or all_reduce would hang)."""
    ok = torch.isfinite(loss).to(torch.float32).reshape(1)
    if world > 1:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item() > 0)


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
