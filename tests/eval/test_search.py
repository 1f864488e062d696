"""The one normalised-search helper against a plain numpy reference: top-k rows and cosine scores, any batch size."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_art.eval.search import BLAS_MIN_QUERIES, cosine_search, flat_index, l2_normalise, search_index


def numpy_cosine_topk(bank: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: float64 cosine of every pair, sorted descending (stable)."""
    b = bank.astype(np.float64)
    qq = q.astype(np.float64)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    qq /= np.maximum(np.linalg.norm(qq, axis=1, keepdims=True), 1e-12)
    sim = qq @ b.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order


def test_l2_normalise_rows_dtype_and_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]], dtype=np.float64)[:, ::-1]  # non-contiguous float64
    y = l2_normalise(x)
    assert y.dtype == np.float32 and y.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(y, [[0.8, 0.6], [0.0, 0.0], [0.0, -1.0]], atol=1e-7)


@pytest.mark.parametrize("n_queries", [1, BLAS_MIN_QUERIES - 1, BLAS_MIN_QUERIES, 37])
@pytest.mark.parametrize("batch_size", [5, 1024])
def test_cosine_search_equals_numpy(n_queries: int, batch_size: int) -> None:
    rng = np.random.default_rng(n_queries * 7 + batch_size)
    bank = (rng.standard_normal((400, 24)) * rng.uniform(0.2, 5.0, (400, 1))).astype(np.float16)  # memmap-like
    q = rng.standard_normal((n_queries, 24)).astype(np.float32) * 3.0
    sims, rows = cosine_search(bank, q, 7, batch_size=batch_size, chunk=64)  # bank added in 7 chunks
    ref_s, ref_r = numpy_cosine_topk(bank.astype(np.float32), q, 7)
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    assert sims.dtype == np.float32 and rows.dtype == np.int64


def test_flat_index_search_restores_faiss_blas_threshold() -> None:
    import faiss

    rng = np.random.default_rng(0)
    bank = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    before = faiss.cvar.distance_compute_blas_threshold
    sims, rows = search_index(flat_index(bank), l2_normalise(q), 4)
    assert faiss.cvar.distance_compute_blas_threshold == before
    ref_s, ref_r = numpy_cosine_topk(bank, q, 4)
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
