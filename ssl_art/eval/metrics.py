"""Classification and retrieval metrics on numpy arrays, shared by evaluation, fine-tuning and retrieval.

Classification: top-k accuracy from a score matrix, balanced accuracy, macro-F1, per-class precision/recall and the
confusion matrix (rows = true class, columns = predicted class, as in scikit-learn). Retrieval: leave-one-out ranking
of a collection against itself by cosine similarity, where an item is *relevant* to a query when it has the same
label. Two recall definitions are common and both are provided, because they answer different questions:

* ``recall@k`` ("hit rate", the metric-learning convention of e.g. Musgrave et al. 2020): the fraction of queries
  with at least one relevant item among the top ``k``;
* ``recall_at_k`` (the information-retrieval convention, normalised so that a perfect ranking scores 1 even when a
  class has more than ``k`` members): relevant retrieved in the top ``k`` divided by ``min(k, n_relevant)``.

``map@k`` is the mean over queries of AP@k = ``sum_i P@i * rel_i / min(k, n_relevant)`` for ``i = 1..k``.
``precision@k`` is relevant retrieved in the top ``k`` divided by ``k``. Queries whose label is missing (``-1``) or
that have no relevant item besides themselves are left out of every average (their AP is undefined); missing-label
items still sit in the gallery, where they are never relevant.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

MISSING = -1  # label value meaning "no label" (Collection.targets convention)


# ----------------------------------------------------------------------------------------- classification


def topk_accuracy(scores: ArrayLike, targets: ArrayLike, k: int = 1) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores (ties with it count as misses).

    Args:
        scores: ``(N, C)`` class scores or probabilities.
        targets: ``(N,)`` integer classes in ``[0, C)``.
        k: how many top classes count; clipped to ``C`` (so top-5 on 3 classes is 1.0).

    Returns:
        Accuracy in ``[0, 1]``; ``nan`` for ``N == 0``.

    Raises:
        ValueError: on shape mismatch or ``k < 1``.
    """
    s = np.asarray(scores)
    t = np.asarray(targets).astype(np.int64)
    if s.ndim != 2 or t.shape != (s.shape[0],):
        raise ValueError(f"scores must be (N, C) and targets (N,), got {s.shape} and {t.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if s.shape[0] == 0:
        return float("nan")
    k = min(k, s.shape[1])
    # ties count against the true class: a kNN class with zero votes is not "in the top 5" just because fewer
    # than 5 classes received votes (an arbitrary tie-break, as in torch.topk, would make top-k optimistic)
    true_score = s[np.arange(len(t)), t]
    n_at_least = (s >= true_score[:, None]).sum(axis=1) - 1  # other classes scoring >= the true one
    return float((n_at_least < k).mean())


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> NDArray[np.int64]:
    """``(C, C)`` counts; entry ``[i, j]`` = samples of true class ``i`` predicted as ``j`` (sklearn's layout).

    Args:
        y_true: ``(N,)`` integer classes.
        y_pred: ``(N,)`` integer classes.
        n_classes: ``C``; default ``max(label) + 1``.
    """
    t = np.asarray(y_true).astype(np.int64)
    p = np.asarray(y_pred).astype(np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {t.shape} and {p.shape}")
    c = n_classes if n_classes is not None else int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= c):
        raise ValueError(f"labels must be in [0, {c}) (missing labels must be removed before scoring)")
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def precision_recall_per_class(
    y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-class precision and recall, each ``(C,)``; a class never predicted (or never present) scores 0."""
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    return precision, recall


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (sklearn's ``balanced_accuracy_score``)."""
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    actual = cm.sum(axis=1)
    present = actual > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / actual[present]).mean())


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over classes present in ``y_true`` or ``y_pred`` (sklearn ``average='macro'``).

    A class with zero precision and recall has F1 = 0.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    precision, recall = precision_recall_per_class(y_true, y_pred, cm.shape[0])
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    seen = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(f1[seen].mean()) if seen.any() else float("nan")


def classification_report(scores: ArrayLike, targets: ArrayLike) -> dict[str, float]:
    """The scalar metrics of a ``(N, C)`` score matrix: top1, top5, balanced_acc, macro_f1."""
    s = np.asarray(scores)
    t = np.asarray(targets).astype(np.int64)
    pred = s.argmax(axis=1)
    c = s.shape[1]
    return {
        "top1": topk_accuracy(s, t, 1),
        "top5": topk_accuracy(s, t, 5),
        "balanced_acc": balanced_accuracy(t, pred, c),
        "macro_f1": macro_f1(t, pred, c),
    }


# ---------------------------------------------------------------------------------------------- retrieval


def ranking_metrics(
    retrieved_labels: ArrayLike, query_labels: ArrayLike, n_relevant: ArrayLike, k: int
) -> dict[str, float]:
    """Retrieval metrics from ranked result lists (for callers that ranked with their own index, e.g. FAISS).

    Args:
        retrieved_labels: ``(Q, >=k)`` labels of each query's results, best first (query itself excluded).
        query_labels: ``(Q,)`` label of each query.
        n_relevant: ``(Q,)`` number of relevant items in the gallery for each query (query itself excluded).
        k: cut-off.

    Returns:
        ``{"map@k", "recall@k", "recall_at_k", "precision@k", "n_queries"}`` (see the module docstring); queries with
        a missing label or ``n_relevant == 0`` are skipped; all ``nan`` when none is left.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    r = np.asarray(retrieved_labels)
    q = np.asarray(query_labels)
    n_rel = np.asarray(n_relevant).astype(np.float64)
    if r.ndim != 2 or r.shape[1] < k or q.shape != (r.shape[0],) or n_rel.shape != q.shape:
        raise ValueError(
            f"need retrieved (Q, >={k}), query (Q,), n_relevant (Q,); got {r.shape}, {q.shape}, {n_rel.shape}"
        )
    keep = (q != MISSING) & (n_rel > 0)
    if not keep.any():
        nan = float("nan")
        return {"map@k": nan, "recall@k": nan, "recall_at_k": nan, "precision@k": nan, "n_queries": 0.0}
    rel = (r[keep, :k] == q[keep, None]).astype(np.float64)  # (Q', k)
    n_rel = n_rel[keep]
    norm = np.minimum(k, n_rel)
    hits = rel.cumsum(axis=1)
    prec_at_i = hits / np.arange(1, k + 1)
    ap = (prec_at_i * rel).sum(axis=1) / norm
    return {
        "map@k": float(ap.mean()),
        "recall@k": float((hits[:, -1] > 0).mean()),
        "recall_at_k": float((hits[:, -1] / norm).mean()),
        "precision@k": float((hits[:, -1] / k).mean()),
        "n_queries": float(keep.sum()),
    }


def retrieval_metrics(emb: ArrayLike, labels: ArrayLike, k: int = 10, chunk: int = 1024) -> dict[str, float]:
    """Leave-one-out retrieval of a collection against itself by cosine similarity.

    Each item queries all the others; an item is relevant when its label equals the query's. Ties in similarity are
    broken by index (stable sort), so results are deterministic.

    Args:
        emb: ``(N, D)`` embeddings (normalised here; need not be on input).
        labels: ``(N,)`` integer labels, ``-1`` = missing.
        k: cut-off; must be ``< N``.
        chunk: queries scored at once (bounds memory to ``chunk x N`` floats).

    Returns:
        ``{"map@k", "recall@k", "recall_at_k", "precision@k", "n_queries"}`` as in :func:`ranking_metrics`.

    Raises:
        ValueError: on shape mismatch or ``k >= N``.
    """
    x = np.asarray(emb, dtype=np.float32)
    y = np.asarray(labels).astype(np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"emb must be (N, D) and labels (N,), got {x.shape} and {y.shape}")
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}] for leave-one-out retrieval, got {k}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    counts = np.bincount(y[y != MISSING], minlength=1) if (y != MISSING).any() else np.zeros(1, dtype=np.int64)
    n_relevant = np.where(y != MISSING, counts[np.clip(y, 0, None)] - 1, 0)
    retrieved = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sim = x[start:stop] @ x.T  # (b, N)
        sim[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # leave the query out
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        retrieved[start:stop] = y[order]
    return ranking_metrics(retrieved, y, n_relevant, k)


def recall_at_k(emb: ArrayLike, labels: ArrayLike, k: int = 10) -> float:
    """Normalised recall: relevant retrieved in the top ``k`` / ``min(k, n_relevant)``, averaged (leave-one-out)."""
    return retrieval_metrics(emb, labels, k)["recall_at_k"]
