"""SHMNet-style gated two-branch classifier with a shared trunk: the expensive branch continues the cheap one.

The network is cut in three parts: a ``trunk`` (by default the backbone's first stages), a light ``cheap_head`` on
the trunk's map (the early exit) and ``rest``, the remaining stages plus the expensive classifier, which *continues
from the trunk's map* rather than recomputing it. Every image pays ``trunk + cheap_head``; only routed images pay
``rest``, so gated FLOPs are ``cheap + fraction_routed * rest`` and fall strictly below always-expensive whenever
the fraction is below 1 (Teerapittayanon et al. 2016 "BranchyNet"; Wang et al. "SHMNet" for the light/heavy
branches). A separate small CNN as cheap branch is the special case ``trunk = Identity``. A *selector* MLP sees the
cheap features and confidence and gives ``P(hard)``. Routing is SHMNet's, per image:

- *hard* (the selector's action: sampled in training, ``logit > decision_bias`` at inference): both branches run and
  the logits are fused, ``(1 - w) * logits_c + w * logits_e`` with ``w = alpha * sigmoid(MLP(f_c, f_e, conf_c,
  conf_e))`` (the expensive logits alone when the ``fusion_on`` buffer is 0, an option of calibration);
- *easy* and the cheap branch's max probability ``>= threshold``: the cheap logits;
- *easy* but less confident than ``threshold`` (the *fall-back*): the expensive branch's logits alone, no fusion.

Every image that reaches the expensive branch (hard or fall-back) is ``routed``. ``threshold``, ``decision_bias`` and
``fusion_on`` are buffers, so a budget calibrated on val travels with the weights. The policy gradient follows Wu et
al. 2018 "BlockDrop".
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class GatedOutput:
    """Result of :meth:`GatedTwoBranch.forward`.

    Attributes:
        logits: ``(B, K)``: cheap logits for easy rows, fused logits for hard rows, expensive logits for fall-backs.
        routed: ``(B,)`` bool, True where the expensive part ran (``action | fallback``).
        hard_logit: ``(B,)`` selector logit of ``P(hard)``.
        weight: ``(B,)`` weight of the expensive logits: fusion ``w`` on hard rows, 1 on fall-backs, 0 elsewhere.
        action: ``(B,)`` bool, the selector's own decision (the policy's action).
        cheap_logits: ``(B, K)`` the cheap branch's logits.
        fallback: ``(B,)`` bool, easy rows whose cheap confidence is below ``threshold`` (expensive alone).
    """

    logits: Tensor
    routed: Tensor
    hard_logit: Tensor
    weight: Tensor
    action: Tensor
    cheap_logits: Tensor
    fallback: Tensor


def split_stages(timm_model: nn.Module, n_levels: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut a sequential timm CNN after its ``n_levels``-th feature level: ``(trunk, rest)``.

    Both parts hold the *same* module objects as ``timm_model`` (no copy), so a fine-tuned backbone is shared.
    ``rest(trunk(x))`` equals ``timm_model(x)`` (the pooled pre-logits, ``num_classes=0``); this is checked on a
    probe input, so an architecture whose ``forward`` is not the chain of its children is rejected.

    Args:
        timm_model: a timm CNN whose ``feature_info`` modules are top-level children (ResNet family, ...).
        n_levels: feature levels kept in the trunk (ResNet: 1 = stem, 2 = + layer1, 3 = + layer2, ...).

    Returns:
        ``trunk: (B, 3, H, W) -> (B, C, H', W')`` and ``rest: (B, C, H', W') -> (B, D)``.

    Raises:
        ValueError: for a level out of range or a model that cannot be cut this way.
    """
    info: Any = getattr(timm_model, "feature_info", [])
    if not 1 <= n_levels < len(info):
        raise ValueError(f"cheap_stages must be in [1, {len(info) - 1}] for this backbone, got {n_levels}")
    cut = str(info[n_levels - 1]["module"])
    children = list(timm_model.named_children())
    names = [n for n, _ in children]
    if cut not in names:
        raise ValueError(
            f"cannot split {type(timm_model).__name__} after {cut!r} (not a top-level stage); "
            "use gate.cheap_backbone=<small timm CNN> for this architecture"
        )
    i = names.index(cut) + 1
    trunk, rest = nn.Sequential(OrderedDict(children[:i])), nn.Sequential(OrderedDict(children[i:]))
    was = timm_model.training
    timm_model.eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        ok = torch.allclose(rest(trunk(x)), timm_model(x), atol=1e-4, rtol=1e-4)
    timm_model.train(was)
    if not ok:
        raise ValueError(
            f"{type(timm_model).__name__}.forward is not the chain of its children; "
            "use gate.cheap_backbone=<small timm CNN> for this architecture"
        )
    return trunk, rest


class ExitPool(nn.Module):
    """Light early-exit features of a trunk map: 1x1 conv + BN + ReLU, then mean and std pooling.

    Mean and standard deviation over positions are the first two moments of the channel activations, the cheap
    relatives of Gram statistics that carry style (Huang & Belongie 2017 "AdaIN").

    Args:
        in_channels: ``C`` of the trunk map.
        width: channels after the 1x1 conv; the output has ``2 * width`` features.
    """

    def __init__(self, in_channels: int, width: int = 256):
        super().__init__()
        if width < 1:
            raise ValueError(f"exit width must be >= 1, got {width}")
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.dim = 2 * width

    def forward(self, h: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, 2 * width)``."""
        z = self.proj(h).flatten(2)
        return torch.cat([z.mean(-1), z.std(-1, unbiased=False)], dim=1)


class Branch(nn.Module):
    """``body`` then a linear classifier: ``input -> (features (B, D), logits (B, K))``.

    Args:
        body: ``input -> (B, D)`` (a trunk-map pooler, the remaining stages, or a whole encoder).
        fc: ``nn.Linear(D, K)``.
    """

    def __init__(self, body: nn.Module, fc: nn.Module):
        super().__init__()
        self.body, self.fc = body, fc

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.body(x)
        return f, self.fc(f)


def _mlp(in_dim: int, hidden: int) -> nn.Sequential:
    # LayerNorm first: branch features have arbitrary scale, confidences are in [0, 1]
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


def confidence(logits: Tensor) -> Tensor:
    """``(B, K) -> (B,)`` max softmax probability."""
    return logits.float().softmax(dim=-1).amax(dim=-1)


class GatedTwoBranch(nn.Module):
    """Shared trunk, early-exit cheap head, and the expensive remainder run only on routed rows.

    Args:
        trunk: ``(B, 3, H, W) -> h``, shared by both branches (``nn.Identity()`` for two separate networks).
        cheap_head: ``h -> (features (B, D_c), logits (B, K))``.
        rest: ``h -> (features (B, D_e), logits (B, K))``, the expensive branch continuing from ``h``.
        cheap_dim: ``D_c``.
        expensive_dim: ``D_e``.
        hidden_dim: width of the selector and fusion MLPs.
        threshold: an easy row whose cheap confidence is below this falls back to the expensive branch (SHMNet: 0.9).
        alpha: maximum fusion weight, ``w = alpha * sigmoid(.)``, in ``(0, 1]``.
        fusion_init_bias: initial bias of the fusion MLP's output (3: ``w ~ 0.95 alpha``, trust the expensive branch).
    """

    threshold: Tensor
    decision_bias: Tensor
    fusion_on: Tensor

    def __init__(
        self,
        trunk: nn.Module,
        cheap_head: nn.Module,
        rest: nn.Module,
        cheap_dim: int,
        expensive_dim: int,
        hidden_dim: int = 64,
        threshold: float = 0.9,
        alpha: float = 1.0,
        fusion_init_bias: float = 3.0,
    ):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.trunk, self.cheap_head, self.rest, self.alpha = trunk, cheap_head, rest, alpha
        self.selector = _mlp(cheap_dim + 2, hidden_dim)
        self.fusion = _mlp(cheap_dim + expensive_dim + 2, hidden_dim)
        with torch.no_grad():  # start near "trust the expensive branch": w = alpha * sigmoid(3) ~ 0.95 alpha
            last = self.fusion[-1]
            assert isinstance(last, nn.Linear)
            last.bias.fill_(fusion_init_bias)
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("decision_bias", torch.tensor(0.0))
        self.register_buffer("fusion_on", torch.tensor(1.0))

    # ------------------------------------------------------------------ branches

    def cheap(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, 3, H, W)`` -> trunk output ``h``, cheap features ``(B, D_c)`` and logits ``(B, K)``."""
        h = self.trunk(x)
        cf, cl = self.cheap_head(h)
        return h, cf, cl

    def expensive(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Always-expensive path ``(B, 3, H, W) -> (features (B, D_e), logits (B, K))`` (trunk + rest)."""
        out: tuple[Tensor, Tensor] = self.rest(self.trunk(x))
        return out

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
        """Fused logits ``(B, K)`` and weight ``w`` ``(B,)`` for rows that ran both branches.

        With ``fusion_on == 0`` the expensive logits are returned as they are (``w = 1``).
        """
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
        w = self.fusion_on * w + (1.0 - self.fusion_on)
        return (1.0 - w[:, None]) * cheap_logits.float() + w[:, None] * exp_logits.float(), w

    def route(self, hard_logit: Tensor, cheap_logits: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
        """``(action, fallback)``, ``(B,)`` bool each: the selector's action (sampled, or ``logit > decision_bias``)
        and the fall-backs ``~action & (cheap confidence < threshold)``; the routed rows are ``action | fallback``."""
        if sample:
            action = torch.bernoulli(torch.sigmoid(hard_logit.detach())).bool()
        else:
            action = hard_logit > self.decision_bias
        return action, self.fallback(action, cheap_logits)

    def fallback(self, action: Tensor, cheap_logits: Tensor) -> Tensor:
        """``(B,)`` bool: easy rows (``~action``) the cheap branch is less sure of than ``threshold``."""
        return ~action & (confidence(cheap_logits) < self.threshold)

    def combine(
        self, action: Tensor, fallback: Tensor, cheap_logits: Tensor, fused: Tensor, exp_logits: Tensor
    ) -> Tensor:
        """Per-row output ``(B, K)``: fused on hard rows, expensive alone on fall-backs, cheap elsewhere."""
        out = torch.where(fallback[:, None], exp_logits.float(), cheap_logits.float())
        return torch.where(action[:, None], fused.float(), out)

    # ------------------------------------------------------------------ end to end

    def forward(self, x: Tensor, sample: bool | None = None) -> GatedOutput:
        """Route ``(B, 3, H, W)`` images; the trunk runs once, ``rest`` only on the routed rows of its output.

        Args:
            x: images.
            sample: sample the selector's decision (policy training); default ``self.training``.
        """
        sample = self.training if sample is None else sample
        h, cf, cl = self.cheap(x)
        logit = self.hard_logit(cf, cl)
        action, fallback = self.route(logit, cl, sample)
        routed = action | fallback
        logits = cl.float().clone()
        weight = logits.new_zeros(len(x))
        idx = routed.nonzero().squeeze(1)
        if idx.numel():
            ef, el = self.rest(h[idx])
            out, w = el.float(), el.new_ones(len(idx), dtype=torch.float32)  # fall-backs: the expensive branch alone
            j = action[idx].nonzero().squeeze(1)  # hard rows among the routed ones: fused
            if j.numel():
                fused, wj = self.fuse(cf[idx[j]], cl[idx[j]], ef[j], el[j])
                out, w = out.index_copy(0, j, fused), w.index_copy(0, j, wj)
            logits = logits.index_copy(0, idx, out)
            weight = weight.index_copy(0, idx, w)
        return GatedOutput(logits, routed, logit, weight, action, cl, fallback)


def policy_log_prob(hard_logit: Tensor, action: Tensor) -> Tensor:
    """``log pi(a)`` of a Bernoulli policy with ``P(a=1) = sigmoid(hard_logit)``, ``(B,)`` each."""
    return -F.binary_cross_entropy_with_logits(hard_logit, action.float(), reduction="none")
