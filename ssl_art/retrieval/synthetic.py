"""Clustered synthetic embeddings: the data on which the index defaults (``nprobe``, ``efSearch``) are documented.

Real style embeddings are not isotropic noise: they form clusters (styles, artists, series) that each vary along a
few directions. :func:`clustered_vectors` mimics that: ``n_clusters`` random unit centres in ``R^d``, each point =
centre + a Gaussian in a random ``intrinsic_dim``-dimensional subspace of its cluster + small isotropic noise, then
L2-normalised. Generation is chunked and seeded per chunk, so ``n = 1M`` (2 GB as float32) can be streamed straight
into a memmap or an index without a second copy, and a chunk's content does not depend on the chunk size used by
the caller (rows are always produced in blocks of :data:`BLOCK`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

BLOCK = 65_536


def _cluster_model(
    d: int, n_clusters: int, intrinsic_dim: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((n_clusters, intrinsic_dim, d)).astype(np.float32) / np.sqrt(d)
    return centres, bases


def iter_clustered(
    n: int,
    d: int = 512,
    n_clusters: int = 1000,
    intrinsic_dim: int = 32,
    spread: float = 0.35,
    noise: float = 0.02,
    seed: int = 0,
) -> Iterator[tuple[NDArray[np.float32], NDArray[np.int64]]]:
    """Yield ``(x (b, d) float32 unit rows, cluster (b,))`` blocks of at most :data:`BLOCK` rows, ``n`` in total.

    Args:
        n: total rows.
        d: dimension.
        n_clusters: number of clusters.
        intrinsic_dim: within-cluster variation subspace dimension.
        spread: typical norm of the within-cluster displacement (the centres have norm 1).
        noise: std of the isotropic noise per dimension (norm ``noise * sqrt(d)``).
        seed: seeds the cluster model and (with the block number) each block.
    """
    centres, bases = _cluster_model(d, n_clusters, intrinsic_dim, seed)
    for b, start in enumerate(range(0, n, BLOCK)):
        m = min(BLOCK, n - start)
        rng = np.random.default_rng([seed, b])
        c = rng.integers(0, n_clusters, m)
        # per-direction std spread/sqrt(r): the within-cluster displacement has norm ~ spread
        z = rng.standard_normal((m, intrinsic_dim)).astype(np.float32) * (spread / np.sqrt(intrinsic_dim))
        x = centres[c] + np.einsum("bi,bid->bd", z, bases[c])
        x += rng.standard_normal((m, d)).astype(np.float32) * noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x.astype(np.float32), c.astype(np.int64)


def clustered_vectors(n: int, d: int = 512, **kwargs: float | int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """All of :func:`iter_clustered` in memory: ``(x (n, d), cluster (n,))``."""
    xs, cs = zip(*iter_clustered(n, d, **kwargs))  # type: ignore[arg-type]
    return np.concatenate(xs), np.concatenate(cs)
