"""kNN + linear probe on one train/eval split, and stratified k-fold cross-validation over one labelled collection.

:func:`evaluate_split` is the unit of evaluation: the kNN classifier (:mod:`ssl_art.eval.knn`) and the linear probe
(:mod:`ssl_art.eval.linear`) fitted on the train features and scored on the eval features. When a collection has
no separate eval split, :func:`cross_validate` runs it on every fold of scikit-learn's seeded ``StratifiedKFold``, so
each labelled sample is evaluated exactly once, and reports the mean and the standard deviation (``ddof=0``, the
``numpy``/scikit-learn ``cross_val_score(...).std()`` convention) over folds.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.model_selection import StratifiedKFold

from ssl_art.config import EvalCfg
from ssl_art.eval.knn import knn_accuracy
from ssl_art.eval.linear import linear_probe
from ssl_art.eval.metrics import MISSING

log = logging.getLogger(__name__)

METRICS = ("knn_top1", "knn_top5", "linear_top1", "linear_top5")
DEFAULT_EVAL = EvalCfg()  # the schema's defaults (a frozen dataclass: safe as an argument default)


def evaluate_split(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    eval_feats: ArrayLike,
    eval_labels: ArrayLike,
    n_classes: int,
    cfg: EvalCfg = DEFAULT_EVAL,
    seed: int = 0,
) -> dict[str, float]:
    """kNN and linear-probe accuracies of one split.

    Args:
        train_feats: ``(N, D)`` features the classifiers are fitted on.
        train_labels: ``(N,)`` classes in ``[0, C)``.
        eval_feats: ``(M, D)`` features they are scored on.
        eval_labels: ``(M,)`` classes in ``[0, C)``.
        n_classes: ``C``.
        cfg: the ``eval`` config section (``knn_*`` and ``linear_*`` hyper-parameters).
        seed: seeds the linear probe (``run.seed``).

    Returns:
        ``knn_top1``, ``knn_top5``, ``linear_top1``, ``linear_top5``, and the selected ``linear_lr``/``linear_wd``.
    """
    knn = knn_accuracy(
        train_feats,
        train_labels,
        eval_feats,
        eval_labels,
        k=cfg.knn_k,
        T=cfg.knn_t,
        n_classes=n_classes,
        backend=cfg.knn_backend,
    )
    probe = linear_probe(
        train_feats,
        train_labels,
        eval_feats,
        eval_labels,
        n_classes=n_classes,
        lrs=cfg.linear_lrs,
        wds=cfg.linear_wds,
        epochs=cfg.linear_epochs,
        batch_size=cfg.linear_batch_size,
        optimizer=cfg.linear_optimizer,
        seed=seed,
    )
    return {
        "knn_top1": knn["top1"],
        "knn_top5": knn["top5"],
        "linear_top1": probe.top1,
        "linear_top5": probe.top5,
        "linear_lr": probe.best_lr,
        "linear_wd": probe.best_wd,
    }


def stratified_folds(labels: ArrayLike, folds: int, seed: int = 0) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """``(train_idx, eval_idx)`` pairs of a shuffled, seeded ``StratifiedKFold``; eval sets partition the samples.

    Raises:
        ValueError: when ``folds < 2`` or exceeds the number of samples.
    """
    y = np.asarray(labels).astype(np.int64)
    if folds < 2:
        raise ValueError(f"eval.folds must be >= 2 for cross-validation, got {folds}")
    if folds > len(y):
        raise ValueError(f"eval.folds={folds} exceeds the {len(y)} labelled samples")
    counts = np.bincount(y)
    if counts[counts > 0].min() < folds:
        log.warning(
            "smallest class has %d samples < %d folds; some folds will miss it", counts[counts > 0].min(), folds
        )
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr.astype(np.int64), ev.astype(np.int64)) for tr, ev in skf.split(np.zeros(len(y)), y)]


def cross_validate(
    feats: ArrayLike,
    labels: ArrayLike,
    n_classes: int | None = None,
    cfg: EvalCfg = DEFAULT_EVAL,
    seed: int = 0,
) -> dict[str, object]:
    """Stratified k-fold evaluation of one labelled feature set.

    Args:
        feats: ``(N, D)`` features.
        labels: ``(N,)`` classes; rows labelled ``-1`` (missing) are dropped first.
        n_classes: ``C``; default ``max(labels) + 1``.
        cfg: the ``eval`` config section (``folds`` and the classifiers' hyper-parameters).
        seed: seeds the folds and the linear probe (``run.seed``).

    Returns:
        ``{metric: mean}`` and ``{metric + "_std": std}`` for each of :data:`METRICS`, plus ``folds`` (a list of
        per-fold dicts with ``n_train``/``n_eval``), ``n_train`` and ``n_eval`` (mean fold sizes, rounded).
    """
    x = np.asarray(feats, dtype=np.float32)
    y = np.asarray(labels).astype(np.int64)
    keep = y != MISSING
    if not keep.all():
        log.info("cross-validation: dropping %d samples without a label", int((~keep).sum()))
        x, y = x[keep], y[keep]
    c = int(n_classes) if n_classes is not None else int(y.max()) + 1
    per_fold: list[dict[str, float]] = []
    folds = cfg.folds
    for i, (tr, ev) in enumerate(stratified_folds(y, folds, seed)):
        res = evaluate_split(x[tr], y[tr], x[ev], y[ev], c, cfg, seed)
        res.update(n_train=float(len(tr)), n_eval=float(len(ev)))
        log.info("fold %d/%d: %s", i + 1, folds, {k: round(res[k], 4) for k in METRICS})
        per_fold.append(res)
    out: dict[str, object] = {}
    for key in METRICS:
        vals = np.array([f[key] for f in per_fold])
        out[key] = float(vals.mean())
        out[f"{key}_std"] = float(vals.std())
    out["n_train"] = int(round(np.mean([f["n_train"] for f in per_fold])))
    out["n_eval"] = int(round(np.mean([f["n_eval"] for f in per_fold])))
    out["folds"] = per_fold
    return out
