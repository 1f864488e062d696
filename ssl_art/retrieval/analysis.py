"""Collection analysis on embeddings: atypical works per class, likely mislabels, near-duplicate pairs.

All similarities are cosine (rows L2-normalised). Two atypicality signals are computed per work and combined:

* ``centroid_dist = 1 - cos(x, mean of its class)``: how far a work sits from its class's average style;
* ``knn_dist = 1 - mean cos(x, k nearest works)``: how isolated it is in the whole collection (the kNN-distance
  outlier score of Ramaswamy et al. 2000), which catches works far from *everything*, not just from their class.

Each is turned into a within-class z-score and the two are averaged into ``score``. A *likely mislabel* is a work
whose similarity-weighted kNN vote (weights ``exp(s/T)`` as in DINO's ``eval_knn.py``) prefers another class; it
is ranked by the vote share of that class. *Near duplicates* are pairs among the kNN lists with cosine above a
threshold. kNN is exact (:mod:`ssl_art.eval.search`: FAISS ``IndexFlatIP``, ``O(N^2)``, chunked) unless a
:class:`RetrievalIndex` is given.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ssl_art.eval.search import flat_index, l2_normalise, search_index
from ssl_art.retrieval.embed import MANIFEST_FILE, open_embeddings
from ssl_art.retrieval.manifest import read_manifest

MISSING = -1


@dataclass
class Neighbours:
    """Each work's ``k`` nearest other works: ``sims (N, k)`` cosine, best first, and ``idx (N, k)`` rows."""

    sims: NDArray[np.float32]
    idx: NDArray[np.int64]


def self_knn(x: NDArray[Any], k: int, chunk: int = 8192, search: Any = None) -> Neighbours:
    """``k`` nearest neighbours of every row among the other rows.

    Args:
        x: ``(N, D)`` embeddings.
        k: neighbours per row (``< N``).
        chunk: rows searched at a time.
        search: optional ``f(q (b, D), k) -> (sims, rows)`` (e.g. ``RetrievalIndex.search``); default exact.
    """
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    if search is None:
        flat = flat_index(x, chunk)

        def search(q: NDArray[np.float32], kk: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
            return search_index(flat, q, kk)

    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        q = l2_normalise(x[s : s + chunk])
        d, i = search(q, k + 1)
        for r in range(len(q)):
            keep = i[r] != s + r  # drop the query itself wherever ties put it
            ii, dd = i[r][keep][:k], d[r][keep][:k]
            idx[s + r], sims[s + r] = ii, dd
    return Neighbours(sims, idx)


def outlier_scores(x: NDArray[Any], labels: NDArray[np.int64], nbrs: Neighbours) -> dict[str, NDArray[np.float64]]:
    """Per-work ``centroid_dist``, ``knn_dist``, their within-class z-scores and ``score`` (mean of the z's).

    Args:
        x: ``(N, D)`` embeddings.
        labels: ``(N,)`` class ids, ``-1`` = unlabelled (its z-scores use the unlabelled group's statistics).
        nbrs: from :func:`self_knn`.
    """
    y = np.asarray(labels, dtype=np.int64)
    z = l2_normalise(x)
    centroid_dist = np.zeros(len(z))
    for c in np.unique(y):
        m = y == c
        mu = z[m].mean(axis=0)
        mu /= max(float(np.linalg.norm(mu)), 1e-12)
        centroid_dist[m] = 1.0 - z[m] @ mu
    knn_dist = 1.0 - nbrs.sims.astype(np.float64).mean(axis=1)
    out = {"centroid_dist": centroid_dist, "knn_dist": knn_dist}
    for name in ("centroid_dist", "knn_dist"):
        zs = np.zeros(len(z))
        for c in np.unique(y):
            m = y == c
            v = out[name][m]
            zs[m] = (v - v.mean()) / (v.std() + 1e-12)
        out[f"{name}_z"] = zs
    out["score"] = (out["centroid_dist_z"] + out["knn_dist_z"]) / 2
    return out


def knn_vote(labels: NDArray[np.int64], nbrs: Neighbours, n_classes: int, t: float = 0.07) -> NDArray[np.float64]:
    """``(N, C)`` similarity-weighted class shares of each work's neighbours (unlabelled neighbours ignored)."""
    y = np.asarray(labels, dtype=np.int64)
    nl = y[nbrs.idx]
    w = np.exp((nbrs.sims.astype(np.float64) - 1.0) / t) * (nl != MISSING)
    votes = np.zeros((len(y), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(y)), nl.shape[1]), np.clip(nl, 0, None).ravel()), w.ravel())
    return votes / np.maximum(votes.sum(axis=1, keepdims=True), 1e-300)


def mislabel_candidates(
    labels: NDArray[np.int64], nbrs: Neighbours, n_classes: int, t: float = 0.07, min_share: float = 0.5
) -> list[tuple[int, int, float, float]]:
    """Works whose kNN vote prefers another class with share ``>= min_share``.

    Returns:
        ``(row, predicted class, predicted share, own-label share)`` tuples, most confident first.
    """
    y = np.asarray(labels, dtype=np.int64)
    shares = knn_vote(y, nbrs, n_classes, t)
    pred = shares.argmax(axis=1)
    own = np.where(y >= 0, shares[np.arange(len(y)), np.clip(y, 0, None)], 0.0)
    flag = np.flatnonzero((y != MISSING) & (pred != y) & (shares.max(axis=1) >= min_share))
    flag = flag[np.argsort(-(shares[flag, pred[flag]] - own[flag]), kind="stable")]
    return [(int(i), int(pred[i]), float(shares[i, pred[i]]), float(own[i])) for i in flag]


def near_duplicates(nbrs: Neighbours, threshold: float = 0.95) -> list[tuple[int, int, float]]:
    """Unique pairs ``(i, j, cosine)`` with ``i < j`` and cosine ``>= threshold``, most similar first."""
    rows, cols = np.nonzero(nbrs.sims >= threshold)
    pairs: dict[tuple[int, int], float] = {}
    for r, c in zip(rows, cols):
        j = int(nbrs.idx[r, c])
        if j < 0:
            continue
        key = (min(int(r), j), max(int(r), j))
        pairs[key] = max(pairs.get(key, -1.0), float(nbrs.sims[r, c]))
    return sorted(((a, b, s) for (a, b), s in pairs.items()), key=lambda p: (-p[2], p[0], p[1]))


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def analyse_embeddings(
    emb_dir: str | Path,
    out_dir: str | Path,
    label_column: str = "label",
    k: int = 10,
    per_class: int = 20,
    dup_threshold: float = 0.95,
    t: float = 0.07,
    search: Any = None,
    center: bool = False,
) -> dict[str, Path]:
    """Write ``atypical.csv``, ``mislabels.csv`` and ``near_duplicates.csv`` for an ``ssl-art embed`` folder.

    Args:
        emb_dir: embeddings folder.
        out_dir: where the CSVs go.
        label_column: manifest column used as the class (missing column: everything is one class).
        k: neighbours per work.
        per_class: most atypical works listed per class.
        dup_threshold: cosine above which two works count as near duplicates.
        t: kNN vote temperature.
        search: optional index search function (see :func:`self_knn`).
        center: subtract the collection's mean embedding before cosine. Pooled post-ReLU features (and random-init
            backbones) are anisotropic: every pair can have cosine ~0.99, so a fixed near-duplicate threshold
            means nothing there until the shared mean direction is removed. Exact kNN only (not with ``search``).

    Returns:
        ``{"atypical": path, "mislabels": path, "near_duplicates": path}``.
    """
    emb, meta = open_embeddings(emb_dir)
    paths, cols = read_manifest(Path(emb_dir) / MANIFEST_FILE)
    good = np.setdiff1d(np.arange(meta.n), meta.bad_rows)
    x = np.asarray(emb[good], dtype=np.float32)
    if center:
        if search is not None:
            raise ValueError("center=True needs exact kNN: the index holds uncentred vectors (drop --index)")
        x = x - x.mean(axis=0, keepdims=True)
    raw = cols.get(label_column, [None] * meta.n)
    names = sorted({v for v in raw if v is not None})
    lookup = {v: i for i, v in enumerate(names)}
    y = np.array([lookup[raw[r]] if raw[r] is not None else MISSING for r in good], dtype=np.int64)
    if search is not None:  # an index answers with manifest rows; map them to positions in ``good``
        pos_of = np.full(meta.n, -1, dtype=np.int64)
        pos_of[good] = np.arange(len(good))
        index_search = search

        def search(q: NDArray[np.float32], kk: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
            d, rows = index_search(q, kk)
            return d, np.where(rows >= 0, pos_of[np.clip(rows, 0, None)], -1)

    nbrs = self_knn(x, min(k, len(x) - 1), search=search)
    sc = outlier_scores(x, y, nbrs)

    def name(c: int) -> str:
        return names[c] if c >= 0 else ""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atyp = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        top = members[np.argsort(-sc["score"][members], kind="stable")][:per_class]
        for rank, i in enumerate(top, 1):
            atyp.append([name(int(c)), rank, paths[good[i]], round(float(sc["score"][i]), 4)])
            atyp[-1] += [round(float(sc["centroid_dist"][i]), 4), round(float(sc["knn_dist"][i]), 4)]
    mis = [
        [paths[good[i]], name(int(y[i])), name(p), round(ps, 4), round(own, 4)]
        for i, p, ps, own in mislabel_candidates(y, nbrs, max(len(names), 1), t)
    ]
    dups = [[paths[good[i]], paths[good[j]], round(s, 5)] for i, j, s in near_duplicates(nbrs, dup_threshold)]
    return {
        "atypical": _write(out / "atypical.csv", ["label", "rank", "path", "score", "centroid_dist", "knn_dist"], atyp),
        "mislabels": _write(
            out / "mislabels.csv", ["path", "label", "predicted", "predicted_share", "label_share"], mis
        ),
        "near_duplicates": _write(out / "near_duplicates.csv", ["path_a", "path_b", "cosine"], dups),
    }
