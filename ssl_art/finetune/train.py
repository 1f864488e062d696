"""Supervised fine-tuning on the engine's optimiser step, with model selection on val only; resumable mid-epoch.

Per step: lr from :func:`~ssl_art.runtime.schedules.cosine_schedule` times each group's ``lr_scale`` (layer-wise
decay), optional timm Mixup/CutMix (soft targets), masked multi-task cross-entropy with label smoothing and optional
class weights; autocast, the fp16 GradScaler, ``optim.accum_steps`` accumulation, clipping and the non-finite policy
(``run.max_nonfinite``) are the engine's :class:`~ssl_art.engine.step.OptimStep`, the same code pretraining runs.
After every epoch the model is scored on val (the first head's ``select_metric``); the best state is kept and
training stops after ``patience`` epochs without improvement. With a ``ckpt_dir`` the stage checkpoints every
``run.ckpt_every_steps`` steps and every epoch (``run.keep_last`` kept) and, on ``run.resume``, continues exactly
where it stopped: the data order and augmentations come from the engine's resumable sampler and seeded dataset, and
the RNG state, optimiser, scaler, best state and history are restored. A finished stage's last checkpoint is marked
``done`` and is simply loaded again. Test data never enters this module. Targets come from an ``(N, T)`` matrix
indexed by ``batch.indices``, so any number of label columns rides on one loader.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data.mixup import Mixup
from timm.loss.cross_entropy import SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader

from ssl_art import checkpoint as ckpt_io
from ssl_art.config import DataCfg, FinetuneConfig
from ssl_art.data import Collection, build_loader
from ssl_art.data.dataset import ImageDataset
from ssl_art.data.loaders import collate
from ssl_art.data.transforms import Transform
from ssl_art.engine.optim import optimizer_for_groups
from ssl_art.engine.sampler import ResumableSampler, SeededDataset
from ssl_art.engine.step import OptimStep, checkpoint_due
from ssl_art.eval.metrics import balanced_accuracy, macro_f1, topk_accuracy
from ssl_art.finetune.labels import balanced_indices, inverse_frequency_weights, masked_multitask_loss
from ssl_art.finetune.lr_decay import param_groups_lrd
from ssl_art.finetune.model import Classifier
from ssl_art.runtime.schedules import cosine_schedule
from ssl_art.runtime.seeding import rng_state, set_rng_state

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Selected model (loaded into the module) and the per-epoch history."""

    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)


def score(probs: np.ndarray, targets: np.ndarray, metric: str) -> float:
    """Selection score of ``(N, C)`` probabilities on ``(N,)`` targets.

    Rows with a missing target (``-1``) and rows without a prediction (NaN: the image could not be read) are left
    out, as :func:`~ssl_art.finetune.report.classification_metrics` does: an unreadable image is never "correct".
    """
    keep = (targets >= 0) & np.isfinite(probs).all(axis=1)
    p, t = probs[keep], targets[keep]
    if len(t) == 0:
        return float("nan")
    if metric == "top1":
        return topk_accuracy(p, t, 1)
    if metric == "balanced_acc":
        return balanced_accuracy(t, p.argmax(1), p.shape[1])
    if metric == "macro_f1":
        return macro_f1(t, p.argmax(1), p.shape[1])
    raise ValueError(f"select_metric must be one of top1, balanced_acc, macro_f1; got '{metric}'")


@torch.no_grad()
def predict_probs(model: nn.Module, loader: DataLoader[Any], n: int, device: torch.device) -> list[np.ndarray]:
    """Softmax probabilities per head, ``(n, C_t)`` each, in collection order (rows of bad images stay NaN)."""
    model.eval()
    out: list[np.ndarray] | None = None
    for batch in loader:
        if not batch.views:
            continue
        logits = model(batch.views[0].to(device))
        logits = logits if isinstance(logits, list) else [logits]
        if out is None:
            out = [np.full((n, z.shape[1]), np.nan, dtype=np.float32) for z in logits]
        idx = batch.indices.numpy()
        for o, z in zip(out, logits):
            o[idx] = z.float().softmax(-1).cpu().numpy()
    if out is None:
        raise RuntimeError("no readable image in the evaluation set")
    return out


def epoch_loader(
    coll: Collection, transform: Transform, data: DataCfg, seed: int, epoch: int, start: int
) -> DataLoader[Any]:
    """Training batches of ``epoch`` from sample ``start`` on, identical whether or not the run was interrupted.

    The order is the engine's :class:`~ssl_art.engine.sampler.ResumableSampler` permutation of ``(seed, epoch)`` and
    each image's augmentation is seeded from ``(seed, epoch, index)`` (:class:`~ssl_art.engine.sampler.SeededDataset`),
    so neither depends on worker scheduling or on what ran before. The last incomplete batch is dropped unless the
    collection is smaller than one batch.
    """
    dataset = ImageDataset(coll, transform, data.max_image_pixels, data.label_column)
    sampler = ResumableSampler(len(dataset), seed)
    sampler.set_epoch(epoch, start=start)
    workers = data.num_workers
    return DataLoader(
        SeededDataset(dataset, seed),
        batch_size=data.batch_size,
        sampler=sampler,
        drop_last=len(dataset) >= data.batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=data.pin_memory,
        generator=torch.Generator().manual_seed(seed * 1000 + epoch),  # the loader draws nothing from global RNG
    )


def train_classifier(
    model: Classifier,
    train: Collection,
    train_targets: np.ndarray,
    val: Collection,
    val_targets: np.ndarray,
    train_transform: Transform,
    eval_transform: Transform,
    cfg: FinetuneConfig,
    device: torch.device,
    amp: torch.dtype | None = None,
    writer: Any = None,
    tag: str = "ft",
    *,
    epochs: int,
    lr: float,
    layer_decay: float = 1.0,
    freeze_backbone_stats: bool = False,
    ckpt_dir: Path | None = None,
    metrics_path: Path | None = None,
) -> TrainResult:
    """Fine-tune ``model`` (its ``requires_grad`` flags already set) and load the best-on-val state into it.

    The recipe is the config's: ``optim.*`` (optimiser incl. lars, schedule, ``accum_steps``, clipping,
    ``max_steps``), ``ft.*`` (label smoothing, Mixup/CutMix on single-head runs, imbalance, ``task_weights`` when
    there is one per head, model selection and patience), ``data.*`` (loaders) and ``run.*`` (seed, time budget,
    ``max_nonfinite``, ``ckpt_every_steps``, ``keep_last``, ``log_every``, ``resume``). What differs per call is
    resolved by the caller and passed as keywords.

    Args:
        model: the classifier.
        train: training images; ``train_targets`` is its ``(N, T)`` target matrix (``-1`` missing).
        val: validation images and ``val_targets``.
        train_transform: augmentation for training views.
        eval_transform: deterministic transform for val.
        cfg: the fine-tuning config.
        device: where to train.
        amp: autocast dtype or ``None`` (``torch.float16`` turns the GradScaler on).
        writer: optional TensorBoard ``SummaryWriter``.
        tag: prefix of logged scalars and of the ``metrics.jsonl`` rows.
        epochs: epochs of this stage (``optim.epochs``, or ``gate.cheap_epochs`` for the cheap branch).
        lr: peak learning rate, already scaled by the batch size (and ``accum_steps``).
        layer_decay: layer-wise lr decay (1.0 = off).
        freeze_backbone_stats: keep the encoder's BatchNorm statistics (``ft.mode=linear``: a frozen encoder).
        ckpt_dir: this stage's checkpoint folder (``None``: no checkpoints, no resume).
        metrics_path: ``metrics.jsonl`` to append a row to every ``run.log_every`` steps.

    Returns:
        :class:`TrainResult`; ``model`` holds the selected weights on return.

    Raises:
        NonFiniteLossError: ``run.max_nonfinite`` non-finite losses or gradients in a row.
        ConfigError: on resume, the checkpoint does not match ``model``.
    """
    o, f, run, data_cfg = cfg.optim, cfg.ft, cfg.run, cfg.data
    n_heads = train_targets.shape[1]
    weights = list(f.task_weights) if len(f.task_weights) == n_heads else [1.0] * n_heads
    n_classes = model.n_classes
    class_w = (
        [inverse_frequency_weights(train_targets[:, t], c) for t, c in enumerate(n_classes)]
        if f.imbalance == "weighted_loss"
        else None
    )
    mixer = None
    if (f.mixup > 0 or f.cutmix > 0) and n_heads == 1:  # soft targets do not mask per head: single-head only
        mixer = Mixup(
            mixup_alpha=f.mixup, cutmix_alpha=f.cutmix, label_smoothing=f.label_smoothing, num_classes=n_classes[0]
        )
    soft_ce = SoftTargetCrossEntropy()

    model.to(device)
    groups = param_groups_lrd(model, model.timm_model, o.weight_decay, layer_decay)
    opt = optimizer_for_groups(groups, o.name, lr, o.momentum)
    scales = [g["lr_scale"] for g in opt.param_groups]
    params = [p for g in opt.param_groups for p in g["params"]]
    stepper = OptimStep(opt, params, device, amp, o.accum_steps, o.clip_grad, run.max_nonfinite, ckpt_dir)
    val_loader = build_loader(val, eval_transform, data_cfg, train=False, seed=run.seed, label_column=None)
    bs = data_cfg.batch_size
    batches_per_epoch = len(train) // bs if len(train) >= bs else 1
    steps_per_epoch = max(1, batches_per_epoch // o.accum_steps)
    total = o.max_steps or epochs * steps_per_epoch
    warmup = int(o.warmup_epochs * steps_per_epoch)
    n_epochs = epochs if not o.max_steps else 10**9
    y0 = train_targets[:, 0]

    # the whole resumable state of the stage; ``pos`` counts samples of the current epoch already consumed
    st: dict[str, Any] = {
        "step": 0, "epoch": 0, "pos": 0, "elapsed": 0.0, "losses": [], "history": [], "best": -math.inf,
        "best_epoch": -1, "best_state": copy.deepcopy(model.state_dict()), "bad_epochs": 0, "done": False,
    }  # fmt: skip
    if ckpt_dir is not None and run.resume:
        found = ckpt_io.find_resumable(ckpt_dir)
        if found is not None:
            saved = ckpt_io.load_checkpoint(found)
            ckpt_io.load_state_strict(model, saved["model"], f"run.resume: {found}")
            opt.load_state_dict(saved["optimizer"])
            stepper.load_state_dict(saved)
            st = saved["stage"]
            set_rng_state(saved["rng"])
            log.info("[%s] resumed from %s at step %d (epoch %d, sample %d)", tag, found, st["step"], st["epoch"],
                     st["pos"])  # fmt: skip
    t0, elapsed_before = time.time(), float(st["elapsed"])

    def save() -> None:
        if ckpt_dir is None:
            return
        st["elapsed"] = elapsed()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), **stepper.state_dict(), "stage": st,
                 "rng": rng_state(), "tag": tag}  # fmt: skip
        ckpt_io.save_rolling(ckpt_dir, st["step"], state, run.keep_last)

    def elapsed() -> float:
        return elapsed_before + time.time() - t0

    metrics_file = open(metrics_path, "a") if metrics_path is not None else None
    try:
        while not st["done"]:
            epoch = st["epoch"]
            if f.imbalance == "balanced_sampler":
                order = balanced_indices(y0, len(y0), run.seed * 1000 + epoch)
                coll, tgt = train.subset(order), train_targets[order]
            else:
                coll, tgt = train, train_targets
            model.train()
            if freeze_backbone_stats:
                model.encoder.eval()
            stop_now = False
            for b in epoch_loader(coll, train_transform, data_cfg, run.seed, epoch, st["pos"]):
                st["pos"] += len(b) + len(b.bad)
                if not b.views:
                    continue
                if stepper.micro == 0:
                    step_lr = cosine_schedule(st["step"], total, lr, o.min_lr, warmup)
                    for g, sc in zip(opt.param_groups, scales):
                        g["lr"] = step_lr * sc
                x = b.views[0].to(device)
                y = torch.as_tensor(tgt[b.indices.numpy()], device=device)
                with stepper.autocast():
                    if mixer is not None:
                        keep = y[:, 0] >= 0
                        x, y1 = x[keep], y[keep, 0]
                        if len(x) % 2:  # timm Mixup flips the batch and needs an even size
                            x, y1 = x[:-1], y1[:-1]
                        if len(x) == 0:
                            continue
                        x, soft = mixer(x, y1)
                        loss = soft_ce(model(x)[0].float(), soft)
                    else:
                        loss, _ = masked_multitask_loss(
                            [z.float() for z in model(x)], y, weights, f.label_smoothing, class_w
                        )
                result = stepper.backward(loss, st["step"])
                if result.status != "skipped":
                    st["losses"].append(float(loss.detach()))
                if not result.stepped:
                    continue
                st["step"] += 1
                step = st["step"]
                if step % run.log_every == 0 or step == total:
                    row = {"tag": tag, "step": step, "epoch": epoch, "loss": float(loss.detach()),
                           "lr": opt.param_groups[0]["lr"] / scales[0], "grad_norm": result.grad_norm}  # fmt: skip
                    if metrics_file is not None:
                        metrics_file.write(json.dumps(row) + "\n")
                        metrics_file.flush()
                    if writer is not None:
                        writer.add_scalar(f"{tag}/loss", row["loss"], step)
                        writer.add_scalar(f"{tag}/lr", row["lr"], step)
                if checkpoint_due(step, run.ckpt_every_steps):
                    save()
                stop_now = step >= total or bool(run.time_budget_s and elapsed() > run.time_budget_s)
                if stop_now:
                    break
            stepper.reset()  # a partial accumulation never crosses an epoch boundary
            _end_epoch(st, model, val_loader, val, val_targets, f.select_metric, device, tag, writer)
            if f.patience and st["bad_epochs"] >= f.patience:
                log.info("[%s] early stop: %d epochs without val improvement", tag, st["bad_epochs"])
                stop_now = True
            st["done"] = stop_now or st["epoch"] >= n_epochs
            save()
    finally:
        if metrics_file is not None:
            metrics_file.close()
    model.load_state_dict(st["best_state"])
    return TrainResult(best_epoch=st["best_epoch"], best_score=st["best"], history=st["history"])


def _end_epoch(
    st: dict[str, Any],
    model: nn.Module,
    val_loader: DataLoader[Any],
    val: Collection,
    val_targets: np.ndarray,
    metric: str,
    device: torch.device,
    tag: str,
    writer: Any,
) -> None:
    """Score val, keep the best state, append the history row and move ``st`` to the next epoch."""
    probs = predict_probs(model, val_loader, len(val), device)
    val_score = score(probs[0], val_targets[:, 0], metric)
    losses = st["losses"]
    row = {
        "epoch": float(st["epoch"]),
        "step": float(st["step"]),
        "train_loss": float(np.mean(losses) if losses else np.nan),
    }
    row[f"val_{metric}"] = val_score
    st["history"].append(row)
    log.info("[%s] epoch %d step %d loss %.4f val %s %.4f", tag, st["epoch"], st["step"], row["train_loss"], metric,
             val_score)  # fmt: skip
    if writer is not None:
        writer.add_scalar(f"{tag}/train_loss", row["train_loss"], st["step"])
        writer.add_scalar(f"{tag}/val_{metric}", val_score, st["step"])
    if val_score > st["best"]:
        st["best"], st["best_epoch"], st["bad_epochs"] = val_score, st["epoch"], 0
        st["best_state"] = copy.deepcopy(model.state_dict())
    else:
        st["bad_epochs"] += 1
    st["epoch"], st["pos"], st["losses"] = st["epoch"] + 1, 0, []
