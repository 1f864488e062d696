"""Linear probe on frozen features: standardise, fit ``nn.Linear`` with a small lr x weight-decay sweep, evaluate.

The protocol keeps the evaluation set out of every choice: features are standardised with statistics of the
training features, the sweep is scored on a stratified held-out part *of the training features*, and the winning
(lr, wd) is then refit on all training features and applied once to the evaluation features. Weight decay is an L2
penalty ``wd/2 * ||W||^2`` on the weights (not the bias) added to the cross-entropy, i.e. multinomial logistic
regression, so it regularises with either optimiser: ``adamw`` (Adam on that penalised loss, mini-batch with a
cosine lr schedule) or ``lbfgs`` (full batch with a strong-Wolfe line search; ``lr`` then scales the step).
Features are small (``N x D`` floats), so everything runs on the CPU in seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from ssl_art.eval.metrics import topk_accuracy

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "lbfgs")


@dataclass
class Standardizer:
    """Per-dimension ``(x - mean) / std`` with statistics from the training features."""

    mean: NDArray[np.float32]
    std: NDArray[np.float32]

    @classmethod
    def fit(cls, x: NDArray[np.float32], eps: float = 1e-6) -> Standardizer:
        """Statistics of ``(N, D)`` features; constant dimensions get std 1 (they stay at 0 after centring)."""
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0), std=np.where(std < eps, 1.0, std).astype(np.float32))

    def __call__(self, x: NDArray[np.float32]) -> Tensor:
        """``(N, D)`` array -> standardised float32 tensor."""
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))


@dataclass
class ProbeResult:
    """Outcome of :func:`linear_probe`.

    Attributes:
        top1: top-1 accuracy on the evaluation features (``nan`` without evaluation labels).
        top5: top-5 accuracy (equals 1.0 when there are at most 5 classes).
        best_lr: selected learning rate.
        best_wd: selected weight decay.
        val_top1: held-out accuracy of the selected setting during the sweep.
        sweep: ``{(lr, wd): held-out top-1}`` for every setting tried.
        scores: ``(M, C)`` logits of the evaluation features.
    """

    top1: float
    top5: float
    best_lr: float
    best_wd: float
    val_top1: float
    sweep: dict[tuple[float, float], float] = field(default_factory=dict)
    scores: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))


def _penalised_loss(model: nn.Linear, x: Tensor, y: Tensor, wd: float) -> Tensor:
    return F.cross_entropy(model(x), y) + 0.5 * wd * model.weight.pow(2).sum()


def _zero_linear(d: int, c: int) -> nn.Linear:
    model = nn.Linear(d, c)
    with torch.no_grad():  # zero init: the optimum is unique (convex), so start from a neutral point
        model.weight.zero_()
        model.bias.zero_()
    return model


def train_linear_many(
    x: Tensor,
    y: Tensor,
    n_classes: int,
    settings: list[tuple[float, float]],
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
) -> list[nn.Linear]:
    """Fit one linear classifier per ``(lr, wd)`` with Adam, all in the same pass over the data.

    The ``S`` models see the same mini-batches; their logits are computed at once as ``(S, B, C)`` and their
    penalised losses summed. Adam's update of each weight depends only on that weight's gradient, and each model
    sits in its own parameter group with its own lr, so every model ends exactly where a separate fit would (up to
    float rounding) at ``1/S`` of the Python overhead -- which dominates for probe-sized problems.

    Args:
        x: ``(N, D)`` float features (already standardised).
        y: ``(N,)`` int64 classes in ``[0, C)``.
        n_classes: ``C``.
        settings: ``(lr, wd)`` pairs; ``wd`` is the L2 penalty ``wd/2 * ||W||^2``.
        epochs: passes over the data.
        batch_size: mini-batch size; ``0`` or ``>= N`` = full batch.
        seed: seeds the batch order.

    Returns:
        One trained ``nn.Linear(D, C)`` per setting, in eval mode.
    """
    n, d = x.shape
    models = [_zero_linear(d, n_classes) for _ in settings]
    if not models:
        return []
    gen = torch.Generator().manual_seed(seed)
    bs = n if batch_size <= 0 or batch_size >= n else batch_size
    total = max(epochs * math.ceil(n / bs), 1)
    groups = [{"params": list(m.parameters()), "lr": lr} for m, (lr, _) in zip(models, settings)]
    opt = torch.optim.AdamW(groups, weight_decay=0.0)  # decay is the explicit L2 term
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    wds = torch.tensor([wd for _, wd in settings])
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen) if bs < n else torch.arange(n)
        for start in range(0, n, bs):
            i = perm[start : start + bs]
            weight = torch.cat([m.weight for m in models])  # (S*C, D): one matmul for every model
            bias = torch.cat([m.bias for m in models])  # (S*C,)
            logits = F.linear(x[i], weight, bias).view(len(i), len(models), n_classes)  # (B, S, C)
            ce = F.cross_entropy(logits.permute(0, 2, 1), y[i, None].expand(-1, len(models)))  # mean over B and S
            penalty = (wds * weight.pow(2).view(len(models), -1).sum(dim=1)).sum()
            loss = ce * len(models) + 0.5 * penalty  # = sum over models of (mean CE + wd/2 ||W||^2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return [m.eval() for m in models]


def train_linear(
    x: Tensor,
    y: Tensor,
    n_classes: int,
    lr: float,
    wd: float,
    epochs: int = 100,
    batch_size: int = 256,
    optimizer: str = "adamw",
    seed: int = 0,
) -> nn.Linear:
    """Fit a linear classifier on (already standardised) features.

    Args:
        x: ``(N, D)`` float features.
        y: ``(N,)`` int64 classes in ``[0, C)``.
        n_classes: ``C``.
        lr: learning rate (``adamw``) or step scale (``lbfgs``).
        wd: L2 penalty on the weights.
        epochs: passes over the data (``adamw``) or max iterations / 5 (``lbfgs``).
        batch_size: mini-batch size for ``adamw``; ``0`` or ``>= N`` = full batch.
        optimizer: ``adamw`` | ``lbfgs``.
        seed: seeds the batch order (``adamw``).

    Returns:
        The trained ``nn.Linear(D, C)`` in eval mode.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{optimizer}'")
    if optimizer == "adamw":
        return train_linear_many(x, y, n_classes, [(lr, wd)], epochs, batch_size, seed)[0]
    model = _zero_linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(
        model.parameters(), lr=lr, max_iter=max(epochs, 1) * 5, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _penalised_loss(model, x, y, wd)
        loss.backward()
        return loss

    opt.step(closure)
    return model.eval()


def _fit_all(
    x: Tensor, y: Tensor, c: int, settings: list[tuple[float, float]], epochs: int, bs: int, optimizer: str, seed: int
) -> list[nn.Linear]:
    # Probe-sized matmuls (a few hundred x D x C) gain nothing from intra-op threads, and on a busy machine the
    # thread synchronisation makes them several times slower; run single-threaded and restore the setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if optimizer == "adamw":
            return train_linear_many(x, y, c, settings, epochs, bs, seed)
        return [train_linear(x, y, c, lr, wd, epochs, bs, optimizer, seed) for lr, wd in settings]
    finally:
        torch.set_num_threads(threads)


def linear_probe(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    test_labels: ArrayLike | None = None,
    n_classes: int | None = None,
    lrs: tuple[float, ...] = (0.1, 0.01, 0.001),
    wds: tuple[float, ...] = (0.0, 1e-4),
    epochs: int = 100,
    batch_size: int = 256,
    optimizer: str = "adamw",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> ProbeResult:
    """Sweep (lr, wd) on a held-out split of the training features, refit the best on all of them, evaluate.

    Args:
        train_feats: ``(N, D)`` frozen training features.
        train_labels: ``(N,)`` classes in ``[0, C)`` (drop missing labels first).
        test_feats: ``(M, D)`` evaluation features (never used for any choice).
        test_labels: ``(M,)`` classes, or ``None`` to only return scores.
        n_classes: ``C``; default ``max(train_labels) + 1``.
        lrs: learning rates to try.
        wds: weight decays to try.
        epochs: training epochs per fit.
        batch_size: mini-batch size (``adamw``).
        optimizer: ``adamw`` | ``lbfgs``.
        val_fraction: share of the training features held out for the sweep (stratified when every class has
            at least two samples and the held-out part can hold one of each).
        seed: seeds the split and the fits.

    Returns:
        :class:`ProbeResult`.

    Raises:
        ValueError: on shape mismatch, empty sweep or labels out of range.
    """
    xtr = np.asarray(train_feats, dtype=np.float32)
    ytr = np.asarray(train_labels).astype(np.int64)
    xte = np.asarray(test_feats, dtype=np.float32)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1] or ytr.shape != (xtr.shape[0],):
        raise ValueError(f"need train (N, D), labels (N,), test (M, D); got {xtr.shape}, {ytr.shape}, {xte.shape}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{optimizer}'")
    if not lrs or not wds:
        raise ValueError("linear probe sweep needs at least one lr and one wd (eval.linear_lrs, eval.linear_wds)")
    c = int(n_classes) if n_classes is not None else int(ytr.max()) + 1
    if ytr.min() < 0 or ytr.max() >= c:
        raise ValueError(f"train_labels must lie in [0, {c}); remove missing (-1) labels first")

    sweep: dict[tuple[float, float], float] = {}
    if len(lrs) * len(wds) == 1:
        best = (lrs[0], wds[0])
        sweep[best] = float("nan")
    else:
        counts = np.bincount(ytr, minlength=c)
        n_val = math.ceil(val_fraction * len(ytr))
        # stratify when every class can appear on both sides; tiny sets fall back to a plain random split
        stratify = ytr if counts[counts > 0].min() >= 2 and n_val >= (counts > 0).sum() else None
        i_fit, i_val = train_test_split(
            np.arange(len(ytr)), test_size=val_fraction, random_state=seed, stratify=stratify
        )
        std = Standardizer.fit(xtr[i_fit])
        x_fit, x_val = std(xtr[i_fit]), std(xtr[i_val])
        y_fit = torch.from_numpy(ytr[i_fit])
        settings = [(lr, wd) for lr in lrs for wd in wds]
        for key, model in zip(settings, _fit_all(x_fit, y_fit, c, settings, epochs, batch_size, optimizer, seed)):
            with torch.no_grad():
                sweep[key] = topk_accuracy(model(x_val).numpy(), ytr[i_val], 1)
        best = max(sweep, key=lambda key: sweep[key])  # first best wins ties (order of lrs, then wds)
        log.info("linear probe sweep %s -> best lr=%g wd=%g", sweep, *best)

    std = Standardizer.fit(xtr)
    (model,) = _fit_all(std(xtr), torch.from_numpy(ytr), c, [best], epochs, batch_size, optimizer, seed)
    with torch.no_grad():
        scores = model(std(xte)).numpy()
    top1 = top5 = float("nan")
    if test_labels is not None:
        yte = np.asarray(test_labels).astype(np.int64)
        top1, top5 = topk_accuracy(scores, yte, 1), topk_accuracy(scores, yte, 5)
    return ProbeResult(top1, top5, best[0], best[1], sweep[best], sweep, scores)
