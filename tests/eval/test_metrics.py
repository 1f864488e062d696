"""Classification metrics against scikit-learn, retrieval metrics against hand examples and a naive loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from ssl_art.eval import metrics as M


@pytest.fixture
def preds() -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(0)
    c = 5
    y_true = rng.integers(0, c, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, c, 200))
    return y_true, y_pred, c


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_topk_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.normal(size=(300, 6))
    y = rng.integers(0, 6, 300)
    expected = skm.top_k_accuracy_score(y, scores, k=k, labels=np.arange(6))
    assert M.topk_accuracy(scores, y, k) == pytest.approx(expected)


def test_topk_hand_example_and_clipping() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    y = np.array([1, 1, 0])
    assert M.topk_accuracy(scores, y, 1) == pytest.approx(1 / 3)
    assert M.topk_accuracy(scores, y, 2) == pytest.approx(2 / 3)
    assert M.topk_accuracy(scores, y, 5) == 1.0  # k clipped to C
    with pytest.raises(ValueError):
        M.topk_accuracy(scores, y, 0)


def test_topk_ties_count_against_the_true_class() -> None:
    # kNN votes: the true class (2) got none, like two others; only two classes received votes
    votes = np.array([[0.6, 0.4, 0.0, 0.0, 0.0]])
    assert M.topk_accuracy(votes, np.array([2]), 2) == 0.0
    assert M.topk_accuracy(votes, np.array([2]), 4) == 0.0  # still tied with classes 3 and 4
    assert M.topk_accuracy(votes, np.array([2]), 5) == 1.0  # k covers every class
    assert M.topk_accuracy(np.array([[0.5, 0.5]]), np.array([0]), 1) == 0.0


def test_confusion_balanced_f1_precision_recall_match_sklearn(preds: tuple[np.ndarray, np.ndarray, int]) -> None:
    y_true, y_pred, c = preds
    np.testing.assert_array_equal(M.confusion_matrix(y_true, y_pred, c), skm.confusion_matrix(y_true, y_pred))
    assert M.balanced_accuracy(y_true, y_pred, c) == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert M.macro_f1(y_true, y_pred, c) == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    p, r = M.precision_recall_per_class(y_true, y_pred, c)
    sp, sr, _, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=np.arange(c), zero_division=0)
    np.testing.assert_allclose(p, sp)
    np.testing.assert_allclose(r, sr)


def test_classification_metrics_hand_example_with_unpredicted_class() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 1])  # class 2 never predicted
    cm = M.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    assert M.balanced_accuracy(y_true, y_pred) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # F1: class0 p=1 r=.5 -> 2/3; class1 p=.5 r=1 -> 2/3; class2 -> 0
    assert M.macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    report = M.classification_report(np.eye(3)[y_pred], y_true)
    assert report["top1"] == pytest.approx(3 / 5)


def test_ranking_metrics_hand_example() -> None:
    # query 0 (label 0, 2 relevant): hits at ranks 1 and 3 -> AP = (1/1 + 2/3) / min(3, 2) = 5/6
    # query 1 (label 1, 1 relevant): hit at rank 3 -> AP = (1/3) / 1
    retrieved = np.array([[0, 1, 0], [0, 0, 1]])
    out = M.ranking_metrics(retrieved, np.array([0, 1]), np.array([2, 1]), k=3)
    assert out["map@k"] == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert out["recall@k"] == pytest.approx(1.0)  # both queries have a hit
    assert out["recall_at_k"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    assert out["precision@k"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    # k=1: only query 0 hits
    out1 = M.ranking_metrics(retrieved, np.array([0, 1]), np.array([2, 1]), k=1)
    assert out1["map@k"] == pytest.approx(0.5)
    assert out1["recall@k"] == pytest.approx(0.5)
    # a class larger than k: normaliser is k, so a perfect list scores 1
    perfect = M.ranking_metrics(np.array([[3, 3]]), np.array([3]), np.array([10]), k=2)
    assert perfect["map@k"] == perfect["recall_at_k"] == perfect["precision@k"] == 1.0


def test_retrieval_metrics_hand_geometry() -> None:
    # points on a unit circle: angles make the ranking explicit
    angles = np.array([0.0, 0.1, 0.3, 1.6, 1.7])
    emb = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1], [2], [3], [4], [5]])  # scale is ignored
    labels = np.array([0, 0, 1, 1, 1])
    out = M.retrieval_metrics(emb, labels, k=2)
    # rankings (k=2): q0 -> 1,2 (rel: 1,0)  q1 -> 0,2 (1,0)  q2 -> 1,0 (0,0)  q3 -> 4,2 (1,1)  q4 -> 3,2 (1,1)
    ap = [1 / 1, 1 / 1, 0.0, 1.0, 1.0]
    assert out["map@k"] == pytest.approx(np.mean(ap))
    assert out["recall@k"] == pytest.approx(4 / 5)
    assert out["precision@k"] == pytest.approx(np.mean([0.5, 0.5, 0, 1, 1]))
    assert out["n_queries"] == 5


def _naive_retrieval(emb: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    aps, hits, recs, precs = [], [], [], []
    for q in range(len(x)):
        if labels[q] < 0:
            continue
        n_rel = sum(1 for j in range(len(x)) if j != q and labels[j] == labels[q])
        if n_rel == 0:
            continue
        sims = [(float(x[q] @ x[j]), j) for j in range(len(x)) if j != q]
        ranked = [j for _, j in sorted(sims, key=lambda t: -t[0])][:k]
        rel = [1 if labels[j] == labels[q] else 0 for j in ranked]
        ap, found = 0.0, 0
        for i, r in enumerate(rel, start=1):
            if r:
                found += 1
                ap += found / i
        aps.append(ap / min(k, n_rel))
        hits.append(1.0 if found else 0.0)
        recs.append(found / min(k, n_rel))
        precs.append(found / k)
    return {
        "map@k": np.mean(aps),
        "recall@k": np.mean(hits),
        "recall_at_k": np.mean(recs),
        "precision@k": np.mean(precs),
    }


@pytest.mark.parametrize("k", [1, 4, 10])
def test_retrieval_metrics_match_naive_loop(k: int) -> None:
    rng = np.random.default_rng(k)
    emb = rng.normal(size=(60, 8))
    labels = rng.integers(0, 4, 60)
    labels[:3] = -1  # missing labels: not queries, never relevant
    labels[3] = 9  # a singleton class: no relevant item, skipped
    out = M.retrieval_metrics(emb, labels, k, chunk=7)  # chunking must not matter
    ref = _naive_retrieval(emb, labels, k)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value), key
    assert out["n_queries"] == 60 - 4
    assert M.recall_at_k(emb, labels, k) == pytest.approx(ref["recall_at_k"])


def test_retrieval_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be"):
        M.retrieval_metrics(np.eye(3), np.array([0, 0, 1]), k=3)
