"""Export a collection's embeddings to disk in resumable chunks: ``.npy`` memmap + manifest CSV + meta JSON.

A 1M-image collection never sits in RAM: rows are written straight into a ``numpy.lib.format.open_memmap`` file of
shape ``(N, D)`` (float16 by default), flushed every ``chunk_rows`` rows, and only *then* recorded as done in
``progress.json`` (written atomically). A run killed at any instant therefore loses at most one chunk, and the next
run with the same model continues from the first unrecorded row: rows are never embedded twice into the file.
``meta.json`` carries the model hash (SHA-256 of the model's ``state_dict`` tensors, so a re-saved checkpoint with
the same weights keeps its hash), the embedding kind, dimension, dtype and ``N``; the index refuses queries from a
model whose hash differs. Unreadable images (the data layer's ``BadSample``) become zero rows listed in
``bad_rows`` and are left out of the index. The manifest's row count and SHA-256 are recorded in ``meta.json`` and
checked by :func:`open_embeddings` (and by the index at build and load time), so a truncated, emptied, column-less or
shuffled manifest is a clear error naming the file instead of a crash or silently wrong labels. The model side
(what an embedder is, the random-init baseline, the hash, query-image embedding) lives in
:mod:`ssl_art.retrieval.embedder`.

Under ``torchrun`` the rows are sharded: within each chunk rank ``r`` embeds rows ``r, r + W, ...``, the chunk's
rows are gathered on rank 0, and rank 0 alone writes the memmap, the manifest, ``progress.json`` and ``meta.json``
(so the output is the one a single process writes, row for row, and resume works the same).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssl_art import distributed
from ssl_art.retrieval.embedder import Embedder, model_hash, pick_embedding, resolve_kind
from ssl_art.retrieval.manifest import manifest_sha256, read_manifest, verify_manifest, write_manifest

log = logging.getLogger(__name__)

EMB_FILE = "embeddings.npy"
MANIFEST_FILE = "manifest.csv"
META_FILE = "meta.json"
PROGRESS_FILE = "progress.json"
DTYPES = ("float16", "float32")


@dataclass
class EmbeddingMeta:
    """Contents of ``meta.json``."""

    model_hash: str
    kind: str
    dim: int
    dtype: str
    n: int
    image_size: int
    source: str = ""  # checkpoint path or 'random:<backbone>'
    label_columns: list[str] = field(default_factory=list)
    bad_rows: list[int] = field(default_factory=list)
    complete: bool = False
    manifest_sha256: str = ""  # SHA-256 of manifest.csv as written ("" in exports made before it was recorded)

    @staticmethod
    def read(folder: str | Path) -> EmbeddingMeta:
        """Load ``<folder>/meta.json``."""
        p = Path(folder) / META_FILE
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: is {folder} an `ssl-art embed` output folder?")
        return EmbeddingMeta(**json.loads(p.read_text()))

    def write(self, folder: str | Path) -> None:
        """Atomically write ``<folder>/meta.json``."""
        _atomic_json(Path(folder) / META_FILE, asdict(self))


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def open_embeddings(folder: str | Path) -> tuple[NDArray[Any], EmbeddingMeta]:
    """Read-only memmap ``(N, D)`` of an embed folder and its meta, after checking the folder is consistent.

    Raises:
        FileNotFoundError: no ``meta.json``/``embeddings.npy``/``manifest.csv``.
        ValueError: an incomplete export, an embeddings array of another shape than the meta says, or a damaged
            manifest (:func:`verify_manifest`), each naming the file.
    """
    meta = EmbeddingMeta.read(folder)
    if not meta.complete:
        raise ValueError(f"{folder}: embedding export is incomplete; re-run `ssl-art embed` to resume it")
    f = Path(folder) / EMB_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: re-run `ssl-art embed`")
    try:
        emb = np.load(f, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ValueError(f"{f}: unreadable embeddings ({e}); re-run `ssl-art embed`") from e
    if emb.shape != (meta.n, meta.dim):
        raise ValueError(f"{f}: shape {emb.shape} but {folder}/{META_FILE} says ({meta.n}, {meta.dim})")
    verify_manifest(Path(folder) / MANIFEST_FILE, meta.n, meta.manifest_sha256, f"{folder}/{META_FILE}")
    return emb, meta


def write_embeddings(
    out_dir: str | Path,
    x: NDArray[Any],
    paths: Sequence[str],
    labels: Mapping[str, Sequence[str | None]] | None = None,
    model_hash: str = "external",
    kind: str = "pooled",
    dtype: str = "float32",
    image_size: int = 224,
    chunk_rows: int = 65_536,
) -> EmbeddingMeta:
    """Store precomputed ``(N, D)`` vectors (array or memmap, copied in chunks) as a complete embed folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, d = int(x.shape[0]), int(x.shape[1])
    if len(paths) != n:
        raise ValueError(f"{len(paths)} paths for {n} vectors")
    emb = np.lib.format.open_memmap(out / EMB_FILE, mode="w+", dtype=dtype, shape=(n, d))
    for s in range(0, n, chunk_rows):
        emb[s : s + chunk_rows] = x[s : s + chunk_rows]
    emb.flush()
    del emb
    write_manifest(out / MANIFEST_FILE, paths, labels or {})
    meta = EmbeddingMeta(model_hash, kind, d, dtype, n, image_size, "external", list(labels or {}), [], True)
    meta.manifest_sha256 = manifest_sha256(out / MANIFEST_FILE)
    meta.write(out)
    return meta


def _split_batch(items: list[tuple[int, Any]]) -> tuple[Tensor | None, list[int], list[int]]:
    """Collate ``(row, item)`` pairs; an item that is not ``(x, target, i)`` is a bad sample."""
    good = [(r, it[0]) for r, it in items if isinstance(it, tuple) and len(it) == 3 and isinstance(it[0], Tensor)]
    bad = [r for r, it in items if not (isinstance(it, tuple) and len(it) == 3 and isinstance(it[0], Tensor))]
    x = torch.stack([t for _, t in good]) if good else None
    return x, [r for r, _ in good], bad


class _Rows(Dataset[tuple[int, Any]]):
    def __init__(self, ds: Dataset[Any], rows: Sequence[int]):
        self.ds, self.rows = ds, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return self.rows[i], self.ds[self.rows[i]]


def embed_dataset(
    model: Embedder,
    dataset: Dataset[Any],
    out_dir: str | Path,
    paths: Sequence[str],
    labels: Mapping[str, Sequence[str | None]] | None = None,
    kind: str = "auto",
    dtype: str = "float16",
    image_size: int = 224,
    batch_size: int = 64,
    chunk_rows: int = 4096,
    num_workers: int = 0,
    device: str = "cpu",
    source: str = "",
    progress: bool = True,
) -> EmbeddingMeta:
    """Embed every row of ``dataset`` into ``out_dir``, resuming a previous interrupted run of the same model.

    Args:
        model: anything with ``embed(x) -> dict`` (a :class:`PretrainMethod` or ``BackboneEmbedder``).
        dataset: row ``i`` -> ``(x (3, H, W), target, i)``, or a bad-sample marker of any other type.
        out_dir: created if missing; holds ``embeddings.npy``, ``manifest.csv``, ``meta.json``, ``progress.json``.
        paths: ``N`` image paths (the manifest), one per dataset row.
        labels: label columns for the manifest, each ``N`` values.
        kind: ``auto | pooled | fused | gram``.
        dtype: on-disk ``float16`` or ``float32``.
        image_size: recorded in the meta (queries are resized the same way).
        batch_size: images per forward pass.
        chunk_rows: rows per flush + progress record (the most work an interruption can lose).
        num_workers: DataLoader workers.
        device: torch device for the forward pass.
        source: checkpoint path (recorded for humans).
        progress: show a tqdm bar.

    Returns:
        The completed :class:`EmbeddingMeta`.

    Raises:
        ValueError: bad arguments, or ``out_dir`` holds a run of another model/kind/collection.

    Under an initialised process group every rank must call this with the same arguments (see the module doc).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got '{dtype}'")
    n = len(paths)
    if len(dataset) != n:  # type: ignore[arg-type]
        raise ValueError(f"dataset has {len(dataset)} rows but {n} paths were given")  # type: ignore[arg-type]
    model.eval()
    kind = resolve_kind(model, kind)
    labels = labels or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mhash = model_hash(model)
    err: Exception | None = None
    try:
        state = _start(out, mhash, kind, n, dtype, paths, labels) if distributed.is_main() else None
    except (ValueError, OSError) as e:
        err, state = e, None
    distributed.raise_together(err)
    done, bad, meta, emb = distributed.broadcast_object(state) if distributed.world_size() > 1 else state  # type: ignore[misc]
    if meta is not None and meta.complete:
        return meta
    return _embed_rows(model, dataset, out, n, done, bad, meta, emb, kind, dtype, image_size, batch_size, chunk_rows,
                       num_workers, device, source, labels, mhash, progress)  # fmt: skip


_State = tuple[int, list[int], "EmbeddingMeta | None", "np.memmap[Any, Any] | None"]


def _start(
    out: Path,
    mhash: str,
    kind: str,
    n: int,
    dtype: str,
    paths: Sequence[str],
    labels: Mapping[str, Sequence[str | None]],
) -> _State:
    """Rank 0: ``(done, bad_rows, meta, memmap)`` of a previous run to resume, or a fresh start (manifest written).

    Raises:
        ValueError: ``out`` holds a run of another model/kind/collection.
    """
    done, bad = 0, []
    emb: np.memmap[Any, Any] | None = None
    meta: EmbeddingMeta | None = None
    if (out / META_FILE).is_file():
        meta = EmbeddingMeta.read(out)
        same = (meta.model_hash, meta.kind, meta.n, meta.dtype) == (mhash, kind, n, dtype)
        if not same or read_manifest(out / MANIFEST_FILE)[0] != list(paths):
            raise ValueError(
                f"{out} holds embeddings of another run (model {meta.model_hash}, kind {meta.kind}, n {meta.n}, "
                f"dtype {meta.dtype}); this run is model {mhash}, kind {kind}, n {n}, dtype {dtype}. "
                "Use a new output folder or delete the old one."
            )
        if meta.complete:
            log.info("%s: already complete (%d rows)", out, n)
            return 0, [], meta, None
        prog = json.loads((out / PROGRESS_FILE).read_text()) if (out / PROGRESS_FILE).is_file() else {}
        done, bad = int(prog.get("done", 0)), list(prog.get("bad_rows", []))
        if done and (out / EMB_FILE).is_file():
            emb = np.load(out / EMB_FILE, mmap_mode="r+")
            log.info("%s: resuming at row %d of %d", out, done, n)
        else:
            done, bad = 0, []
    else:
        write_manifest(out / MANIFEST_FILE, paths, labels)
    if distributed.world_size() > 1:
        emb = None  # a memmap does not travel; rank 0 reopens it below
    return done, bad, meta, emb


def _embed_rows(
    model: Embedder,
    dataset: Dataset[Any],
    out: Path,
    n: int,
    done: int,
    bad: list[int],
    meta: EmbeddingMeta | None,
    emb: np.memmap[Any, Any] | None,
    kind: str,
    dtype: str,
    image_size: int,
    batch_size: int,
    chunk_rows: int,
    num_workers: int,
    device: str,
    source: str,
    labels: Mapping[str, Sequence[str | None]],
    mhash: str,
    progress: bool,
) -> EmbeddingMeta:
    """Embed rows ``done..n-1`` chunk by chunk (sharded over ranks); rank 0 writes and records each chunk."""
    rank, world, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    if main and emb is None and done and (out / EMB_FILE).is_file():
        emb = np.load(out / EMB_FILE, mmap_mode="r+")
    chunks = [(s, min(s + chunk_rows, n)) for s in range(done, n, chunk_rows)]
    batches: list[list[int]] = []
    per_chunk: list[int] = []
    for s, e in chunks:  # this rank's rows of each chunk, in batches that never cross a chunk boundary
        mine = list(range(s + rank, e, world))
        per_chunk.append(len(batches))
        batches += [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    per_chunk.append(len(batches))
    loader = DataLoader(_Rows(dataset, range(n)), batch_sampler=batches, num_workers=num_workers,
                        collate_fn=_split_batch)  # fmt: skip
    batch_iter = iter(loader)
    bar = tqdm(total=n, initial=done, disable=not progress or not main, desc="embed", unit="img")
    for c, (s, e) in enumerate(chunks):
        rows_c: list[int] = []
        bad_c: list[int] = []
        zs: list[NDArray[Any]] = []
        for _ in range(per_chunk[c + 1] - per_chunk[c]):
            x, rows, bad_rows = next(batch_iter)
            bad_c += bad_rows
            if x is not None:
                zs.append(pick_embedding(model.embed(x.to(device)), kind).cpu().numpy())
                rows_c += rows
        parts = distributed.gather_objects((rows_c, np.concatenate(zs) if zs else None, bad_c))
        if parts is not None:  # rank 0
            for rows, z, bad_rows in parts:
                bad.extend(bad_rows)
                if z is not None:
                    if emb is None:
                        emb = np.lib.format.open_memmap(out / EMB_FILE, mode="w+", dtype=dtype, shape=(n, z.shape[1]))
                        meta = EmbeddingMeta(mhash, kind, int(z.shape[1]), dtype, n, image_size, source, list(labels))
                        meta.manifest_sha256 = manifest_sha256(out / MANIFEST_FILE)
                        meta.write(out)
                    emb[rows] = z.astype(dtype)
                if bad_rows and emb is not None:
                    emb[bad_rows] = 0
            if emb is not None:
                emb.flush()
            _atomic_json(out / PROGRESS_FILE, {"done": e, "bad_rows": bad})
        bar.update(e - s)
    bar.close()
    err: Exception | None = None
    if main:
        try:
            meta = _finish(out, n, bad, meta, emb)
        except ValueError as e:
            err = e
    distributed.raise_together(err)
    return distributed.broadcast_object(meta)  # type: ignore[return-value]


def _finish(
    out: Path, n: int, bad: list[int], meta: EmbeddingMeta | None, emb: np.memmap[Any, Any] | None
) -> EmbeddingMeta:
    """Rank 0: zero the bad rows, record completion and write the final ``meta.json``."""
    if emb is None or meta is None:
        raise ValueError(f"no readable image among the {n} rows; nothing embedded")
    for r in bad:  # bad rows seen before the memmap existed
        emb[r] = 0
    emb.flush()
    _atomic_json(out / PROGRESS_FILE, {"done": n, "bad_rows": bad})
    meta.bad_rows = sorted(set(bad))
    meta.complete = True
    meta.write(out)
    if bad:
        log.warning("%d unreadable images stored as zero rows (left out of the index): %s", len(bad), bad[:5])
    return meta


def embed_collection(
    model: Embedder,
    collection_path: str,
    out_dir: str | Path,
    fmt: str = "auto",
    label_column: str = "label",
    root: str = "",
    **kwargs: Any,
) -> EmbeddingMeta:
    """Embed a collection (folder, ImageFolder tree or CSV) with the data layer's eval transform.

    Args:
        model: see :func:`embed_dataset`.
        collection_path: folder or CSV manifest (``data.load_collection``).
        out_dir: output folder.
        fmt: ``auto | folder | imagefolder | csv``.
        label_column: the class column (all label columns go into the manifest).
        root: base folder for relative CSV paths.
        **kwargs: forwarded to :func:`embed_dataset` (``kind``, ``dtype``, ``image_size``, ``batch_size``...).
    """
    from ssl_art.data import ImageDataset, build_eval_transform, load_collection

    coll = load_collection(collection_path, fmt=fmt, label_column=label_column, root=root)
    size = int(kwargs.get("image_size", 224))
    ds = ImageDataset(coll, build_eval_transform(size), label_column=label_column)
    return embed_dataset(model, ds, out_dir, [str(p) for p in coll.paths], dict(coll.labels), **kwargs)
