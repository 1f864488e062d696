"""Collection analysis: planted mislabel / near duplicate / outlier are found; scores match naive formulas."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ssl_art.config import RetrievalCfg
from ssl_art.retrieval.analysis import (
    Neighbours,
    analyse_embeddings,
    knn_vote,
    near_duplicates,
    outlier_scores,
    self_knn,
)
from ssl_art.retrieval.embed import write_embeddings
from ssl_art.retrieval.index import RetrievalIndex


def planted(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """3 tight clusters of 30 in 32-d; row 5 (cluster a) is labelled 'c'; row 40 duplicates row 41; row 70 is
    an outlier of class 'c'."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 32)) * 3
    y = np.repeat(np.arange(3), 30)
    x = centres[y] + rng.standard_normal((90, 32)) * 0.8
    x[40] = x[41] + rng.standard_normal(32) * 1e-3
    x[70] = centres[2] * 0.2 + rng.standard_normal(32) * 3
    labels = [["a", "b", "c"][c] for c in y]
    labels[5] = "c"
    return x.astype(np.float32), labels


def naive_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def test_self_knn_matches_naive() -> None:
    x, _ = planted()
    nb = self_knn(x, 6, chunk=17)
    s, o = naive_knn(x, 6)
    np.testing.assert_array_equal(nb.idx, o)
    np.testing.assert_allclose(nb.sims, s, atol=1e-5)
    with pytest.raises(ValueError, match=r"k must be in \[1, N-1\]"):
        self_knn(x[:3], 3)


def test_outlier_scores_match_naive_formulas() -> None:
    x, labels = planted()
    y = np.array([{"a": 0, "b": 1, "c": 2}[v] for v in labels])
    nb = self_knn(x, 5)
    sc = outlier_scores(x, y, nb)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in (0, 5, 70):
        members = xn[y == y[i]]
        mu = members.mean(axis=0)
        assert sc["centroid_dist"][i] == pytest.approx(1 - xn[i] @ mu / np.linalg.norm(mu), abs=1e-5)
        sims = sorted((xn[i] @ xn[j] for j in range(90) if j != i), reverse=True)[:5]
        assert sc["knn_dist"][i] == pytest.approx(1 - np.mean(sims), abs=1e-5)
    cls = y == 2
    z = (sc["knn_dist"][cls] - sc["knn_dist"][cls].mean()) / sc["knn_dist"][cls].std()
    np.testing.assert_allclose(sc["knn_dist_z"][cls], z, atol=1e-6)


def test_knn_vote_matches_naive() -> None:
    y = np.array([0, 1, 1, -1, 0])
    nb = Neighbours(np.array([[0.9, 0.5], [0.8, 0.7], [0.1, 0.0], [0.3, 0.2], [0.6, 0.6]], np.float32),
                    np.array([[1, 3], [2, 0], [0, 4], [0, 1], [2, 1]]))  # fmt: skip
    v = knn_vote(y, nb, 2, t=0.1)
    # row 0: neighbour 1 (class 1, w=exp((0.9-1)/0.1)), neighbour 3 unlabelled (ignored)
    np.testing.assert_allclose(v[0], [0.0, 1.0])
    w = np.exp((np.array([0.8, 0.7]) - 1) / 0.1)
    np.testing.assert_allclose(v[1], [w[1] / w.sum(), w[0] / w.sum()], rtol=1e-6)
    np.testing.assert_allclose(v[4], [0.0, 1.0])


def test_near_duplicates_threshold_and_uniqueness() -> None:
    nb = Neighbours(np.array([[0.99, 0.5], [0.99, 0.2], [0.97, 0.1], [0.97, 0.3]], np.float32),
                    np.array([[1, 2], [0, 3], [3, 0], [2, 1]]))  # fmt: skip
    got = near_duplicates(nb, 0.95)
    assert [(i, j) for i, j, _ in got] == [(0, 1), (2, 3)]
    np.testing.assert_allclose([s for _, _, s in got], [0.99, 0.97], rtol=1e-6)
    assert [(i, j) for i, j, _ in near_duplicates(nb, 0.98)] == [(0, 1)]


@pytest.mark.parametrize("use_index", [False, True])
def test_analyse_finds_planted_problems(tmp_path: Path, use_index: bool) -> None:
    x, labels = planted()
    paths = [f"w/{i}.jpg" for i in range(90)]
    write_embeddings(tmp_path / "emb", x, paths, {"label": labels})
    search = None
    if use_index:
        idx = RetrievalIndex.build(tmp_path / "emb", RetrievalCfg(index_kind="hnsw"))
        search = idx.search
    out = analyse_embeddings(tmp_path / "emb", tmp_path / "out", k=8, per_class=3, dup_threshold=0.99, search=search)

    def rows(name: str) -> list[dict[str, str]]:
        with open(out[name]) as f:
            return list(csv.DictReader(f))

    mis = rows("mislabels")
    assert mis and mis[0]["path"] == "w/5.jpg" and mis[0]["label"] == "c" and mis[0]["predicted"] == "a"
    assert {r["path"] for r in mis} <= {"w/5.jpg", "w/70.jpg"}  # the isolated outlier may be outvoted too
    dups = rows("near_duplicates")
    assert [(d["path_a"], d["path_b"]) for d in dups] == [("w/40.jpg", "w/41.jpg")]
    atyp = [r for r in rows("atypical") if r["label"] == "c"]
    assert atyp[0]["path"] in ("w/70.jpg", "w/5.jpg") and {"w/70.jpg", "w/5.jpg"} <= {r["path"] for r in atyp}
    assert len(rows("atypical")) == 9


def test_center_makes_anisotropic_duplicates_detectable(tmp_path: Path) -> None:
    """All-positive features share one direction (every cosine ~0.99); centring leaves only the planted pair."""
    x, labels = planted()
    x = np.abs(x) + 20.0  # a large common offset, like pooled post-ReLU features
    write_embeddings(tmp_path / "emb", x, [f"w/{i}.jpg" for i in range(90)], {"label": labels})

    def n_dups(center: bool) -> int:
        out = analyse_embeddings(tmp_path / "emb", tmp_path / f"o{center}", k=5, dup_threshold=0.99, center=center)
        with open(out["near_duplicates"]) as f:
            return len(list(csv.DictReader(f)))

    assert n_dups(False) > 50
    assert n_dups(True) == 1
    with pytest.raises(ValueError, match="needs exact kNN"):
        analyse_embeddings(tmp_path / "emb", tmp_path / "x", center=True, search=lambda q, k: None)
