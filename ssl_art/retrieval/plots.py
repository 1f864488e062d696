"""PNG plots of a collection: a 2-D map of the embeddings coloured by label, and query -> top-k thumbnail grids.

The map uses UMAP (``umap-learn``, cosine metric) when it is importable and falls back to scikit-learn's t-SNE
(cosine, PCA init) otherwise; the title always says which one drew it, since the two place clusters differently
and distances between clusters mean little in either. Large collections are subsampled (stratified by label) to
``max_points``. Matplotlib runs on the Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from ssl_art.retrieval.query import QueryResult  # noqa: E402

PROJECTIONS = ("auto", "umap", "tsne")


def project_2d(
    x: NDArray[Any], method: str = "auto", seed: int = 0, max_iter: int = 1000
) -> tuple[NDArray[np.float32], str]:
    """``(N, D) -> (N, 2)`` with UMAP or t-SNE; returns the coordinates and the method actually used.

    ``max_iter`` is t-SNE's optimisation budget (>= 250); UMAP picks its own epochs.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {', '.join(PROJECTIONS)}; got '{method}'")
    x = np.asarray(x, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError:
            if method == "umap":
                raise
        else:
            nn = min(15, len(x) - 1)
            reducer = umap.UMAP(n_neighbors=nn, metric="cosine", random_state=seed, n_jobs=1)
            return np.asarray(reducer.fit_transform(x), dtype=np.float32), "UMAP"
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    tsne = TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed, max_iter=max_iter)
    return np.asarray(tsne.fit_transform(x), dtype=np.float32), "t-SNE"


def stratified_sample(labels: Sequence[str | None], max_points: int, seed: int = 0) -> NDArray[np.int64]:
    """Row indices, at most ``max_points``, keeping each label's share of the collection."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    lab = np.asarray([v or "" for v in labels], dtype=object)
    out = []
    for v in sorted(set(lab)):
        rows = np.flatnonzero(lab == v)
        out.append(rng.choice(rows, size=max(1, round(len(rows) * max_points / n)), replace=False))
    return np.sort(np.concatenate(out))[:max_points].astype(np.int64)


def plot_embedding_map(
    x: NDArray[Any],
    labels: Sequence[str | None],
    path: str | Path,
    method: str = "auto",
    max_points: int = 5000,
    title: str = "",
    seed: int = 0,
    max_iter: int = 1000,
) -> Path:
    """Scatter of the 2-D projection, one colour per label (unlabelled in grey), legend outside the axes.

    Args:
        x: ``(N, D)`` embeddings.
        labels: ``N`` labels (``None`` = unlabelled).
        path: output PNG.
        method: ``auto | umap | tsne``.
        max_points: stratified subsample size.
        title: prefix of the title (the projection method is appended).
        seed: projection and subsampling seed.
        max_iter: t-SNE iterations (ignored by UMAP).
    """
    rows = stratified_sample(labels, max_points, seed)
    xy, used = project_2d(np.asarray(x)[rows], method, seed, max_iter)
    lab = [labels[i] for i in rows]
    names = sorted({v for v in lab if v is not None})
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(8, 6.5))
    for i, name in enumerate(names):
        m = np.array([v == name for v in lab])
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(i % cmap.N), label=name, alpha=0.8)
    m = np.array([v is None for v in lab])
    if m.any():
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color="0.7", label="(unlabelled)", alpha=0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title + ': ' if title else ''}{used} of {len(rows)} embeddings (cosine)")
    if names:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _thumb(path: str, size: int) -> NDArray[np.uint8]:
    from PIL import Image

    try:
        with Image.open(path) as f:
            im = f.convert("RGB")
            im.thumbnail((size, size))
            canvas = Image.new("RGB", (size, size), (255, 255, 255))
            canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
            return np.asarray(canvas)
    except OSError:  # unreadable file: grey tile rather than no plot
        return np.full((size, size, 3), 200, dtype=np.uint8)


def plot_query_grid(
    results: Sequence[QueryResult], path: str | Path, label_column: str | None = None, thumb: int = 128
) -> Path:
    """One row per query: the query image, then its hits with score and label as captions."""
    if not results:
        raise ValueError("no query results to plot")
    k = max(len(r.hits) for r in results)
    fig, axes = plt.subplots(len(results), k + 1, figsize=(1.6 * (k + 1), 1.9 * len(results)), squeeze=False)
    for row, r in zip(axes, results):
        row[0].imshow(_thumb(r.query, thumb))
        row[0].set_title("query\n" + Path(r.query).name[:18], fontsize=7, color="tab:red")
        for j, ax in enumerate(row[1:]):
            ax.set_axis_off()
            if j >= len(r.hits):
                continue
            h = r.hits[j]
            col = label_column or next(iter(h.labels), None)
            lab = (h.labels.get(col) if col else None) or ""
            ax.imshow(_thumb(h.path, thumb))
            ax.set_title(f"{h.score:.3f}\n{lab[:18]}", fontsize=7)
        row[0].set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
