"""Training the gate of a :class:`~ssl_art.models.gated.GatedTwoBranch`: stages 1 and 2, and budget calibration.

Stage 0 (fine-tuning the expensive network, then the cheap exit head on its frozen shared trunk) is ordinary
fine-tuning (:mod:`ssl_art.finetune.train`). Stage 1 freezes both branches, so their outputs on the training images
are computed once (:func:`cache_outputs`) and the selector and fusion MLPs train on the cache in seconds:
cross-entropy of the fused logits, REINFORCE on the sampled routing with reward ``1[correct] - cost * a`` and a
moving-average baseline, a supervised BCE of the selector on "the cheap branch is wrong", and the budget penalty.
:func:`calibrate` then makes the trained gate respect the compute budget *on val*: it picks, by val top-1, among
routing rules that each route at most ``budget`` of val (the selector's ranking, the cheap confidence ranking, the
configured setting) and between the learned fusion and expensive logits alone.
Stage 2 optionally fine-tunes everything end to end with sampled routing on real images.
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

from ssl_art.config import GateCfg
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
        h, cf, cl = gated.cheap(x)
        ef, el = gated.rest(h)  # the expensive branch continues from the trunk's map
        for k, v in zip(("cf", "cl", "ef", "el"), (cf, cl, ef, el)):
            parts[k].append(v.float().cpu())
        parts["y"].append(torch.as_tensor(targets[b.indices.numpy()], dtype=torch.int64))
    return BranchCache(**{k: torch.cat(v) for k, v in parts.items()})


def gate_step_loss(
    gated: GatedTwoBranch, c: BranchCache, baseline: MovingAverageBaseline, g: GateCfg
) -> tuple[Tensor, dict[str, float]]:
    """Stage-1 loss on (a minibatch of) cached outputs.

    ``CE(fused) + selector_weight * BCE(P(hard), 1[cheap wrong]) + pg_weight * REINFORCE + budget_weight * budget``.
    The supervised term teaches the selector to rank images by how likely the cheap branch is to be wrong (a
    dense signal); REINFORCE then trades the accuracy actually gained against ``cost`` per expensive call.
    """
    fused, _ = gated.fuse(c.cf, c.cl, c.ef, c.el)
    ce = F.cross_entropy(fused, c.y)
    logit = gated.hard_logit(c.cf, c.cl)
    cheap_wrong = (c.cl.argmax(1) != c.y).float()
    sel = F.binary_cross_entropy_with_logits(logit, cheap_wrong)
    action = torch.bernoulli(torch.sigmoid(logit.detach()))
    pred = torch.where(action.bool()[:, None], fused.detach(), c.cl.float()).argmax(1)
    reward = routing_reward(pred == c.y, action, g.cost)
    b = baseline.update(reward)
    pg = reinforce_loss(logit, action, reward, b)
    budget = budget_penalty(logit, g.budget)
    loss = ce + g.selector_weight * sel + g.pg_weight * pg + g.budget_weight * budget
    return loss, {
        "ce": float(ce.detach()),
        "selector_bce": float(sel.detach()),
        "pg": float(pg.detach()),
        "budget": float(budget.detach()),
        "reward": float(reward.mean()),
        "p_hard": float(torch.sigmoid(logit.detach()).mean()),
    }


def train_stage1(gated: GatedTwoBranch, cache: BranchCache, g: GateCfg, seed: int = 0) -> list[dict[str, float]]:
    """Train selector + fusion on cached outputs (branches untouched); returns per-epoch mean metrics.

    ``gate.stage1_epochs`` epochs of ``gate.stage1_batch_size`` minibatches at ``gate.stage1_lr``; ``seed`` (the run
    seed) fixes the minibatch order.
    """
    keep = cache.y >= 0
    c = BranchCache(cache.cf[keep], cache.cl[keep], cache.ef[keep], cache.el[keep], cache.y[keep])
    params = list(gated.selector.parameters()) + list(gated.fusion.parameters())
    device = params[0].device
    opt = torch.optim.AdamW(params, lr=g.stage1_lr, weight_decay=1e-4)
    baseline = MovingAverageBaseline(g.baseline_momentum)
    gen = torch.Generator().manual_seed(seed)
    gated.selector.train()
    gated.fusion.train()
    history = []
    for epoch in range(g.stage1_epochs):
        order = torch.randperm(len(c.y), generator=gen)
        rows: list[dict[str, float]] = []
        for i in range(0, len(order), g.stage1_batch_size):
            j = order[i : i + g.stage1_batch_size]
            mb = BranchCache(*(t[j].to(device) for t in (c.cf, c.cl, c.ef, c.el, c.y)))
            loss, m = gate_step_loss(gated, mb, baseline, g)
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


NEVER = 1e9  # a decision bias no selector logit exceeds: the selector is switched off


@torch.no_grad()
def calibrate(gated: GatedTwoBranch, val: BranchCache, budget: float) -> dict[str, Any]:
    """Choose the routing rule and fusion on val so that at most ``budget`` of val is routed; returns the result.

    Candidate rules, each routing at most ``floor(budget * n)`` val images:

    - ``configured``: the current ``threshold`` / ``decision_bias``, if already within budget;
    - ``selector``: the images with the highest selector logits (``decision_bias`` at that rank, fall-back off);
    - ``confidence``: the images the cheap branch is least sure of (``threshold`` at that rank, selector off).

    Each is tried with the learned fusion and with the expensive logits alone on routed rows (``fusion_on``); the
    best val top-1 wins (ties: fewer routed, then the order above). Only val is used, never test.
    """
    keep = val.y >= 0
    logit = gated.hard_logit(val.cf, val.cl)
    conf = confidence(val.cl)
    n = len(conf)
    limit = int(np.floor(budget * n + 1e-9))

    def n_routed(th: float, bias: float) -> int:
        return int(((logit > bias) | (conf < th)).sum())

    rules: list[tuple[str, float, float]] = []
    th0, b0 = float(gated.threshold), float(gated.decision_bias)
    if n_routed(th0, b0) <= limit:
        rules.append(("configured", th0, b0))
    by_logit = torch.sort(logit, descending=True).values
    rules.append(("selector", 0.0, float(by_logit[limit]) if limit < n else float(by_logit[-1]) - 1.0))
    by_conf = torch.sort(conf).values
    rules.append(("confidence", float(by_conf[limit]) if limit < n else 1.01, NEVER))

    def val_top1() -> float:
        logits, _ = simulate(gated, val)
        return float((logits.argmax(1)[keep] == val.y[keep]).float().mean()) if keep.any() else float("nan")

    result: dict[str, float] = {}
    best: tuple[float, int, int] | None = None
    chosen = rules[0][1:] + (1.0,)
    for order, (name, th, bias) in enumerate(rules):
        for fusion_on in (1.0, 0.0):
            gated.threshold.fill_(th)
            gated.decision_bias.fill_(bias)
            gated.fusion_on.fill_(fusion_on)
            acc, k = val_top1(), n_routed(th, bias)
            result[f"val_top1/{name}/{'fused' if fusion_on else 'expensive'}"] = acc
            key = (acc, -k, -order)
            if best is None or key > best:
                best, chosen = key, (th, bias, fusion_on)
                result["rule"] = float(order)
    th, bias, fusion_on = chosen
    gated.threshold.fill_(th)
    gated.decision_bias.fill_(bias)
    gated.fusion_on.fill_(fusion_on)
    logits, routed = simulate(gated, val)
    top1 = float((logits.argmax(1)[keep] == val.y[keep]).float().mean()) if keep.any() else float("nan")
    exp_top1 = float((val.el.argmax(1)[keep] == val.y[keep]).float().mean()) if keep.any() else float("nan")
    cheap_top1 = float((val.cl.argmax(1)[keep] == val.y[keep]).float().mean()) if keep.any() else float("nan")
    out: dict[str, Any] = dict(result)
    return out | {
        "rule_name": rules[int(result["rule"])][0],
        "threshold": th,
        "decision_bias": bias,
        "fusion_on": fusion_on,
        "val_expensive_fraction": float(routed.float().mean()),
        "val_top1": top1,
        "val_top1_expensive_only": exp_top1,
        "val_top1_cheap_only": cheap_top1,
    }


def train_stage2(
    gated: GatedTwoBranch,
    loader: DataLoader[Any],
    targets: np.ndarray,
    g: GateCfg,
    lr: float,
    device: torch.device,
) -> list[dict[str, float]]:
    """End-to-end fine-tune with sampled routing on real images: only sampled-hard rows run the expensive branch.

    Loss: CE of the routed output + CE of the cheap logits (keeps the cheap branch a classifier) + REINFORCE +
    budget penalty, for ``gate.stage2_epochs`` epochs at ``lr``. Branch BatchNorm statistics stay frozen (eval
    mode): the batch reaching the expensive branch is a small, biased subset.
    """
    params = [p for p in gated.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    baseline = MovingAverageBaseline(g.baseline_momentum)
    history = []
    for epoch in range(g.stage2_epochs):
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
            reward = routing_reward(out.logits.detach().argmax(1) == y, action, g.cost)
            pg = reinforce_loss(out.hard_logit, action, reward, baseline.update(reward))
            loss = ce + ce_cheap + g.pg_weight * pg + g.budget_weight * budget_penalty(out.hard_logit, g.budget)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append({"ce": float(ce.detach()), "routed": float(out.routed.float().mean())})
        if rows:
            history.append({k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"epoch": float(epoch)})
    return history
