"""The art-style SSL method: multi-scale fusion, Gram style head, EMA self-distillation and soft positives.

A flat composition of small library parts (lightly's ``benchmarks`` style), each switched by a flag or a loss
weight so that every ablation is one config override:

* **student**: ``Backbone -> MultiScaleFusion`` (or the pooled vector when fusion is off) ``-> SimCLR projection``,
  trained with NT-Xent between views (the hard-positive contrastive term, ``w_ntxent``);
* **style**: ``GramHead`` on chosen intermediate maps, NT-Xent between the views' style embeddings (``w_gram``);
* **teacher**: an ``EMATeacher`` of the content graph (backbone + fusion + projection), run under ``no_grad`` on all
  views in one forward, updated in :meth:`ArtSSL.after_optimizer_step` with the cosine momentum schedule of
  :mod:`ssl_art.runtime.schedules`;
* **distillation**: a ``Predictor`` on each chosen student layer regresses the teacher's embedding of the other view
  (``w_distill``); **soft positives**: SCE-style targets from the teacher over batch + queue (``w_soft``).

The student backbone runs once per step on the concatenated views (as the SimCLR baseline does) and every head reuses
those intermediates, which keeps the step within a small factor of SimCLR's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_art.config import PretrainConfig
from ssl_art.losses.collapse import embedding_std
from ssl_art.losses.contrastive import InfoNCE
from ssl_art.losses.distill import DistillLoss
from ssl_art.losses.soft_positive import SoftPositiveLoss
from ssl_art.methods.base import PretrainMethod, StepOutput, split_views, view_pairs
from ssl_art.models.backbone import Backbone, Features
from ssl_art.models.build import build_backbone
from ssl_art.models.fusion import MultiScaleFusion
from ssl_art.models.gram import GramHead
from ssl_art.models.heads import Predictor, SimCLRProjectionHead
from ssl_art.models.stats import style_stats
from ssl_art.models.teacher import EMATeacher
from ssl_art.runtime.schedules import cosine_momentum

__all__ = ["ArtSSL", "ContentEncoder", "from_config"]

log = logging.getLogger(__name__)

_TEACHER_VIEWS = ("alternate", "all")


class ContentEncoder(nn.Module):
    """The content graph shared by student and teacher: backbone -> fusion (optional) -> projection.

    Args:
        backbone: the feature extractor.
        fusion: multi-scale fusion, or None to use the backbone's pooled vector.
        projection: MLP from the content embedding to the contrastive space.
    """

    def __init__(self, backbone: Backbone, fusion: MultiScaleFusion | None, projection: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion
        self.projection = projection

    def encode(self, x: Tensor) -> tuple[Features, Tensor, Tensor | None, Tensor]:
        """``(B, 3, H, W)`` -> features, content embedding ``(B, E)``, scale weights ``(B, S)`` or None, ``(B, P)``."""
        feats = self.backbone.features(x)
        if self.fusion is not None:
            emb, weights = self.fusion.forward_with_weights(feats.intermediates)
        else:
            emb, weights = feats.pooled, None
        return feats, emb, weights, self.projection(emb)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, P)`` projected embedding."""
        return self.encode(x)[3]


class ArtSSL(PretrainMethod):
    """Art-style self-supervised method; see the module docstring for the parts.

    Args:
        backbone: the feature extractor (its ``channels`` give the intermediate widths).
        proj_hidden_dim: projection (and predictor) MLP hidden width.
        proj_out_dim: projection output width ``P``.
        fusion: use :class:`MultiScaleFusion` over all intermediates as the content embedding.
        fusion_dim: fused width.
        fusion_heads: fusion attention heads.
        fusion_pool: ``avg`` or ``gem`` pooling of each scale.
        gram: build the Gram style head (exported as the ``gram`` embedding).
        gram_layers: indices into the backbone's intermediates used by the Gram head.
        gram_rank: Gram head projection rank ``r``.
        gram_out_dim: style embedding width.
        temperature: NT-Xent temperature (content and style terms).
        w_ntxent: weight of the content NT-Xent term.
        w_gram: weight of the style NT-Xent term (needs ``gram``).
        w_distill: weight of the multi-layer distillation term.
        w_soft: weight of the soft-positive term.
        distill_layers: indices into the intermediates that get a predictor.
        distill_layer_weights: one weight per distilled layer.
        soft_lambda: hard-positive weight in the soft targets.
        soft_tau: student temperature of the soft-positive term.
        soft_tau_t: teacher temperature of the soft-positive term.
        queue_size: teacher embeddings kept for the soft-positive term.
        ema_momentum: teacher momentum at the start of training.
        ema_momentum_end: teacher momentum at the end (cosine schedule by ``progress``).
        teacher_views: ``all`` (the teacher encodes every view; distillation and soft positives are symmetrised) or
            ``alternate`` (one view per step, taken in turn by a checkpointed step counter: half the teacher cost,
            every direction still used equally over training).
        gather_distributed: gather negatives/candidates across ranks (no-op in one process).

    Raises:
        ValueError: inconsistent switches, out-of-range layer indices or weights.
    """

    backbone: Backbone
    teacher_step: Tensor
    fusion: MultiScaleFusion | None
    gram_head: GramHead | None

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 512,
        proj_out_dim: int = 128,
        fusion: bool = True,
        fusion_dim: int = 256,
        fusion_heads: int = 4,
        fusion_pool: str = "avg",
        gram: bool = True,
        gram_layers: Sequence[int] = (2, 3),
        gram_rank: int = 32,
        gram_out_dim: int = 128,
        temperature: float = 0.2,
        w_ntxent: float = 1.0,
        w_gram: float = 1.0,
        w_distill: float = 1.0,
        w_soft: float = 1.0,
        distill_layers: Sequence[int] = (1, 2, 3),
        distill_layer_weights: Sequence[float] = (0.25, 0.5, 1.0),
        soft_lambda: float = 0.5,
        soft_tau: float = 0.1,
        soft_tau_t: float = 0.05,
        queue_size: int = 4096,
        ema_momentum: float = 0.996,
        ema_momentum_end: float = 1.0,
        teacher_views: str = "alternate",
        gather_distributed: bool = True,
    ):
        super().__init__()
        n_inter = len(backbone.channels)
        weights = {"w_ntxent": w_ntxent, "w_gram": w_gram, "w_distill": w_distill, "w_soft": w_soft}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {weights}")
        if w_gram > 0 and not gram:
            raise ValueError("loss.w_gram > 0 needs the Gram head: set model.gram.enabled=true or loss.w_gram=0")
        for name, layers in (("gram_layers", gram_layers), ("distill_layers", distill_layers)):
            if not layers or any(not 0 <= i < n_inter for i in layers):
                raise ValueError(f"{name} must be non-empty indices in [0, {n_inter}) (n_intermediates), got {layers}")
        if w_distill > 0 and len(distill_layer_weights) != len(distill_layers):
            raise ValueError(
                f"distill_layer_weights needs one weight per distill layer: {len(distill_layers)} layers "
                f"{tuple(distill_layers)}, {len(distill_layer_weights)} weights {tuple(distill_layer_weights)}"
            )
        if not (0.0 <= ema_momentum <= 1.0 and 0.0 <= ema_momentum_end <= 1.0):
            raise ValueError(f"EMA momenta must be in [0, 1], got {ema_momentum} -> {ema_momentum_end}")
        if teacher_views not in _TEACHER_VIEWS:
            raise ValueError(f"teacher_views must be one of {', '.join(_TEACHER_VIEWS)}; got '{teacher_views}'")
        self.teacher_views = teacher_views
        self.w_ntxent, self.w_gram, self.w_distill, self.w_soft = w_ntxent, w_gram, w_distill, w_soft
        self.ema_start, self.ema_end = ema_momentum, ema_momentum_end
        self.gram_layers = list(gram_layers)
        self.distill_layers = list(distill_layers)

        self.backbone = backbone
        self.fusion = MultiScaleFusion(backbone.channels, fusion_dim, fusion_heads, fusion_pool) if fusion else None
        content_dim = fusion_dim if fusion else backbone.embed_dim
        self.projection = SimCLRProjectionHead(content_dim, proj_hidden_dim, proj_out_dim)
        self.default_embedding = "fused" if fusion else "pooled"
        self.embedding_kinds = ("pooled", "stats") + (("fused",) if fusion else ()) + (("gram",) if gram else ())
        self.gram_head = (
            GramHead([backbone.channels[i] for i in gram_layers], gram_rank, gram_out_dim) if gram else None
        )
        if gram and w_gram == 0:
            log.warning("Gram head built but loss.w_gram=0: the 'gram' embedding stays untrained")

        self.ntxent = InfoNCE(temperature, gather_distributed)
        self.gram_loss = InfoNCE(temperature, gather_distributed) if w_gram > 0 else None
        self.predictors = (
            nn.ModuleList(Predictor(backbone.channels[i], proj_hidden_dim, proj_out_dim) for i in distill_layers)
            if w_distill > 0
            else None
        )
        self.distill_loss = DistillLoss(distill_layer_weights) if w_distill > 0 else None
        self.soft_loss = (
            SoftPositiveLoss(soft_lambda, soft_tau, soft_tau_t, queue_size, proj_out_dim, gather_distributed)
            if w_soft > 0
            else None
        )
        # the teacher copies the student as it is now: load init weights into the backbone before building
        self.teacher = EMATeacher(self.content_encoder()) if (w_distill > 0 or w_soft > 0) else None
        self._last_momentum = ema_momentum
        # training steps taken; picks the teacher's view in 'alternate' mode (a buffer, so resume keeps the turn)
        self.register_buffer("teacher_step", torch.zeros((), dtype=torch.long))

    def content_encoder(self) -> ContentEncoder:
        """A view of the student's content graph (shares its modules; not registered, so no duplicate keys)."""
        return ContentEncoder(self.backbone, self.fusion, self.projection)

    def momentum(self, progress: float) -> float:
        """Teacher EMA momentum at ``progress`` (cosine from ``ema_momentum`` to ``ema_momentum_end``)."""
        return cosine_momentum(progress, self.ema_start, self.ema_end)

    def training_step(self, views: list[Tensor], progress: float) -> StepOutput:
        """Weighted sum of the enabled terms for ``n_views >= 2`` views ``(B, 3, H, W)`` (then any smaller local
        views: they join the NT-Xent and Gram pairs and the distillation, never the teacher or the soft positives).

        Metrics: ``loss/<term>`` per enabled term, ``ema_momentum``, ``fusion/w<s>`` (mean attention on scale ``s``)
        and ``emb_std`` (collapse signal of the projected embedding).
        """
        if len(views) < 2:
            raise ValueError(f"ArtSSL needs at least 2 views per image, got {len(views)} (set data.aug.n_views)")
        glob, loc = split_views(views)
        b, n_views = views[0].shape[0], len(glob)
        x = torch.cat(glob)
        student = self.content_encoder()
        # one forward per view size: the global views, then the local (multi-crop) ones
        groups = [student.encode(torch.cat(g)) for g in (glob, loc) if g]
        scale_w = groups[0][2]
        zs = [z for grp in groups for z in grp[3].split(b)]
        pairs = view_pairs(n_views, len(loc))  # locals pair with every global view, never with each other
        terms: dict[str, Tensor] = {}
        if self.w_ntxent > 0:
            terms["ntxent"] = torch.stack([self.ntxent(zs[i], zs[j]) for i, j in pairs]).mean()
        if self.gram_loss is not None and self.gram_head is not None:
            head = self.gram_head
            gs = [g for grp in groups for g in head([grp[0].intermediates[i] for i in self.gram_layers]).split(b)]
            terms["gram"] = torch.stack([self.gram_loss(gs[i], gs[j]) for i, j in pairs]).mean()
        if self.teacher is not None:  # the teacher sees global views only; every student view learns from it
            if self.teacher_views == "all":
                t_views, xt = list(range(n_views)), x
            else:
                t_views = [int(self.teacher_step) % n_views]
                xt = views[t_views[0]]
            if self.training:
                self.teacher_step.add_(1)
            zt = list(self.teacher(xt).split(b))  # no_grad inside; one forward for all its views
            if self.distill_loss is not None and self.predictors is not None:
                per_view: list[list[Tensor]] = []
                for grp in groups:
                    preds = [
                        pred(F.adaptive_avg_pool2d(grp[0].intermediates[i], 1).flatten(1)).split(b)
                        for pred, i in zip(self.predictors, self.distill_layers)
                    ]
                    per_view += [[p[v] for p in preds] for v in range(len(preds[0]))]
                terms["distill"] = self.distill_loss(per_view, zt, t_views)
            if self.soft_loss is not None:  # soft positives (and the queue) over the global views
                terms["soft"] = self.soft_loss(zs[:n_views], zt, t_views, update_queue=self.training)
        weight = {"ntxent": self.w_ntxent, "gram": self.w_gram, "distill": self.w_distill, "soft": self.w_soft}
        loss = torch.stack([weight[k] * v.float() for k, v in terms.items()]).sum()
        metrics = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        metrics["emb_std"] = embedding_std(zs[0])
        if self.teacher is not None:
            metrics["ema_momentum"] = self.momentum(progress)
        if scale_w is not None:
            for s, w in enumerate(scale_w.detach().float().mean(dim=0).tolist()):
                metrics[f"fusion/w{s}"] = w
        return StepOutput(loss, metrics)

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """EMA-update the teacher from the student with the scheduled momentum (never through the optimiser)."""
        if self.teacher is not None:
            self._last_momentum = self.momentum(progress)
            self.teacher.update(self.content_encoder(), self._last_momentum)

    @torch.no_grad()
    def embed(self, x: Tensor) -> dict[str, Tensor]:
        """``(B, 3, H, W)`` -> ``pooled`` ``(B, D)`` and ``stats`` (:func:`style_stats`), plus ``fused``
        ``(B, fusion_dim)`` and ``gram`` when enabled."""
        feats = self.backbone.features(x)
        out = {"pooled": feats.pooled, "stats": style_stats(feats.intermediates)}
        if self.fusion is not None:
            out["fused"] = self.fusion(feats.intermediates)
        if self.gram_head is not None:
            out["gram"] = self.gram_head([feats.intermediates[i] for i in self.gram_layers])
        return out


def from_config(cfg: PretrainConfig) -> ArtSSL:
    """The registry entry: ``model.*`` (backbone, fusion, gram, projection), every ``loss.*`` field,
    ``data.image_size`` and ``dist.gather`` as :class:`ArtSSL` kwargs (``model.init_checkpoint`` is loaded before
    the teacher is copied, so student and teacher start equal)."""
    model, loss = cfg.model, cfg.loss
    return ArtSSL(
        build_backbone(model, cfg.data.image_size),
        proj_hidden_dim=model.proj_hidden_dim,
        proj_out_dim=model.proj_out_dim,
        fusion=model.fusion.enabled,
        fusion_dim=model.fusion.dim,
        fusion_heads=model.fusion.heads,
        fusion_pool=model.fusion.pool,
        gram=model.gram.enabled,
        gram_layers=model.gram.layers,
        gram_rank=model.gram.rank,
        gram_out_dim=model.gram.out_dim,
        temperature=loss.temperature,
        w_ntxent=loss.w_ntxent,
        w_gram=loss.w_gram,
        w_distill=loss.w_distill,
        w_soft=loss.w_soft,
        distill_layers=loss.distill_layers,
        distill_layer_weights=loss.distill_layer_weights,
        soft_lambda=loss.soft_lambda,
        soft_tau=loss.soft_tau,
        soft_tau_t=loss.soft_tau_t,
        queue_size=loss.queue_size,
        ema_momentum=loss.ema_momentum,
        ema_momentum_end=loss.ema_momentum_end,
        teacher_views=loss.teacher_views,
        gather_distributed=cfg.dist.gather,
    )
