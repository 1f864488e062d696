"""Training the gate of a :class:`~ssl_art.models.gated.GatedTwoBranch`: stages 1 and 2, and budget calibration.

Stage 0 (fine-tuning the two branches) is ordinary fine-tuning (:mod:`ssl_art.finetune.train`). Stage 1 freezes both
branches, so their outputs on the training images are computed once (:func:`cache_outputs`) and the selector and
fusion MLPs train on the cache in seconds: cross-entropy of the fused logits, REINFORCE on the sampled routing with
reward ``1[correct] - cost * a`` and a moving-average baseline, and the budget penalty. :func:`calibrate` then makes
the trained gate respect the compute budget *on val*: if more than ``budget`` of the val images would be routed, it
lowers the confidence threshold (and, if that is not enough, raises the selector's decision bias) to the largest
setting within budget. Stage 2 optionally fine-tunes everything end to end with sampled routing on real images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ssl_art.finetune.policy import MovingAverageBaseline, budget_penalty, reinforce_loss, routing_reward
from ssl_art.models.gated import GatedTwoBranch, confidence

log = logging.getLogger(__name__)


@dataclass
class BranchCache:
    """Frozen-branch outputs for a set of images: ``cf (N, D_c)``, ``cl (N, K)``, ``ef (N, D_e)``, ``el (N, K)``,
    and targets ``y (N,)`` (``-1`` missing)."""

    cf: Tensor
    cl: Tensor
    ef: Tensor
    el: Tensor
    y: Tensor


@dataclass(frozen=True)
class GateSettings:
    """Stage 1/2 hyper-parameters (see :class:`~ssl_art.config.GateCfg`)."""

    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 128
    budget: float = 0.4
    cost: float = 0.2
    budget_weight: float = 1.0
    pg_weight: float = 1.0
    baseline_momentum: float = 0.9
    seed: int = 0


@torch.no_grad()
def cache_outputs(
    gated: GatedTwoBranch, loader: DataLoader[Any], targets: np.ndarray, device: torch.device
) -> BranchCache:
    """Run both branches (eval mode) over every image of ``loader``; ``targets`` is indexed by ``batch.indices``."""
    gated.eval()
    parts: dict[str, list[Tensor]] = {k: [] for k in ("cf", "cl", "ef", "el", "y")}
    for b in loader:
        if not b.views:
            continue
        x = b.views[0].to(device)
        cf, cl = gated.cheap(x)
        ef, el = gated.expensive(x)
        for k, v in zip(("cf", "cl", "ef", "el"), (cf, cl, ef, el)):
            parts[k].append(v.float().cpu())
        parts["y"].append(torch.as_tensor(targets[b.indices.numpy()], dtype=torch.int64))
    return BranchCache(**{k: torch.cat(v) for k, v in parts.items()})


def gate_step_loss(
    gated: GatedTwoBranch, c: BranchCache, baseline: MovingAverageBaseline, s: GateSettings
) -> tuple[Tensor, dict[str, float]]:
    """Stage-1 loss on (a minibatch of) cached outputs: fused CE + REINFORCE + budget penalty."""
    fused, _ = gated.fuse(c.cf, c.cl, c.ef, c.el)
    ce = F.cross_entropy(fused, c.y)
    logit = gated.hard_logit(c.cf, c.cl)
    action = torch.bernoulli(torch.sigmoid(logit.detach()))
    pred = torch.where(action.bool()[:, None], fused.detach(), c.cl.float()).argmax(1)
    reward = routing_reward(pred == c.y, action, s.cost)
    b = baseline.update(reward)
    pg = reinforce_loss(logit, action, reward, b)
    budget = budget_penalty(logit, s.budget)
    loss = ce + s.pg_weight * pg + s.budget_weight * budget
    return loss, {
        "ce": float(ce.detach()),
        "pg": float(pg.detach()),
        "budget": float(budget.detach()),
        "reward": float(reward.mean()),
        "p_hard": float(torch.sigmoid(logit.detach()).mean()),
    }


def train_stage1(gated: GatedTwoBranch, cache: BranchCache, s: GateSettings) -> list[dict[str, float]]:
    """Train selector + fusion on cached outputs (branches untouched); returns per-epoch mean metrics."""
    keep = cache.y >= 0
    c = BranchCache(cache.cf[keep], cache.cl[keep], cache.ef[keep], cache.el[keep], cache.y[keep])
    params = list(gated.selector.parameters()) + list(gated.fusion.parameters())
    device = params[0].device
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-4)
    baseline = MovingAverageBaseline(s.baseline_momentum)
    g = torch.Generator().manual_seed(s.seed)
    gated.selector.train()
    gated.fusion.train()
    history = []
    for epoch in range(s.epochs):
        order = torch.randperm(len(c.y), generator=g)
        rows: list[dict[str, float]] = []
        for i in range(0, len(order), s.batch_size):
            j = order[i : i + s.batch_size]
            mb = BranchCache(*(t[j].to(device) for t in (c.cf, c.cl, c.ef, c.el, c.y)))
            loss, m = gate_step_loss(gated, mb, baseline, s)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append(m)
        history.append({k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"epoch": float(epoch)})
    log.info("[gate stage 1] last epoch: %s", history[-1] if history else {})
    return history


@torch.no_grad()
def simulate(gated: GatedTwoBranch, c: BranchCache) -> tuple[Tensor, Tensor]:
    """Inference-mode routing on cached outputs: ``(logits (N, K), routed (N,))``, identical to ``gated(x)``."""
    gated.eval()
    logit = gated.hard_logit(c.cf, c.cl)
    routed, _ = gated.route(logit, c.cl, sample=False)
    fused, _ = gated.fuse(c.cf, c.cl, c.ef, c.el)
    return torch.where(routed[:, None], fused, c.cl.float()), routed


@torch.no_grad()
def calibrate(gated: GatedTwoBranch, val: BranchCache, budget: float) -> dict[str, float]:
    """Lower ``threshold`` / raise ``decision_bias`` until at most ``budget`` of val is routed; returns the result.

    Keeps the configured values when they already respect the budget. The routed set is monotone in both knobs,
    so the largest threshold within budget is found by scanning the sorted val confidences.
    """
    logit = gated.hard_logit(val.cf, val.cl)
    conf = confidence(val.cl)
    n = len(conf)
    limit = int(np.floor(budget * n + 1e-9))

    def n_routed(th: float, bias: float) -> int:
        return int(((logit > bias) | (conf < th)).sum())

    th, bias = float(gated.threshold), float(gated.decision_bias)
    if n_routed(th, bias) > limit:
        candidates = sorted({float(v) for v in conf if float(v) <= th} | {0.0}, reverse=True)
        th = next((v for v in candidates if n_routed(v, bias) <= limit), 0.0)
        if n_routed(th, bias) > limit:
            # even with the fall-back off, the selector routes too many: keep its `limit` most confident "hard" calls
            ordered = torch.sort(logit, descending=True).values
            bias = float(ordered[limit]) if limit < n else float(ordered[-1]) - 1.0
    gated.threshold.fill_(th)
    gated.decision_bias.fill_(bias)
    logits, routed = simulate(gated, val)
    keep = val.y >= 0
    acc = float((logits.argmax(1)[keep] == val.y[keep]).float().mean()) if keep.any() else float("nan")
    return {
        "threshold": th,
        "decision_bias": bias,
        "val_expensive_fraction": float(routed.float().mean()),
        "val_top1": acc,
    }


def train_stage2(
    gated: GatedTwoBranch,
    loader: DataLoader[Any],
    targets: np.ndarray,
    s: GateSettings,
    lr: float,
    device: torch.device,
    epochs: int,
) -> list[dict[str, float]]:
    """End-to-end fine-tune with sampled routing on real images: only sampled-hard rows run the expensive branch.

    Loss: CE of the routed output + CE of the cheap logits (keeps the cheap branch a classifier) + REINFORCE +
    budget penalty. Branch BatchNorm statistics stay frozen (eval mode): the batch reaching the expensive branch
    is a small, biased subset.
    """
    params = [p for p in gated.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    baseline = MovingAverageBaseline(s.baseline_momentum)
    history = []
    for epoch in range(epochs):
        gated.eval()
        gated.selector.train()
        gated.fusion.train()
        rows = []
        for b in loader:
            if not b.views:
                continue
            x = b.views[0].to(device)
            y = torch.as_tensor(targets[b.indices.numpy()], device=device)
            keep = y >= 0
            x, y = x[keep], y[keep]
            if len(y) == 0:
                continue
            out = gated(x, sample=True)
            ce = F.cross_entropy(out.logits, y)
            ce_cheap = F.cross_entropy(out.cheap_logits.float(), y)
            action = out.action.float()
            reward = routing_reward(out.logits.detach().argmax(1) == y, action, s.cost)
            pg = reinforce_loss(out.hard_logit, action, reward, baseline.update(reward))
            loss = ce + ce_cheap + s.pg_weight * pg + s.budget_weight * budget_penalty(out.hard_logit, s.budget)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append({"ce": float(ce.detach()), "routed": float(out.routed.float().mean())})
        if rows:
            history.append({k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"epoch": float(epoch)})
    return history
