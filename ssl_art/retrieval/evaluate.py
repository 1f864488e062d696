"""Retrieval quality of an embedding export: leave-one-out mAP@k / recall@k / precision@k, and index recall.

"Relevant" means "same label" in the chosen manifest column (style, artist...). The overall numbers come from
:func:`ssl_art.eval.metrics.retrieval_metrics` (the project's one implementation); the per-label breakdown scores
the same exact cosine kNN lists with :func:`ssl_art.eval.metrics.ranking_metrics` restricted to that label's
queries. :func:`approximate_recall` measures how many of the exact top-k an approximate index returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ssl_art.eval.metrics import ranking_metrics, retrieval_metrics
from ssl_art.retrieval.analysis import self_knn
from ssl_art.retrieval.embed import MANIFEST_FILE, open_embeddings
from ssl_art.retrieval.index import RetrievalIndex
from ssl_art.retrieval.manifest import read_manifest


def approximate_recall(approx_rows: NDArray[Any], exact_rows: NDArray[Any]) -> float:
    """Mean over queries of ``|approx top-k & exact top-k| / k`` (both ``(Q, k)``; ``-1`` padding never matches)."""
    a, e = np.asarray(approx_rows), np.asarray(exact_rows)
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {e.shape}")
    hits = [len(set(x[x >= 0].tolist()) & set(y[y >= 0].tolist())) for x, y in zip(a, e)]
    return float(np.mean(hits) / a.shape[1])


def embedding_metrics(
    emb_dir: str | Path, label_column: str = "label", k: int = 10, index_dir: str | Path | None = None, seed: int = 0
) -> dict[str, Any]:
    """Leave-one-out retrieval metrics of an ``ssl-art embed`` folder, overall and per label.

    Args:
        emb_dir: embeddings folder.
        label_column: manifest column defining relevance.
        k: cut-off.
        index_dir: optional saved index; adds ``index_recall@k`` (vs exact search, on up to 1000 queries).
        seed: query sample seed for the index recall.

    Returns:
        ``{"overall": {...}, "per_label": {label: {...}}, "kind", "model_hash", "n"}`` (+ ``index_recall@k``).
    """
    emb, meta = open_embeddings(emb_dir)
    _, cols = read_manifest(Path(emb_dir) / MANIFEST_FILE)
    if label_column not in cols:
        raise ValueError(f"no label column '{label_column}' in {emb_dir}; columns: {', '.join(cols) or '-'}")
    good = np.setdiff1d(np.arange(meta.n), meta.bad_rows)
    x = np.asarray(emb[good], dtype=np.float32)
    raw = [cols[label_column][i] for i in good]
    names = sorted({v for v in raw if v is not None})
    y = np.array([names.index(v) if v is not None else -1 for v in raw], dtype=np.int64)
    out: dict[str, Any] = {"kind": meta.kind, "model_hash": meta.model_hash, "n": int(len(x)), "k": k}
    out["overall"] = retrieval_metrics(x, y, k)
    nbrs = self_knn(x, k)
    counts = np.bincount(y[y >= 0], minlength=len(names))
    n_rel = np.where(y >= 0, counts[np.clip(y, 0, None)] - 1, 0)
    out["per_label"] = {}
    for c, name in enumerate(names):
        m = y == c
        out["per_label"][name] = ranking_metrics(y[nbrs.idx[m]], y[m], n_rel[m], k)
    if index_dir:
        index = RetrievalIndex.load(index_dir, model_hash=meta.model_hash)
        q = np.random.default_rng(seed).choice(len(x), size=min(1000, len(x)), replace=False)
        _, rows = index.search(x[q], k + 1)
        # exact reference on the same rows, self included (the index also returns the query itself)
        exact = np.concatenate([good[q][:, None], good[nbrs.idx[q]]], axis=1)[:, : k + 1]
        out[f"index_recall@{k}"] = approximate_recall(rows, exact)
        out["index_kind"] = index.params.index_kind
    return out
