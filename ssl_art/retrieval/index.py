"""FAISS index over exported embeddings: chosen by collection size, saved with its manifest and the model hash.

Vectors are L2-normalised, so inner product = cosine similarity and every index uses ``METRIC_INNER_PRODUCT``.

Kinds and parameters (the index fields of :class:`~ssl_art.config.RetrievalCfg`, overridable in YAML and by flags):

* ``flat`` (``IndexFlatIP``): exact; ``N*D*4`` bytes; ``auto`` uses it up to ``exact_max = 100k`` vectors, where a
  brute-force query still takes milliseconds.
* ``ivf_flat`` (``IndexIVFFlat``): ``nlist = 4*sqrt(N)`` k-means cells trained on a sample of
  ``max(40*nlist, 10000)`` vectors; a query visits ``nprobe`` cells, by default ``2*sqrt(nlist)`` clamped to
  ``[16, 512]`` (40 at 10k vectors, 126 at 1M), which gives recall@10 >= 0.95 against exact search on
  :mod:`ssl_art.retrieval.synthetic`'s clustered data (tested at 10k; measured by ``benchmarks/retrieval.py``).
  ``auto`` picks it above ``exact_max`` while the raw vectors fit in ``ivf_flat_max_bytes`` (4 GiB, about
  2M x 512 float32).
* ``ivf_pq`` (``IndexIVFPQ``): the same cells, vectors compressed to ``pq_m = D/8`` bytes (8-bit codes); PQ
  distances alone lose recall, so ``rerank = 4`` re-scores ``4*k`` candidates exactly from the embedding memmap
  (read from disk, never held in RAM). ``auto`` picks it for larger collections.
* ``hnsw`` (``IndexHNSWFlat``): graph with ``hnsw_m = 32`` links, ``efConstruction = 80``, ``efSearch = 128``;
  fastest single queries, slowest build and most memory; only on request.

*Exact search speed.* Flat searches go through :func:`ssl_art.eval.search.search_index`, which routes batches of
8+ queries through FAISS's BLAS path (8x faster per query for a 100-query batch at 100k; see that module).

A saved index folder holds ``index.faiss``, ``ids.npy`` (index position -> manifest row), ``manifest.csv`` and
``index.json`` (the embedding meta with its model hash, the resolved parameters, the embeddings folder, the
manifest's row count and SHA-256). :meth:`RetrievalIndex.load` with ``model_hash=...`` refuses an index built from
another model; every load verifies the manifest (rows and checksum, so a truncated or shuffled copy is an error
naming the file, not wrong labels) and that the embeddings folder still holds vectors of the index's model (row
queries read their vectors from it: re-embedding with another model must not silently change results).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from ssl_art.config import RetrievalCfg
from ssl_art.eval.search import l2_normalise, search_index
from ssl_art.retrieval.embed import MANIFEST_FILE, META_FILE, EmbeddingMeta, open_embeddings
from ssl_art.retrieval.manifest import manifest_sha256, verify_manifest

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "ivf_flat", "ivf_pq", "hnsw")
INDEX_FILE, IDS_FILE, INFO_FILE = "index.faiss", "ids.npy", "index.json"


class ModelMismatchError(ValueError):
    """The query model is not the model whose embeddings the index holds."""


INDEX_FIELDS = (
    "exact_max", "ivf_flat_max_bytes", "nlist", "nprobe", "pq_m", "pq_nbits", "rerank", "hnsw_m",
    "hnsw_ef_construction", "hnsw_ef_search", "train_size", "seed",
)  # fmt: skip
"""The ``RetrievalCfg`` fields that describe an index (with ``index_kind``); ``0`` means "choose from N and D"."""


def check_index_cfg(cfg: RetrievalCfg) -> None:
    """Raise ``ValueError`` naming the key when an index field of ``cfg`` is out of range."""
    if cfg.index_kind not in INDEX_KINDS:
        raise ValueError(f"index_kind must be one of {', '.join(INDEX_KINDS)}; got '{cfg.index_kind}'")
    for name in ("exact_max", "nlist", "nprobe", "pq_m", "rerank", "train_size"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0 (0 = auto), got {getattr(cfg, name)}")
    if cfg.hnsw_m < 2 or cfg.pq_nbits < 1:
        raise ValueError("hnsw_m must be >= 2 and pq_nbits >= 1")


def resolve_index_cfg(cfg: RetrievalCfg, n: int, d: int) -> RetrievalCfg:
    """``cfg`` with concrete index parameters for ``n`` vectors of dimension ``d`` (every ``0``/``auto`` filled in).

    Raises:
        ValueError: an index field is out of range, or ``pq_m`` does not divide ``d`` for IVF-PQ.
    """
    check_index_cfg(cfg)
    kind = cfg.index_kind
    if kind == "auto":
        kind = "flat" if n <= cfg.exact_max else "ivf_flat" if n * d * 4 <= cfg.ivf_flat_max_bytes else "ivf_pq"
    nlist = cfg.nlist or max(1, int(round(4 * math.sqrt(n))))
    nlist = min(nlist, n)
    nprobe = cfg.nprobe or min(nlist, max(16, min(512, int(round(2 * math.sqrt(nlist))))))
    pq_m = cfg.pq_m or max(1, d // 8)
    if kind == "ivf_pq" and d % pq_m:
        raise ValueError(f"pq_m={pq_m} must divide the dimension {d}")
    train = cfg.train_size or max(40 * nlist, 10_000)  # faiss wants >= 39 points per centroid
    return replace(cfg, index_kind=kind, nlist=nlist, nprobe=nprobe, pq_m=pq_m, train_size=min(train, n))


def index_params(cfg: RetrievalCfg) -> dict[str, Any]:
    """The index fields of ``cfg`` as stored in ``index.json`` (``kind`` = ``index_kind``) and printed by the CLI."""
    return {"kind": cfg.index_kind} | {name: getattr(cfg, name) for name in INDEX_FIELDS}


def _cfg_from_params(params: dict[str, Any]) -> RetrievalCfg:
    """Inverse of :func:`index_params` (fields an older ``index.json`` lacks keep their defaults)."""
    return RetrievalCfg(index_kind=params["kind"], **{name: params[name] for name in INDEX_FIELDS if name in params})


def build_faiss_index(
    x: NDArray[Any], p: RetrievalCfg, rows: NDArray[np.int64] | None = None, chunk: int = 65_536
) -> tuple[faiss.Index, RetrievalCfg]:
    """Build an index over (a subset of) ``x``, normalising in chunks so a memmap is never fully loaded.

    Args:
        x: ``(N, D)`` array or memmap (any float dtype).
        p: the retrieval config; its index fields are resolved against ``len(rows)`` and ``D``.
        rows: which rows of ``x`` to add, in order (index position ``i`` holds ``x[rows[i]]``); default all.
        chunk: rows normalised and added at a time.

    Returns:
        ``(index, resolved config)``.
    """
    rows = np.arange(len(x), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    n, d = len(rows), int(x.shape[1])
    if n == 0:
        raise ValueError("no vectors to index")
    p = resolve_index_cfg(p, n, d)
    ip = faiss.METRIC_INNER_PRODUCT
    index: faiss.Index
    if p.index_kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif p.index_kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p.hnsw_m, ip)
        index.hnsw.efConstruction = p.hnsw_ef_construction
    else:
        quantizer = faiss.IndexFlatIP(d)
        if p.index_kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, d, p.nlist, ip)
        else:
            index = faiss.IndexIVFPQ(quantizer, d, p.nlist, p.pq_m, p.pq_nbits, ip)
        sample = np.sort(np.random.default_rng(p.seed).choice(n, size=p.train_size, replace=False))
        t0 = time.perf_counter()
        index.train(l2_normalise(x[rows[sample]]))
        log.info(
            "trained %s (nlist=%d) on %d vectors in %.1fs", p.index_kind, p.nlist, len(sample), time.perf_counter() - t0
        )
    for s in range(0, n, chunk):
        index.add(l2_normalise(x[rows[s : s + chunk]]))
    return index, p


def search_params(p: RetrievalCfg, allowed: NDArray[np.int64] | None = None) -> faiss.SearchParameters | None:
    """FAISS per-query parameters: ``nprobe``/``efSearch`` and an optional whitelist of index positions."""
    kw: dict[str, Any] = {}
    if allowed is not None:
        kw["sel"] = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    if p.index_kind in ("ivf_flat", "ivf_pq"):
        return faiss.SearchParametersIVF(nprobe=p.nprobe, **kw)  # type: ignore[call-arg]
    if p.index_kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=max(p.hnsw_ef_search, 1), **kw)  # type: ignore[attr-defined]
    return faiss.SearchParameters(**kw) if kw else None


class RetrievalIndex:
    """A FAISS index plus what it takes to answer "which works look like this": manifest, ids, model hash.

    Attributes:
        index: the FAISS index (positions ``0..M-1``).
        ids: ``(M,)`` manifest row of each index position (bad rows are not indexed).
        paths: ``N`` manifest paths. labels: ``{column: N labels}``.
        meta: the embedding export's :class:`EmbeddingMeta` (model hash, kind, image size).
        params: the resolved :class:`~ssl_art.config.RetrievalCfg` (its index fields describe the index).
        emb_dir: the embeddings folder (used for IVF-PQ re-ranking and by the app), may be ``None``.
    """

    def __init__(
        self,
        index: faiss.Index,
        ids: NDArray[np.int64],
        paths: list[str],
        labels: dict[str, list[str | None]],
        meta: EmbeddingMeta,
        params: RetrievalCfg,
        emb_dir: Path | None = None,
        build_seconds: float = 0.0,
    ):
        self.index, self.ids, self.paths, self.labels = index, ids, paths, labels
        self.meta, self.params, self.emb_dir, self.build_seconds = meta, params, emb_dir, build_seconds
        self._emb: NDArray[Any] | None = None

    @classmethod
    def build(cls, emb_dir: str | Path, params: RetrievalCfg | None = None) -> RetrievalIndex:
        """Index an ``ssl-art embed`` folder (bad rows left out)."""
        emb, meta = open_embeddings(emb_dir)
        bad = np.zeros(meta.n, dtype=bool)
        bad[meta.bad_rows] = True
        ids = np.flatnonzero(~bad).astype(np.int64)
        t0 = time.perf_counter()
        index, p = build_faiss_index(emb, params or RetrievalCfg(), ids)
        paths, labels = verify_manifest(Path(emb_dir) / MANIFEST_FILE, meta.n, meta.manifest_sha256, "the embeddings")
        out = cls(index, ids, paths, labels, meta, p, Path(emb_dir).resolve(), time.perf_counter() - t0)
        log.info("built %s index over %d vectors in %.1fs", p.index_kind, len(ids), out.build_seconds)
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``ids.npy``, ``manifest.csv`` and ``index.json`` into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(out / INDEX_FILE))
        np.save(out / IDS_FILE, self.ids)
        if self.emb_dir is not None and (self.emb_dir / MANIFEST_FILE).resolve() != (out / MANIFEST_FILE).resolve():
            shutil.copyfile(self.emb_dir / MANIFEST_FILE, out / MANIFEST_FILE)
        info = {
            "embedding": asdict(self.meta),
            "params": index_params(self.params),
            "emb_dir": str(self.emb_dir) if self.emb_dir else "",
            "n_indexed": int(len(self.ids)),
            "build_seconds": self.build_seconds,
            "manifest_rows": len(self.paths),
            "manifest_sha256": manifest_sha256(out / MANIFEST_FILE),
        }
        (out / INFO_FILE).write_text(json.dumps(info, indent=1))
        return out

    @classmethod
    def load(cls, folder: str | Path, model_hash: str | None = None) -> RetrievalIndex:
        """Load a saved index; with ``model_hash``, refuse one built from another model.

        Raises:
            FileNotFoundError: ``folder`` is not an index folder.
            ModelMismatchError: ``model_hash`` differs from the hash stored at embedding time.
        """
        f = Path(folder)
        if not (f / INFO_FILE).is_file():
            raise FileNotFoundError(f"{f / INFO_FILE} not found: build one with `ssl-art index build`")
        info = json.loads((f / INFO_FILE).read_text())
        meta = EmbeddingMeta(**info["embedding"])
        if model_hash is not None and model_hash != meta.model_hash:
            raise ModelMismatchError(
                f"index {f} was built from model {meta.model_hash} ({meta.source or 'unknown source'}) but the query "
                f"model is {model_hash}: embeddings of different models are not comparable. Query with the same "
                "checkpoint, or re-run `ssl-art embed` and `ssl-art index build` with this one."
            )
        paths, labels = verify_manifest(
            f / MANIFEST_FILE,
            int(info.get("manifest_rows", meta.n)),
            info.get("manifest_sha256", ""),
            f"{f / INFO_FILE}",
        )
        emb_dir = Path(info["emb_dir"]) if info.get("emb_dir") else None
        index = faiss.read_index(str(f / INDEX_FILE))
        ids = np.load(f / IDS_FILE)
        if index.ntotal != len(ids) or (len(ids) and not 0 <= int(ids.min()) <= int(ids.max()) < len(paths)):
            raise ValueError(f"{f}: {INDEX_FILE} holds {index.ntotal} vectors but {IDS_FILE} has {len(ids)} rows")
        out = cls(index, ids, paths, labels, meta, _cfg_from_params(info["params"]), emb_dir, info["build_seconds"])
        out.check_embeddings()
        return out

    def check_embeddings(self) -> None:
        """Verify the embeddings folder (when it still exists) holds this index's model and collection.

        Raises:
            ModelMismatchError: its ``meta.json`` names another model (it was re-embedded after the index was built).
            ValueError: it holds another number of rows or another dimension.
        """
        if self.emb_dir is None or not (self.emb_dir / META_FILE).is_file():
            return
        em = EmbeddingMeta.read(self.emb_dir)
        if em.model_hash != self.meta.model_hash:
            raise ModelMismatchError(
                f"{self.emb_dir / META_FILE}: embeddings of model {em.model_hash}, but the index was built from model "
                f"{self.meta.model_hash}; rebuild the index (`ssl-art index build`) from these embeddings"
            )
        if (em.n, em.dim) != (self.meta.n, self.meta.dim):
            raise ValueError(
                f"{self.emb_dir / META_FILE}: {em.n} x {em.dim} embeddings, but the index was built from "
                f"{self.meta.n} x {self.meta.dim}; rebuild the index"
            )

    def check_model(self, model_hash: str) -> None:
        """Raise :class:`ModelMismatchError` unless ``model_hash`` is the index's."""
        if model_hash != self.meta.model_hash:
            raise ModelMismatchError(
                f"query model {model_hash} differs from the index's model {self.meta.model_hash} "
                f"({self.meta.source or 'unknown source'}); rebuild the index or use the matching checkpoint"
            )

    def allowed_positions(self, where: dict[str, str] | None) -> NDArray[np.int64] | None:
        """Index positions whose manifest labels match every ``column: value`` of ``where`` (``None`` = all)."""
        if not where:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        for col, value in where.items():
            if col not in self.labels:
                raise ValueError(f"no label column '{col}' in the manifest; columns: {', '.join(self.labels) or '-'}")
            col_vals = np.asarray([v if v is not None else "" for v in self.labels[col]], dtype=object)
            keep &= col_vals[self.ids] == value
        return np.flatnonzero(keep).astype(np.int64)

    def _embeddings(self) -> NDArray[Any] | None:
        if self._emb is None and self.emb_dir is not None and self.emb_dir.is_dir():
            self.check_embeddings()  # the folder may have been re-embedded since load
            self._emb = open_embeddings(self.emb_dir)[0]
        return self._emb

    def vectors(self, rows: NDArray[np.int64]) -> NDArray[np.float32] | None:
        """Normalised stored embeddings ``(R, D)`` of manifest ``rows`` (``None`` when the memmap is gone)."""
        emb = self._embeddings()
        return None if emb is None else l2_normalise(emb[np.asarray(rows, dtype=np.int64)])

    def search(
        self, q: NDArray[Any], k: int = 10, where: dict[str, str] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top-``k`` cosine neighbours of query vectors.

        Args:
            q: ``(Q, D)`` query embeddings (normalised here).
            k: neighbours per query.
            where: optional label filter ``{column: value}``.

        Returns:
            ``(scores (Q, k), rows (Q, k))``: cosine similarities, best first, and manifest rows; ``-1`` rows (score
            ``-inf``) pad queries with fewer than ``k`` matches.
        """
        q = l2_normalise(np.atleast_2d(q))
        if q.shape[1] != self.index.d:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.index.d}")
        allowed = self.allowed_positions(where)
        emb = self._embeddings() if self.params.index_kind == "ivf_pq" and self.params.rerank > 0 else None
        kk = k * self.params.rerank if emb is not None else k
        scores, pos = search_index(self.index, q, kk, search_params(self.params, allowed))
        if emb is not None:  # exact re-scoring of the PQ candidates, from disk
            for i in range(len(q)):
                ok = pos[i] >= 0
                cand = pos[i][ok]
                order = np.argsort(self.ids[cand])
                vecs = l2_normalise(emb[self.ids[cand][order]])
                exact = np.empty(len(cand), dtype=np.float32)
                exact[order] = vecs @ q[i]
                scores[i, : len(cand)], pos[i, : len(cand)] = exact, cand
                scores[i, len(cand) :], pos[i, len(cand) :] = -np.inf, -1
                top = np.argsort(-scores[i], kind="stable")
                scores[i], pos[i] = scores[i][top], pos[i][top]
            scores, pos = scores[:, :k], pos[:, :k]
        rows = np.where(pos >= 0, self.ids[np.clip(pos, 0, None)], -1)
        return np.where(pos >= 0, scores, -np.inf).astype(np.float32), rows.astype(np.int64)
