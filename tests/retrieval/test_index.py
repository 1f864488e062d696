"""FAISS index: exact == brute-force numpy, approximate recall with the documented defaults, save/load, hash check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssl_art.config import RetrievalCfg
from ssl_art.eval.search import BLAS_MIN_QUERIES, blas_threshold, search_index
from ssl_art.retrieval.embed import write_embeddings
from ssl_art.retrieval.evaluate import approximate_recall
from ssl_art.retrieval.index import (
    ModelMismatchError,
    RetrievalIndex,
    build_faiss_index,
    resolve_index_cfg,
    search_params,
)
from ssl_art.retrieval.synthetic import clustered_vectors


def numpy_topk(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Naive reference: cosine similarities of every pair, sorted descending."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sim = qn.astype(np.float64) @ xn.astype(np.float64).T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order


def emb_folder(tmp: Path, x: np.ndarray, labels: list[str] | None = None, mhash: str = "abc") -> Path:
    paths = [f"img/{i}.jpg" for i in range(len(x))]
    write_embeddings(tmp, x, paths, {"label": labels} if labels else None, model_hash=mhash)
    return tmp


@pytest.mark.parametrize("k", [1, 5, 17])
@pytest.mark.parametrize("d", [8, 64])
def test_exact_index_equals_numpy(k: int, d: int) -> None:
    rng = np.random.default_rng(k + d)
    x = rng.standard_normal((300, d)).astype(np.float32) * rng.uniform(0.5, 3, (300, 1)).astype(np.float32)
    q = rng.standard_normal((20, d)).astype(np.float32)
    index, p = build_faiss_index(x, RetrievalCfg(index_kind="flat"))
    assert p.index_kind == "flat"
    sims, ids = index.search(q / np.linalg.norm(q, axis=1, keepdims=True), k)
    ref_sims, ref_ids = numpy_topk(x, q, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)


@pytest.mark.parametrize("n_queries", [1, BLAS_MIN_QUERIES - 1, BLAS_MIN_QUERIES, 60])
def test_search_index_batched_blas_path_equals_numpy(n_queries: int) -> None:
    """Batches go through FAISS's sgemm path (threshold lowered): same neighbours as numpy, threshold restored."""
    import faiss

    rng = np.random.default_rng(n_queries)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    q = np.asfortranarray(rng.standard_normal((n_queries, 32)))  # float64, not C-contiguous: converted
    index, _ = build_faiss_index(x, RetrievalCfg(index_kind="flat"))
    before = faiss.cvar.distance_compute_blas_threshold
    sims, ids = search_index(index, q / np.linalg.norm(q, axis=1, keepdims=True), 9)
    assert faiss.cvar.distance_compute_blas_threshold == before
    ref_sims, ref_ids = numpy_topk(x, q, 9)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)


def test_blas_threshold_restored_after_error() -> None:
    import faiss

    before = faiss.cvar.distance_compute_blas_threshold
    with pytest.raises(RuntimeError), blas_threshold(7):
        assert faiss.cvar.distance_compute_blas_threshold == 7
        raise RuntimeError("boom")
    assert faiss.cvar.distance_compute_blas_threshold == before


def test_retrieval_index_exact_and_filter(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    labels = [["a", "b", "c"][i % 3] for i in range(200)]
    idx = RetrievalIndex.build(emb_folder(tmp_path / "emb", x, labels))
    q = rng.standard_normal((5, 16)).astype(np.float32)
    sims, rows = idx.search(q, 7)
    ref_sims, ref_rows = numpy_topk(x, q, 7)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    # filtered search == brute force restricted to the label
    sims_b, rows_b = idx.search(q, 7, where={"label": "b"})
    keep = np.flatnonzero(np.array(labels) == "b")
    ref_s, ref_o = numpy_topk(x[keep], q, 7)
    np.testing.assert_array_equal(rows_b, keep[ref_o])
    assert all(labels[r] == "b" for r in rows_b.ravel())
    # fewer matches than k: padded with -1
    _, rows_few = idx.search(q[:1], 5, where={"label": "zzz"})
    assert (rows_few == -1).all()
    with pytest.raises(ValueError, match="no label column 'style'"):
        idx.search(q, 3, where={"style": "a"})


def test_resolve_documented_defaults() -> None:
    p = resolve_index_cfg(RetrievalCfg(), 10_000, 512)
    assert p.index_kind == "flat"
    p = resolve_index_cfg(RetrievalCfg(), 1_000_000, 512)
    assert p.index_kind == "ivf_flat" and p.nlist == 4000 and p.nprobe == 126 and p.train_size == 160_000
    assert resolve_index_cfg(RetrievalCfg(), 3_000_000, 512).index_kind == "ivf_pq"
    assert resolve_index_cfg(RetrievalCfg(), 3_000_000, 512).pq_m == 64
    assert resolve_index_cfg(RetrievalCfg(index_kind="hnsw"), 10, 4).index_kind == "hnsw"
    with pytest.raises(ValueError, match="auto, flat, ivf_flat, ivf_pq, hnsw"):
        resolve_index_cfg(RetrievalCfg(index_kind="lsh"), 10, 4)
    with pytest.raises(ValueError, match="nprobe must be >= 0"):
        resolve_index_cfg(RetrievalCfg(nprobe=-1), 10, 4)


@pytest.fixture(scope="module")
def clustered_10k() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10k indexed vectors, 200 held-out queries from the same clusters, and the exact top-10."""
    data, _ = clustered_vectors(10_200, 512, seed=1)
    x, q = data[:10_000], np.ascontiguousarray(data[10_000:])
    exact, _ = build_faiss_index(x, RetrievalCfg(index_kind="flat"))
    return x, q, exact.search(q, 10)[1]


@pytest.mark.parametrize("kind", ["ivf_flat", "hnsw"])
def test_approximate_recall_at_10(kind: str, clustered_10k: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Documented defaults reach recall@10 >= 0.95 vs exact search on clustered 512-d data (10k vectors)."""
    x, q, ref = clustered_10k
    index, p = build_faiss_index(x, RetrievalCfg(index_kind=kind))
    _, got = index.search(q, 10, params=search_params(p))
    rec = approximate_recall(got, ref)
    assert rec >= 0.95, f"{kind} recall@10 = {rec:.3f} with {p}"


def test_ivf_pq_rerank_improves_recall(tmp_path: Path) -> None:
    x, _ = clustered_vectors(4000, 64, seed=3)
    folder = emb_folder(tmp_path / "emb", x)
    q = x[:100]
    _, ref = numpy_topk(x, q, 10)
    params = dict(index_kind="ivf_pq", nlist=32, nprobe=32, pq_m=16, pq_nbits=6, train_size=4000)
    no = RetrievalIndex.build(folder, RetrievalCfg(rerank=0, **params))  # type: ignore[arg-type]
    yes = RetrievalIndex.build(folder, RetrievalCfg(rerank=8, **params))  # type: ignore[arg-type]
    r_no = approximate_recall(no.search(q, 10)[1], ref)
    r_yes = approximate_recall(yes.search(q, 10)[1], ref)
    assert r_yes >= 0.95 and r_yes > r_no
    sims, rows = yes.search(q, 10)
    ref_s = numpy_topk(x, q, 10)[0]
    np.testing.assert_allclose(sims[:, 0], ref_s[:, 0], atol=1e-4)  # re-ranked scores are exact cosines


def test_save_load_roundtrip_and_model_mismatch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    idx = RetrievalIndex.build(
        emb_folder(tmp_path / "emb", x, mhash="hash-A"), RetrievalCfg(index_kind="ivf_flat", nlist=8)
    )
    idx.save(tmp_path / "idx")
    q = x[:10]
    loaded = RetrievalIndex.load(tmp_path / "idx", model_hash="hash-A")
    np.testing.assert_array_equal(loaded.search(q, 5)[1], idx.search(q, 5)[1])
    assert loaded.params.index_kind == "ivf_flat" and loaded.params.nprobe == idx.params.nprobe
    with pytest.raises(ModelMismatchError, match="built from model hash-A .* query model is hash-B"):
        RetrievalIndex.load(tmp_path / "idx", model_hash="hash-B")
    with pytest.raises(ModelMismatchError, match="differs from the index's model"):
        loaded.check_model("hash-B")
    with pytest.raises(FileNotFoundError, match="ssl-art index build"):
        RetrievalIndex.load(tmp_path / "nothing")
