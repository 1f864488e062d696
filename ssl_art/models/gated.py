"""SHMNet-style gated two-branch classifier: a cheap branch for easy images, the expensive one only for hard ones.

Both branches map images to ``(features (B, D), logits (B, K))``. A small *selector* MLP sees the cheap branch's
features and confidence and outputs ``P(hard)``; a *fusion* MLP gives ``w = alpha * sigmoid(MLP(f_c, f_e, conf_c,
conf_e))`` and hard images get ``(1 - w) * logits_c + w * logits_e``. Routing is hard: an image goes to the
expensive branch when the selector says hard (sampled from ``P(hard)`` in training, ``logit > decision_bias`` at
inference) or when the cheap confidence is below ``threshold`` (the fall-back rule). Only those rows of the batch
are passed to the expensive branch, so its compute is really skipped for the others. ``threshold`` and
``decision_bias`` are buffers so a budget calibrated on val travels with the weights. See Wang et al., "SHMNet"
(hard-sample mining with a light and a heavy branch) and Wu et al. 2018 "BlockDrop" for the policy-gradient gate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class GatedOutput:
    """Result of :meth:`GatedTwoBranch.forward`.

    Attributes:
        logits: ``(B, K)``: cheap logits for easy rows, fused logits for routed rows.
        routed: ``(B,)`` bool, True where the expensive branch ran.
        hard_logit: ``(B,)`` selector logit of ``P(hard)``.
        weight: ``(B,)`` fusion weight ``w`` (0 where not routed).
        action: ``(B,)`` bool, the selector's own decision (the policy's action; ``routed`` also has fall-backs).
        cheap_logits: ``(B, K)`` the cheap branch's logits.
    """

    logits: Tensor
    routed: Tensor
    hard_logit: Tensor
    weight: Tensor
    action: Tensor
    cheap_logits: Tensor


class EarlyStages(nn.Module):
    """The first ``n_levels`` feature levels of a timm model, globally average pooled: ``(B, 3, H, W) -> (B, C)``.

    The model is deep-copied (so the cheap branch starts from the backbone's weights but trains on its own) and
    pruned with timm's ``prune_intermediate_layers``: the later stages are removed, not merely skipped.

    Args:
        timm_model: a timm network with ``forward_intermediates`` / ``prune_intermediate_layers``.
        n_levels: how many of ``feature_info``'s levels to keep (ResNet: 1 = stem, 2 = + layer1, ...; ViT: blocks).
    """

    def __init__(self, timm_model: nn.Module, n_levels: int):
        super().__init__()
        n_total = len(getattr(timm_model, "feature_info", []))
        if not 1 <= n_levels < n_total:
            raise ValueError(f"cheap_stages must be in [1, {n_total - 1}] for this backbone, got {n_levels}")
        self.model = copy.deepcopy(timm_model)
        self.index = n_levels - 1
        self.model.prune_intermediate_layers([self.index], prune_norm=True, prune_head=True)  # type: ignore[operator]
        with torch.no_grad():
            was = self.model.training
            self.model.eval()
            self.dim = int(self.forward(torch.zeros(1, 3, 64, 64)).shape[1])
            self.model.train(was)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, C)`` pooled map of the last kept level."""
        fwd: Any = self.model.forward_intermediates
        maps = fwd(x, indices=[self.index], intermediates_only=True, output_fmt="NCHW")
        return maps[-1].mean(dim=(2, 3))


def _mlp(in_dim: int, hidden: int) -> nn.Sequential:
    # LayerNorm first: branch features have arbitrary scale, confidences are in [0, 1]
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


def confidence(logits: Tensor) -> Tensor:
    """``(B, K) -> (B,)`` max softmax probability."""
    return logits.float().softmax(dim=-1).amax(dim=-1)


class GatedTwoBranch(nn.Module):
    """Cheap + expensive classifiers with a learned selector and logit fusion.

    Args:
        cheap: module ``(B, 3, H, W) -> (features (B, D_c), logits (B, K))``.
        expensive: module ``(B, 3, H, W) -> (features (B, D_e), logits (B, K))``.
        cheap_dim: ``D_c``.
        expensive_dim: ``D_e``.
        hidden_dim: width of the selector and fusion MLPs.
        threshold: cheap confidence below this falls back to the expensive branch (default 0.9).
        alpha: maximum fusion weight, ``w = alpha * sigmoid(.)``, in ``(0, 1]``.
    """

    threshold: Tensor
    decision_bias: Tensor

    def __init__(
        self,
        cheap: nn.Module,
        expensive: nn.Module,
        cheap_dim: int,
        expensive_dim: int,
        hidden_dim: int = 64,
        threshold: float = 0.9,
        alpha: float = 1.0,
    ):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.cheap, self.expensive, self.alpha = cheap, expensive, alpha
        self.selector = _mlp(cheap_dim + 2, hidden_dim)
        self.fusion = _mlp(cheap_dim + expensive_dim + 2, hidden_dim)
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("decision_bias", torch.tensor(0.0))

    # ------------------------------------------------------------------ parts (also used on cached outputs)

    def hard_logit(self, cheap_feats: Tensor, cheap_logits: Tensor) -> Tensor:
        """Selector logit of ``P(hard)``: ``(B, D_c), (B, K) -> (B,)``; inputs are detached (the gate never
        changes the cheap branch through the policy gradient)."""
        p = cheap_logits.detach().float().softmax(-1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
        x = torch.cat([cheap_feats.detach().float(), p.amax(-1, keepdim=True), entropy[:, None]], dim=1)
        return self.selector(x).squeeze(1)

    def fuse(
        self, cheap_feats: Tensor, cheap_logits: Tensor, exp_feats: Tensor, exp_logits: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Fused logits ``(B, K)`` and weight ``w`` ``(B,)`` for rows that ran both branches."""
        x = torch.cat(
            [
                cheap_feats.float(),
                exp_feats.float(),
                confidence(cheap_logits)[:, None],
                confidence(exp_logits)[:, None],
            ],
            dim=1,
        )
        w = self.alpha * torch.sigmoid(self.fusion(x).squeeze(1))
        return (1.0 - w[:, None]) * cheap_logits.float() + w[:, None] * exp_logits.float(), w

    def route(self, hard_logit: Tensor, cheap_logits: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
        """``(routed, action)``, ``(B,)`` bool each: the selector's action (sampled, or ``logit > decision_bias``)
        and ``routed = action | (cheap confidence < threshold)``."""
        if sample:
            action = torch.bernoulli(torch.sigmoid(hard_logit.detach())).bool()
        else:
            action = hard_logit > self.decision_bias
        return action | (confidence(cheap_logits) < self.threshold), action

    # ------------------------------------------------------------------ end to end

    def forward(self, x: Tensor, sample: bool | None = None) -> GatedOutput:
        """Route ``(B, 3, H, W)`` images; only routed rows enter the expensive branch.

        Args:
            x: images.
            sample: sample the selector's decision (policy training); default ``self.training``.
        """
        sample = self.training if sample is None else sample
        cf, cl = self.cheap(x)
        logit = self.hard_logit(cf, cl)
        routed, action = self.route(logit, cl, sample)
        logits = cl.float().clone()
        weight = logits.new_zeros(len(x))
        idx = routed.nonzero().squeeze(1)
        if idx.numel():
            ef, el = self.expensive(x[idx])
            fused, w = self.fuse(cf[idx], cl[idx], ef, el)
            logits = logits.index_copy(0, idx, fused)
            weight = weight.index_copy(0, idx, w)
        return GatedOutput(logits, routed, logit, weight, action, cl)


def policy_log_prob(hard_logit: Tensor, action: Tensor) -> Tensor:
    """``log pi(a)`` of a Bernoulli policy with ``P(a=1) = sigmoid(hard_logit)``, ``(B,)`` each."""
    return -F.binary_cross_entropy_with_logits(hard_logit, action.float(), reduction="none")
