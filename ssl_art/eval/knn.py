"""Weighted k-nearest-neighbour classification of frozen features (the DINO kNN protocol, on FAISS).

Features are L2-normalised and compared by inner product (cosine similarity). Each query's ``k`` nearest bank
items vote for their class with weight ``exp(sim / T)`` (Wu et al. 2018; Caron et al. 2021, ``eval_knn.py``
``knn_classifier``). Search is :func:`ssl_art.eval.search.cosine_search`: the bank is added to a FAISS
``IndexFlatIP`` chunk by chunk, so only the index holds it, and queries are searched in batches, so memory is one
bank plus ``batch_size x k``. A pure-torch path (``backend="torch"``) gives the same result where FAISS is missing
or for debugging; ``"auto"`` prefers FAISS.

Votes are returned normalised to sum to one per query (a probability over classes). The shift by each query's
top similarity before exponentiating changes nothing after normalisation but keeps ``exp`` finite for small ``T``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from ssl_art.eval.metrics import topk_accuracy
from ssl_art.eval.search import cosine_search, l2_normalise

log = logging.getLogger(__name__)

BACKENDS = ("auto", "faiss", "torch")


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return False
    return True


def _search_torch(
    bank: NDArray[np.float32], queries: NDArray[np.float32], k: int, batch_size: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    b = torch.from_numpy(l2_normalise(bank))
    sims = np.empty((queries.shape[0], k), dtype=np.float32)
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], batch_size):
        q = torch.from_numpy(l2_normalise(queries[start : start + batch_size]))
        s, i = (q @ b.T).topk(k, dim=1, largest=True, sorted=True)
        sims[start : start + batch_size] = s.numpy()
        idx[start : start + batch_size] = i.numpy()
    return sims, idx


def knn_classify(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    k: int = 20,
    T: float = 0.07,
    n_classes: int | None = None,
    batch_size: int = 1024,
    backend: str = "auto",
) -> NDArray[np.float32]:
    """Class probabilities of ``test_feats`` from a temperature-weighted vote of their ``k`` nearest bank items.

    Args:
        train_feats: ``(N, D)`` bank features (any scale; normalised here).
        train_labels: ``(N,)`` integer classes in ``[0, C)``; drop missing (``-1``) labels before calling.
        test_feats: ``(M, D)`` query features.
        k: neighbours per query; must be ``<= N``.
        T: temperature of the vote weights ``exp(sim / T)``.
        n_classes: ``C``; default ``max(train_labels) + 1``.
        batch_size: queries searched at once.
        backend: ``auto`` | ``faiss`` | ``torch``.

    Returns:
        ``(M, C)`` float32 vote shares, each row summing to 1.

    Raises:
        ValueError: on bad shapes, labels out of range, ``k`` outside ``[1, N]``, ``T <= 0`` or an unknown backend.
    """
    bank = np.asarray(train_feats, dtype=np.float32)
    queries = np.asarray(test_feats, dtype=np.float32)
    labels = np.asarray(train_labels).astype(np.int64)
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"train_feats (N, D) and test_feats (M, D) must share D, got {bank.shape}, {queries.shape}")
    if labels.shape != (bank.shape[0],):
        raise ValueError(f"train_labels must be ({bank.shape[0]},), got {labels.shape}")
    c = int(n_classes) if n_classes is not None else int(labels.max(initial=-1)) + 1
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"train_labels must lie in [0, {c}); remove missing (-1) labels first")
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k={k} must be in [1, bank size={bank.shape[0]}]; lower eval.knn_k")
    if T <= 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if backend == "auto":
        backend = "faiss" if _faiss_available() else "torch"
    search = cosine_search if backend == "faiss" else _search_torch
    sims, idx = search(bank, queries, k, batch_size)

    weights = np.exp((sims - sims[:, :1]) / T)  # (M, k); rows sorted, so column 0 is the max
    votes = np.zeros((queries.shape[0], c), dtype=np.float64)
    np.add.at(votes, (np.arange(queries.shape[0])[:, None], labels[idx]), weights)
    votes /= votes.sum(axis=1, keepdims=True)
    return votes.astype(np.float32)


def knn_accuracy(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    test_labels: ArrayLike,
    k: int = 20,
    T: float = 0.07,
    n_classes: int | None = None,
    backend: str = "auto",
) -> dict[str, float]:
    """``{"top1", "top5"}`` of :func:`knn_classify` on labelled queries; ``k`` is capped at the bank size (logged)."""
    n_bank = np.asarray(train_labels).shape[0]
    if k > n_bank:
        log.warning("knn: k=%d > bank size %d; using k=%d", k, n_bank, n_bank)
        k = n_bank
    probs = knn_classify(train_feats, train_labels, test_feats, k=k, T=T, n_classes=n_classes, backend=backend)
    return {"top1": topk_accuracy(probs, test_labels, 1), "top5": topk_accuracy(probs, test_labels, 5)}
