"""Supervised fine-tuning loop with model selection on val only.

Per step: lr from :func:`~ssl_art.runtime.schedules.cosine_schedule` times each group's ``lr_scale`` (layer-wise
decay), optional timm Mixup/CutMix (soft targets), masked multi-task cross-entropy with label smoothing and optional
class weights, gradient clipping. After every epoch the model is scored on val (the first head's
``select_metric``); the best state is kept and training stops after ``patience`` epochs without improvement. Test
data never enters this module: the caller evaluates the selected model once, at the end. Targets come from an
``(N, T)`` matrix indexed by ``batch.indices``, so any number of label columns rides on one loader.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from timm.data.mixup import Mixup
from timm.loss.cross_entropy import SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader

from ssl_art.config import FinetuneConfig, OptimCfg
from ssl_art.data import Collection, build_loader
from ssl_art.data.transforms import Transform
from ssl_art.eval.metrics import balanced_accuracy, macro_f1, topk_accuracy
from ssl_art.finetune.labels import balanced_indices, inverse_frequency_weights, masked_multitask_loss
from ssl_art.finetune.lr_decay import param_groups_lrd
from ssl_art.finetune.model import Classifier
from ssl_art.runtime.device import autocast
from ssl_art.runtime.schedules import cosine_schedule

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Selected model (loaded into the module) and the per-epoch history."""

    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)


def score(probs: np.ndarray, targets: np.ndarray, metric: str) -> float:
    """Selection score of ``(N, C)`` probabilities on ``(N,)`` targets (missing ``-1`` rows ignored)."""
    keep = targets >= 0
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


def _optimizer(groups: list[dict[str, Any]], o: OptimCfg, lr: float) -> torch.optim.Optimizer:
    for g in groups:
        g.pop("names", None)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum)
    if o.name != "adamw":
        raise ValueError(f"fine-tuning supports optim.name adamw or sgd, got '{o.name}'")
    return torch.optim.AdamW(groups, lr=lr)


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
) -> TrainResult:
    """Fine-tune ``model`` (its ``requires_grad`` flags already set) and load the best-on-val state into it.

    The recipe is the config's: ``optim.*`` (optimiser, schedule, clipping, ``max_steps``), ``ft.*`` (label
    smoothing, Mixup/CutMix on single-head runs, imbalance, ``task_weights`` when there is one per head, model
    selection and patience), ``data.*`` (loaders) and ``run.seed``/``run.time_budget_s``. What differs per call
    is resolved by the caller and passed as keywords.

    Args:
        model: the classifier.
        train: training images; ``train_targets`` is its ``(N, T)`` target matrix (``-1`` missing).
        val: validation images and ``val_targets``.
        train_transform: augmentation for training views.
        eval_transform: deterministic transform for val.
        cfg: the fine-tuning config.
        device: where to train.
        amp: autocast dtype or ``None``.
        writer: optional TensorBoard ``SummaryWriter``.
        tag: prefix of logged scalars.
        epochs: epochs of this stage (``optim.epochs``, or ``gate.cheap_epochs`` for the cheap branch).
        lr: peak learning rate, already scaled by the batch size.
        layer_decay: layer-wise lr decay (1.0 = off).
        freeze_backbone_stats: keep the encoder's BatchNorm statistics (``ft.mode=linear``: a frozen encoder).

    Returns:
        :class:`TrainResult`; ``model`` holds the selected weights on return.
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
    scales = [g["lr_scale"] for g in groups]
    opt = _optimizer(groups, o, lr)
    params = [p for g in opt.param_groups for p in g["params"]]
    val_loader = build_loader(val, eval_transform, data_cfg, train=False, seed=run.seed, label_column=None)
    batch = data_cfg.batch_size
    steps_per_epoch = max(1, len(train) // batch if len(train) >= batch else 1)
    total = o.max_steps or epochs * steps_per_epoch
    warmup = int(o.warmup_epochs * steps_per_epoch)
    best, best_epoch, best_state, bad_epochs = -math.inf, -1, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    step, t0 = 0, time.time()
    y0 = train_targets[:, 0]
    for epoch in range(epochs if not o.max_steps else 10**9):
        if f.imbalance == "balanced_sampler":
            order = balanced_indices(y0, len(y0), run.seed * 1000 + epoch)
            coll, tgt = train.subset(order), train_targets[order]
        else:
            coll, tgt = train, train_targets
        loader = build_loader(
            coll, train_transform, data_cfg, train=True, seed=run.seed * 1000 + epoch, label_column=None
        )
        model.train()
        if freeze_backbone_stats:
            model.encoder.eval()
        losses = []
        for b in loader:
            if not b.views or step >= total:
                continue
            step_lr = cosine_schedule(step, total, lr, o.min_lr, warmup)
            for g, sc in zip(opt.param_groups, scales):
                g["lr"] = step_lr * sc
            x = b.views[0].to(device)
            y = torch.as_tensor(tgt[b.indices.numpy()], device=device)
            with autocast(device, amp):
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
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite fine-tuning loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, o.clip_grad)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        probs = predict_probs(model, val_loader, len(val), device)
        val_score = score(probs[0], val_targets[:, 0], f.select_metric)
        row = {"epoch": float(epoch), "step": float(step), "train_loss": float(np.mean(losses) if losses else np.nan)}
        row[f"val_{f.select_metric}"] = val_score
        history.append(row)
        log.info(
            "[%s] epoch %d step %d loss %.4f val %s %.4f",
            tag,
            epoch,
            step,
            row["train_loss"],
            f.select_metric,
            val_score,
        )
        if writer is not None:
            writer.add_scalar(f"{tag}/train_loss", row["train_loss"], step)
            writer.add_scalar(f"{tag}/val_{f.select_metric}", val_score, step)
        if val_score > best:
            best, best_epoch, bad_epochs = val_score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if f.patience and bad_epochs >= f.patience:
            log.info("[%s] early stop: %d epochs without val improvement", tag, bad_epochs)
            break
        if step >= total or (run.time_budget_s and time.time() - t0 > run.time_budget_s):
            break
    model.load_state_dict(best_state)
    return TrainResult(best_epoch=best_epoch, best_score=best, history=history)
