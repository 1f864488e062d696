"""Normalised exact search: L2-normalise rows, then a flat FAISS inner-product search (inner product = cosine).

The one implementation behind the kNN classifier (:mod:`ssl_art.eval.knn`), the retrieval index
(:mod:`ssl_art.retrieval.index`) and collection analysis (:mod:`ssl_art.retrieval.analysis`). A bank is normalised
and added chunk by chunk, so only the FAISS index holds a full copy (a memmap is never loaded whole).

*Batched flat search speed.* FAISS 1.15 computes exhaustive inner products with BLAS ``sgemm`` only when
``n_queries * D >= faiss.cvar.distance_compute_blas_threshold`` (128000, i.e. 250 queries at D=512); below that
each query streams the whole database through its SIMD scan, which is memory-bound (about 10 ms per query over 100k
x 512 float32 on a 2-core box, for 1 query or 200). :func:`search_index` lowers the threshold to
``BLAS_MIN_QUERIES * D`` for the duration of a flat search, so a batch of 8+ queries shares each database block
through sgemm: 8x faster per query for a 100-query batch at 100k (``benchmarks/retrieval.py``,
``docs/benchmarks_retrieval.md``). The threshold is a process-wide FAISS global, so it is changed under a lock and
always restored: concurrent searches (the threaded web app) never see each other's setting. FAISS's own OpenMP
threads are left to the caller (``ssl-art --threads``, ``faiss.omp_set_num_threads``). FAISS is imported on first
use, so :func:`l2_normalise` (and the kNN torch fallback) work where it is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import faiss

BLAS_MIN_QUERIES = 8  # flat search of this many queries or more goes through sgemm (crossover ~4 at 100k x 512)
_BLAS_LOCK = threading.Lock()


def l2_normalise(x: ArrayLike) -> NDArray[np.float32]:
    """Row-wise L2 normalisation to C-contiguous float32 ``(N, D)``; zero rows stay zero."""
    y = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12))


@contextmanager
def blas_threshold(n_queries: int) -> Iterator[None]:
    """Temporarily set FAISS's global BLAS switch (in ``n_queries * D`` units); thread-safe, always restored."""
    import faiss

    with _BLAS_LOCK:
        old = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = n_queries
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = old


def search_index(
    index: faiss.Index, q: NDArray[Any], k: int, params: faiss.SearchParameters | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``index.search`` with float32 C-contiguous queries, and batched flat searches routed through BLAS.

    Args:
        index: any FAISS index; only ``IndexFlat`` searches of ``>= BLAS_MIN_QUERIES`` queries change path.
        q: ``(Q, D)`` queries (any float dtype/layout; copied only when needed).
        k: neighbours per query.
        params: optional ``SearchParameters`` (``nprobe``, ``efSearch``, ID selector).

    Returns:
        ``(scores (Q, k), positions (Q, k))`` exactly as FAISS returns them.
    """
    import faiss

    q = np.ascontiguousarray(q, dtype=np.float32)
    if isinstance(index, faiss.IndexFlat) and len(q) >= BLAS_MIN_QUERIES:
        with blas_threshold(BLAS_MIN_QUERIES * index.d):
            return index.search(q, k, params=params)
    return index.search(q, k, params=params)


def flat_index(bank: NDArray[Any], chunk: int = 65_536) -> faiss.IndexFlatIP:
    """Exact inner-product index over the L2-normalised rows of ``bank`` ``(N, D)``, added ``chunk`` rows at a time."""
    import faiss

    index = faiss.IndexFlatIP(int(bank.shape[1]))
    for start in range(0, len(bank), chunk):
        index.add(l2_normalise(bank[start : start + chunk]))
    return index


def cosine_search(
    bank: NDArray[Any], queries: NDArray[Any], k: int, batch_size: int = 1024, chunk: int = 65_536
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact top-``k`` cosine neighbours in ``bank`` of every query row, best first.

    Args:
        bank: ``(N, D)`` vectors (any scale and float dtype; normalised here, ``chunk`` rows at a time).
        queries: ``(M, D)`` query vectors (normalised here).
        k: neighbours per query (``<= N``).
        batch_size: queries searched at once (memory is one bank plus ``batch_size x k``).
        chunk: bank rows normalised and added at a time.

    Returns:
        ``(sims (M, k), rows (M, k))``: cosine similarities, best first, and bank rows.
    """
    index = flat_index(bank, chunk)
    sims = np.empty((len(queries), k), dtype=np.float32)
    idx = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        s, i = search_index(index, l2_normalise(queries[start : start + batch_size]), k)
        sims[start : start + batch_size], idx[start : start + batch_size] = s, i
    return sims, idx
