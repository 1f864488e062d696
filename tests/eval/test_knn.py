"""The FAISS kNN classifier against a naive per-query loop (DINO weighted vote), and FAISS == torch fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssl_art.eval.knn import knn_accuracy, knn_classify


def _naive_knn(bank: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int, T: float, c: int) -> np.ndarray:
    """One query at a time: cosine similarity, sort, weight the top k by exp(sim / T), normalise the class votes."""
    out = np.zeros((len(queries), c))
    for qi, q in enumerate(queries):
        sims = []
        for bi, b in enumerate(bank):
            sims.append((float(q @ b) / (np.linalg.norm(q) * np.linalg.norm(b)), bi))
        sims.sort(key=lambda t: -t[0])
        for s, bi in sims[:k]:
            out[qi, labels[bi]] += math.exp(s / T)
        out[qi] /= out[qi].sum()
    return out


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(80, 16)).astype(np.float32) * rng.uniform(0.5, 3, size=(80, 1)).astype(np.float32)
    labels = rng.integers(0, 5, 80)
    queries = rng.normal(size=(25, 16)).astype(np.float32)
    return bank, labels, queries


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize(("k", "T"), [(1, 0.07), (5, 0.07), (20, 0.07), (5, 0.5), (20, 1.0), (80, 0.2)])
def test_knn_matches_naive_reference(data, backend: str, k: int, T: float) -> None:  # type: ignore[no-untyped-def]
    bank, labels, queries = data
    probs = knn_classify(bank, labels, queries, k=k, T=T, n_classes=6, batch_size=7, backend=backend)
    ref = _naive_knn(bank.astype(np.float64), labels, queries.astype(np.float64), k, T, 6)
    assert probs.shape == (25, 6)
    np.testing.assert_allclose(probs, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert np.all(probs[:, 5] == 0)  # class 5 has no bank item


def test_faiss_equals_torch_and_batching_is_invisible(data) -> None:  # type: ignore[no-untyped-def]
    bank, labels, queries = data
    a = knn_classify(bank, labels, queries, k=10, backend="faiss", batch_size=1000)
    b = knn_classify(bank, labels, queries, k=10, backend="torch", batch_size=3)
    c = knn_classify(bank, labels, queries, k=10, backend="faiss", batch_size=1)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_small_temperature_stays_finite(data) -> None:  # type: ignore[no-untyped-def]
    bank, labels, queries = data
    probs = knn_classify(bank, labels, queries, k=10, T=1e-3)
    assert np.isfinite(probs).all()
    # T -> 0 is the 1-NN vote
    np.testing.assert_array_equal(probs.argmax(1), knn_classify(bank, labels, queries, k=1).argmax(1))


def test_knn_classifies_clusters_and_self_retrieval(data) -> None:  # type: ignore[no-untyped-def]
    bank, labels, _ = data
    # querying the bank itself with k=1 returns each item's own label
    probs = knn_classify(bank, labels, bank, k=1)
    np.testing.assert_array_equal(probs.argmax(1), labels)
    acc = knn_accuracy(bank, labels, bank, labels, k=1)
    assert acc["top1"] == 1.0


def test_knn_errors(data) -> None:  # type: ignore[no-untyped-def]
    bank, labels, queries = data
    with pytest.raises(ValueError, match="bank size"):
        knn_classify(bank, labels, queries, k=81)
    with pytest.raises(ValueError, match="missing"):
        knn_classify(bank, np.where(labels == 0, -1, labels), queries, k=3)
    with pytest.raises(ValueError, match="backend"):
        knn_classify(bank, labels, queries, backend="gpu")
    with pytest.raises(ValueError, match="share D"):
        knn_classify(bank, labels, queries[:, :3])
    with pytest.raises(ValueError, match="T must be"):
        knn_classify(bank, labels, queries, T=0.0)
