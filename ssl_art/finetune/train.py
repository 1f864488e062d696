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

from ssl_art.config import DataCfg
from ssl_art.data import Collection, build_loader
from ssl_art.data.transforms import Transform
from ssl_art.eval.metrics import balanced_accuracy, macro_f1, topk_accuracy
from ssl_art.finetune.labels import balanced_indices, inverse_frequency_weights, masked_multitask_loss
from ssl_art.finetune.lr_decay import param_groups_lrd
from ssl_art.finetune.model import Classifier
from ssl_art.runtime.device import autocast
from ssl_art.runtime.schedules import cosine_schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Everything the loop needs, already resolved (lr scaled, mode applied by the caller)."""

    epochs: int
    lr: float
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    clip_grad: float = 3.0
    layer_decay: float = 1.0
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    imbalance: str = "none"
    task_weights: tuple[float, ...] = ()
    select_metric: str = "top1"
    patience: int = 0
    max_steps: int = 0
    seed: int = 0
    freeze_backbone_stats: bool = False  # linear mode: keep BatchNorm statistics of the frozen encoder
    time_budget_s: float = 0.0


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


def _optimizer(groups: list[dict[str, Any]], s: TrainSettings) -> torch.optim.Optimizer:
    for g in groups:
        g.pop("names", None)
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)
    if s.optimizer != "adamw":
        raise ValueError(f"fine-tuning supports optim.name adamw or sgd, got '{s.optimizer}'")
    return torch.optim.AdamW(groups, lr=s.lr)


def train_classifier(
    model: Classifier,
    train: Collection,
    train_targets: np.ndarray,
    val: Collection,
    val_targets: np.ndarray,
    train_transform: Transform,
    eval_transform: Transform,
    data_cfg: DataCfg,
    settings: TrainSettings,
    device: torch.device,
    amp: torch.dtype | None = None,
    writer: Any = None,
    tag: str = "ft",
) -> TrainResult:
    """Fine-tune ``model`` (its ``requires_grad`` flags already set) and load the best-on-val state into it.

    Args:
        model: the classifier.
        train: training images; ``train_targets`` is its ``(N, T)`` target matrix (``-1`` missing).
        val: validation images and ``val_targets``.
        train_transform: augmentation for training views.
        eval_transform: deterministic transform for val.
        data_cfg: batch size and loader settings.
        settings: recipe.
        device: where to train.
        amp: autocast dtype or ``None``.
        writer: optional TensorBoard ``SummaryWriter``.
        tag: prefix of logged scalars.

    Returns:
        :class:`TrainResult`; ``model`` holds the selected weights on return.
    """
    s = settings
    n_heads = train_targets.shape[1]
    weights = list(s.task_weights) or [1.0] * n_heads
    if len(weights) != n_heads:
        raise ValueError(f"ft.task_weights has {len(weights)} entries for {n_heads} heads")
    n_classes = model.n_classes
    class_w = (
        [inverse_frequency_weights(train_targets[:, t], c) for t, c in enumerate(n_classes)]
        if s.imbalance == "weighted_loss"
        else None
    )
    mixer = None
    if s.mixup > 0 or s.cutmix > 0:
        if n_heads != 1:
            raise ValueError("mixup/cutmix need a single label column (soft targets do not mask per head)")
        mixer = Mixup(
            mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, label_smoothing=s.label_smoothing, num_classes=n_classes[0]
        )
    soft_ce = SoftTargetCrossEntropy()

    model.to(device)
    groups = param_groups_lrd(model, model.timm_model, s.weight_decay, s.layer_decay)
    scales = [g["lr_scale"] for g in groups]
    opt = _optimizer(groups, s)
    params = [p for g in opt.param_groups for p in g["params"]]
    val_loader = build_loader(val, eval_transform, data_cfg, train=False, seed=s.seed, label_column=None)
    batch = data_cfg.batch_size
    steps_per_epoch = max(1, len(train) // batch if len(train) >= batch else 1)
    total = s.max_steps or s.epochs * steps_per_epoch
    warmup = int(s.warmup_epochs * steps_per_epoch)
    best, best_epoch, best_state, bad_epochs = -math.inf, -1, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    step, t0 = 0, time.time()
    y0 = train_targets[:, 0]
    for epoch in range(s.epochs if not s.max_steps else 10**9):
        if s.imbalance == "balanced_sampler":
            order = balanced_indices(y0, len(y0), s.seed * 1000 + epoch)
            coll, tgt = train.subset(order), train_targets[order]
        else:
            coll, tgt = train, train_targets
        loader = build_loader(
            coll, train_transform, data_cfg, train=True, seed=s.seed * 1000 + epoch, label_column=None
        )
        model.train()
        if s.freeze_backbone_stats:
            model.encoder.eval()
        losses = []
        for b in loader:
            if not b.views or step >= total:
                continue
            lr = cosine_schedule(step, total, s.lr, s.min_lr, warmup)
            for g, sc in zip(opt.param_groups, scales):
                g["lr"] = lr * sc
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
                        [z.float() for z in model(x)], y, weights, s.label_smoothing, class_w
                    )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite fine-tuning loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if s.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, s.clip_grad)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        probs = predict_probs(model, val_loader, len(val), device)
        val_score = score(probs[0], val_targets[:, 0], s.select_metric)
        row = {"epoch": float(epoch), "step": float(step), "train_loss": float(np.mean(losses) if losses else np.nan)}
        row[f"val_{s.select_metric}"] = val_score
        history.append(row)
        log.info(
            "[%s] epoch %d step %d loss %.4f val %s %.4f",
            tag,
            epoch,
            step,
            row["train_loss"],
            s.select_metric,
            val_score,
        )
        if writer is not None:
            writer.add_scalar(f"{tag}/train_loss", row["train_loss"], step)
            writer.add_scalar(f"{tag}/val_{s.select_metric}", val_score, step)
        if val_score > best:
            best, best_epoch, bad_epochs = val_score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if s.patience and bad_epochs >= s.patience:
            log.info("[%s] early stop: %d epochs without val improvement", tag, bad_epochs)
            break
        if step >= total or (s.time_budget_s and time.time() - t0 > s.time_budget_s):
            break
    model.load_state_dict(best_state)
    return TrainResult(best_epoch=best_epoch, best_score=best, history=history)
