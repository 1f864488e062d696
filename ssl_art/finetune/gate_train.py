"""Training the gate of a :class:`~ssl_art.models.gated.GatedTwoBranch`: stages 1 and 2, and budget calibration.

Stage 0 (fine-tuning the expensive network, then the cheap exit head on its frozen shared trunk) is ordinary
fine-tuning (:mod:`ssl_art.finetune.train`). Stage 1 freezes both branches, so their outputs on the training images
are computed once (:func:`cache_outputs`) and the selector and fusion MLPs train on the cache in seconds:
cross-entropy of the fused logits, REINFORCE on the sampled routing with a moving-average baseline, a supervised BCE
of the selector on "the cheap branch is wrong" (weight ``gate.selector_weight``), and the budget penalty. The policy
is trained for the routing that is deployed (SHMNet's, :class:`~ssl_art.models.gated.GatedTwoBranch`): its reward
``1[correct] - cost * 1[expensive ran]`` scores the output each image really gets (fused if hard, expensive alone if
it falls back, cheap otherwise) and charges every image that reaches the expensive branch, fall-backs included, and
the budget term counts them too; :func:`fit_gate` trains it under the fall-back threshold the calibration rule
deploys. :func:`calibrate` then fits the routing to the compute budget *on val* with the rule ``gate.calibration``
names (``shmnet`` keeps the fall-back at ``gate.fallback_threshold`` and sets the selector's decision bias). Stage 2
optionally fine-tunes everything end to end with sampled routing on real images.
"""

from __future__ import annotations

import copy
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
    dense signal); REINFORCE then trades the accuracy actually gained against ``cost`` per image that reaches the
    expensive branch, under the deployed routing (fall-backs included).
    """
    fused, _ = gated.fuse(c.cf, c.cl, c.ef, c.el)
    ce = F.cross_entropy(fused, c.y)
    logit = gated.hard_logit(c.cf, c.cl)
    cheap_wrong = (c.cl.argmax(1) != c.y).float()
    sel = F.binary_cross_entropy_with_logits(logit, cheap_wrong)
    action, fallback = gated.route(logit, c.cl, sample=True)
    pred = gated.combine(action, fallback, c.cl, fused.detach(), c.el).argmax(1)
    expensive = action | fallback
    reward = routing_reward(pred == c.y, expensive, g.cost)
    b = baseline.update(reward)
    pg = reinforce_loss(logit, action, reward, b)
    budget = budget_penalty(logit, g.budget, confidence(c.cl) < gated.threshold)
    loss = ce + g.selector_weight * sel + g.pg_weight * pg + g.budget_weight * budget
    return loss, {
        "ce": float(ce.detach()),
        "selector_bce": float(sel.detach()),
        "pg": float(pg.detach()),
        "budget": float(budget.detach()),
        "reward": float(reward.mean()),
        "p_hard": float(torch.sigmoid(logit.detach()).mean()),
        "routed": float(expensive.float().mean()),
        "fallback": float(fallback.float().mean()),
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
    opt = torch.optim.AdamW(params, lr=g.stage1_lr, weight_decay=g.stage1_weight_decay)
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


def _rank(top1: float, routed: float, order: int) -> tuple[float, float, int]:
    """Sort key of a candidate routing on val: higher top-1 (NaN lowest), then fewer routed, then the earlier."""
    return (top1 if top1 == top1 else -1.0, -routed, -order)


def fallback_text(threshold: float) -> str:
    """How a table names the fall-back rule at ``threshold`` (0: off, no image falls back)."""
    return "fall-back off" if threshold <= 0 else f"fall-back < {threshold:.2f}"


def stage1_thresholds(rule: str, fallback_threshold: float) -> tuple[float, ...]:
    """The fall-back thresholds stage 1 trains under for ``gate.calibration`` ``rule``: the routings it can deploy.

    ``shmnet`` deploys the configured fall-back; ``selector`` deploys the selector with the fall-back off (and
    ``confidence`` switches the selector off, so how it trained does not matter); ``best`` may deploy either.
    """
    ths = {"shmnet": (fallback_threshold,), "best": (fallback_threshold, 0.0)}.get(rule, (0.0,))
    return tuple(dict.fromkeys(ths))


def fit_gate(
    gated: GatedTwoBranch, train: BranchCache, val: BranchCache, g: GateCfg, seed: int = 0
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Stage 1 under the routing the calibration rule deploys, then :func:`calibrate` on val.

    The policy must be trained for the routing it serves: REINFORCE's reward and the budget term count the images
    that fall back at ``gated.threshold``. So stage 1 trains once per threshold of :func:`stage1_thresholds` (each
    from the same initial weights and random state, on the cached outputs: seconds each), and the one whose
    calibrated routing scores best on val is kept (ties: fewer routed, then the order). Returns the kept training's
    history and its calibration, with ``stage1_fallback_threshold`` (the threshold it trained under) and
    ``stage1_val_top1`` (each training's calibrated val top-1, by threshold).
    """
    init, rng = copy.deepcopy(gated.state_dict()), torch.get_rng_state()
    kept: tuple[tuple[float, float, int], dict[str, Tensor], list[dict[str, float]], dict[str, Any]] | None = None
    scores: dict[str, float] = {}
    for order, th in enumerate(stage1_thresholds(g.calibration, g.fallback_threshold)):
        gated.load_state_dict(init)
        torch.set_rng_state(rng)
        gated.threshold.fill_(th)
        hist = train_stage1(gated, train, g, seed)
        calib = calibrate(gated, val, g.budget, g.calibration, g.fallback_threshold)
        scores[f"{th:g}"] = calib["val_top1"]
        key = _rank(calib["val_top1"], calib["val_expensive_fraction"], order)
        if kept is None or key > kept[0]:
            kept = (key, copy.deepcopy(gated.state_dict()), hist, calib | {"stage1_fallback_threshold": th})
    assert kept is not None  # stage1_thresholds is never empty
    gated.load_state_dict(kept[1])
    return kept[2], kept[3] | {"stage1_val_top1": scores}


@torch.no_grad()
def simulate(gated: GatedTwoBranch, c: BranchCache) -> tuple[Tensor, Tensor]:
    """Inference-mode routing on cached outputs: ``(logits (N, K), routed (N,))``, identical to ``gated(x)``."""
    logits, action, fallback = simulate_parts(gated, c)
    return logits, action | fallback


@torch.no_grad()
def simulate_parts(gated: GatedTwoBranch, c: BranchCache) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits (N, K), action (N,), fallback (N,))`` of inference-mode routing on cached outputs."""
    gated.eval()
    logit = gated.hard_logit(c.cf, c.cl)
    action, fallback = gated.route(logit, c.cl, sample=False)
    fused, _ = gated.fuse(c.cf, c.cl, c.ef, c.el)
    return gated.combine(action, fallback, c.cl, fused, c.el), action, fallback


NEVER = 1e9  # a decision bias no selector logit exceeds: the selector is switched off
RULES = ("shmnet", "selector", "confidence", "best")


def _bias_for(logit: Tensor, k: int) -> float:
    """A decision bias under which exactly the ``k`` highest of ``logit`` are above it (barring ties)."""
    if k <= 0 or len(logit) == 0:
        return NEVER
    v = torch.sort(logit, descending=True).values
    return float(v[k]) if k < len(v) else float(v[-1]) - 1.0


@torch.no_grad()
def calibrate(
    gated: GatedTwoBranch, val: BranchCache, budget: float, rule: str = "shmnet", fallback_threshold: float = 0.9
) -> dict[str, Any]:
    """Fit the routing to ``budget`` on val with ``rule`` (``gate.calibration``); returns what was chosen.

    At most ``floor(budget * n)`` val images may reach the expensive branch (hard rows and fall-backs together).

    - ``shmnet``: the fall-back stays at ``fallback_threshold``; the selector's decision bias is the configured one
      (``0``: ``P(hard) > 0.5``) when that is within budget, or the one that spends exactly what the fall-backs
      leave (best val top-1 of the two). When the fall-backs alone exceed the budget the selector is switched off
      and the overrun is reported (``within_budget`` false): the rule is never bent silently.
    - ``selector``: fall-back off, the selector's ranking spends the budget.
    - ``confidence``: selector off, the cheap branch's least confident images spend the budget.
    - ``best``: all of the above, each with the learned fusion and with expensive logits alone on hard rows; the best
      val top-1 wins (ties: fewer routed, then the order above).

    Only val is used, never test.
    """
    if rule not in RULES:
        raise ValueError(f"gate.calibration must be one of {', '.join(RULES)}; got '{rule}'")
    keep = val.y >= 0
    logit = gated.hard_logit(val.cf, val.cl)
    conf = confidence(val.cl)
    n = len(conf)
    limit = int(np.floor(budget * n + 1e-9))

    def n_routed(th: float, bias: float) -> int:
        return int(((logit > bias) | (conf < th)).sum())

    th, b0 = fallback_threshold, float(gated.decision_bias)
    low = conf < th
    shm: list[tuple[str, float, float]] = []
    if n_routed(th, b0) <= limit:
        shm.append(("shmnet/configured", th, b0))
    if int(low.sum()) <= limit:
        shm.append(("shmnet/budget", th, _bias_for(logit[~low], limit - int(low.sum()))))
    else:
        shm.append(("shmnet/fallback_only", th, NEVER))
    by_conf = torch.sort(conf).values
    sel = [("selector", 0.0, _bias_for(logit, limit))]
    con = [("confidence", float(by_conf[limit]) if limit < n else 1.01, NEVER)]
    within = [r for r in shm if r[0] != "shmnet/fallback_only"]  # "best" only weighs rules within the budget
    rules = {"shmnet": shm, "selector": sel, "confidence": con, "best": within + sel + con}[rule]
    fusions = (1.0, 0.0) if rule == "best" else (1.0,)

    def set_rule(th: float, bias: float, fusion_on: float) -> None:
        gated.threshold.fill_(th)
        gated.decision_bias.fill_(bias)
        gated.fusion_on.fill_(fusion_on)

    def val_top1(logits: Tensor) -> float:
        return float((logits.argmax(1)[keep] == val.y[keep]).float().mean()) if keep.any() else float("nan")

    result: dict[str, Any] = {}
    best: tuple[float, float, int] | None = None
    chosen = (rules[0], 1.0)
    for order, (name, r_th, bias) in enumerate(rules):
        for fusion_on in fusions:
            set_rule(r_th, bias, fusion_on)
            acc, k = val_top1(simulate(gated, val)[0]), n_routed(r_th, bias)
            result[f"val_top1/{name}/{'fused' if fusion_on else 'expensive'}"] = acc
            key = _rank(acc, k, order)
            if best is None or key > best:
                best, chosen = key, ((name, r_th, bias), fusion_on)
    (name, th, bias), fusion_on = chosen
    set_rule(th, bias, fusion_on)
    logits, action, fallback = simulate_parts(gated, val)
    routed = action | fallback
    fits = int(routed.sum()) <= limit  # counts: a float mean of exactly the budget is not over it
    if not fits:
        log.warning(
            "gate.calibration=%s: the fall-backs alone (cheap max prob < %.2f) route %.1f%% of val, over the budget "
            "%.1f%%; lower gate.fallback_threshold, raise gate.budget, or set gate.calibration=best", rule, th,
            100 * float(routed.float().mean()), 100 * budget,
        )  # fmt: skip
    return result | {
        "calibration": rule,
        "rule_name": name,
        "threshold": th,
        "decision_bias": bias,
        "fusion_on": fusion_on,
        "within_budget": fits,
        "val_expensive_fraction": float(routed.float().mean()),
        "val_selector_fraction": float(action.float().mean()),
        "val_fallback_fraction": float(fallback.float().mean()),
        "val_top1": val_top1(logits),
        "val_top1_expensive_only": val_top1(val.el),
        "val_top1_cheap_only": val_top1(val.cl),
    }


def train_stage2(
    gated: GatedTwoBranch,
    loader: DataLoader[Any],
    targets: np.ndarray,
    g: GateCfg,
    lr: float,
    device: torch.device,
) -> list[dict[str, float]]:
    """End-to-end fine-tune with sampled routing on real images: only routed rows run the expensive branch.

    Loss: CE of the routed output + CE of the cheap logits (keeps the cheap branch a classifier) + REINFORCE (every
    routed image, fall-backs included, pays ``cost``) + budget penalty, for ``gate.stage2_epochs`` epochs at
    ``lr``. Branch BatchNorm statistics stay frozen (eval mode): the batch reaching the expensive branch is a small,
    biased subset. The caller passes a copy when the stage-1 model must stay what it is (see ``finetune.run``).
    """
    params = [p for p in gated.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=g.stage1_weight_decay)
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
            reward = routing_reward(out.logits.detach().argmax(1) == y, out.routed, g.cost)
            pg = reinforce_loss(out.hard_logit, out.action.float(), reward, baseline.update(reward))
            low = confidence(out.cheap_logits) < gated.threshold
            budget = budget_penalty(out.hard_logit, g.budget, low)
            loss = ce + ce_cheap + g.pg_weight * pg + g.budget_weight * budget
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append({"ce": float(ce.detach()), "routed": float(out.routed.float().mean())})
        if rows:
            history.append({k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"epoch": float(epoch)})
    return history
