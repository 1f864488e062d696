"""Frozen-feature extraction: run a method's ``embed`` over a loader and stack one embedding as a numpy array.

The method is put in eval mode (BatchNorm uses running statistics, dropout off) under ``torch.no_grad``, and its
previous mode is restored afterwards. Samples the loader reports as unreadable (``Batch.bad``) are not in the batch
tensors; they are counted and listed so that callers can log them, and the returned ``indices`` say which collection
items the feature rows belong to. Loaders may yield ``ssl_art.data`` ``Batch`` objects (``views``, ``targets``,
``indices``, ``bad``) or plain ``(images, targets[, indices])`` tuples, which keeps tests free of the data layer.

Under ``torchrun`` a caller that passes ``sharded=True`` gives a loader holding this rank's shard (``build_loader``
gives it a ``DistributedSampler``); the shards are gathered on rank 0 (a collective: every rank must call it),
de-duplicated (the sampler pads the last shard with repeats) and put in collection order, so rank 0 gets what one
process would have extracted, row for row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from tqdm import tqdm

from ssl_art import distributed
from ssl_art.methods.base import PretrainMethod

log = logging.getLogger(__name__)


@dataclass
class ExtractedFeatures:
    """Stacked features of a whole loader.

    Attributes:
        feats: ``(N, D)`` float32 embeddings.
        targets: ``(N,)`` int64 classes, ``-1`` where missing (or everywhere when the loader has no labels).
        indices: ``(N,)`` int64 collection indices of the rows.
        bad: ``(index, kind, path)`` of each sample the loader could not read.
    """

    feats: NDArray[np.float32]
    targets: NDArray[np.int64]
    indices: NDArray[np.int64]
    bad: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        """How many samples were skipped as unreadable."""
        return len(self.bad)


def resolve_embedding(method: PretrainMethod, embedding: str) -> str:
    """``auto`` -> ``method.default_embedding``; other names pass through."""
    return str(getattr(method, "default_embedding", "pooled")) if embedding == "auto" else embedding


def _unpack(batch: Any, start: int) -> tuple[Tensor, Tensor | None, Tensor, list[tuple[Any, ...]]]:
    """``(images (B, 3, H, W), targets (B,) | None, indices (B,), bad)`` from a Batch or a tuple."""
    if hasattr(batch, "views"):
        # a batch whose samples were all unreadable has no views
        images = batch.views[0] if batch.views else torch.zeros(0, 3, 1, 1)
        targets = getattr(batch, "targets", None)
        indices = getattr(batch, "indices", None)
        bad = list(getattr(batch, "bad", []) or [])
    else:
        images = batch[0]
        targets = batch[1] if len(batch) > 1 else None
        indices = batch[2] if len(batch) > 2 else None
        bad = []
    if indices is None:
        indices = torch.arange(start, start + images.shape[0])
    return images, (torch.as_tensor(targets) if targets is not None else None), torch.as_tensor(indices), bad


@torch.no_grad()
def extract(
    method: PretrainMethod,
    loader: Iterable[Any],
    device: torch.device | str = "cpu",
    embedding: str = "auto",
    progress: bool = True,
    desc: str = "features",
    sharded: bool = False,
) -> ExtractedFeatures:
    """Embed every sample of ``loader`` with ``method.embed`` and keep the ``embedding`` entry.

    Args:
        method: any :class:`PretrainMethod` (its ``embed`` returns a dict of ``(B, D_k)`` tensors).
        loader: yields ``Batch`` objects or ``(images, targets[, indices])`` tuples; use an eval transform.
        device: where to run the model.
        embedding: key of ``embed``'s dict (``pooled``, ``fused``, ``gram``) or ``auto`` for the method's default.
        progress: show a tqdm bar.
        desc: progress-bar label.
        sharded: the loader holds this rank's shard under torchrun: gather every rank's rows on rank 0 (collective;
            a no-op in one process). ``False`` (e.g. a rank-0-only monitor): this loader's rows only.

    Returns:
        :class:`ExtractedFeatures`; with ``sharded`` under several processes, all ranks' rows on rank 0 (collection
        order) and this rank's own shard elsewhere.

    Raises:
        ValueError: when the method has no such embedding, or the loader yields no sample.
    """
    key = resolve_embedding(method, embedding)
    was_training = method.training
    method.eval()
    method.to(device)
    feats: list[Tensor] = []
    targets: list[Tensor] = []
    indices: list[Tensor] = []
    bad: list[tuple[Any, ...]] = []
    seen = 0
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images, y, idx, batch_bad = _unpack(batch, seen)
            bad += batch_bad
            if images.shape[0] == 0:
                continue
            out = method.embed(images.to(device, non_blocking=True))
            if key not in out:
                raise ValueError(f"embedding '{key}' not produced by {type(method).__name__}; have {sorted(out)}")
            feats.append(out[key].float().cpu())
            targets.append(y.long().cpu() if y is not None else torch.full((images.shape[0],), -1, dtype=torch.long))
            indices.append(idx.long().cpu())
            seen += images.shape[0]
    finally:
        method.train(was_training)
    if sharded and distributed.world_size() > 1:
        return _gather_shards(feats, targets, indices, bad)
    if bad:
        log.warning("skipped %d unreadable samples, e.g. %s", len(bad), bad[:3])
    if not feats:
        raise ValueError("the loader yielded no readable sample; nothing to evaluate")
    return ExtractedFeatures(
        feats=torch.cat(feats).numpy().astype(np.float32, copy=False),
        targets=torch.cat(targets).numpy().astype(np.int64, copy=False),
        indices=torch.cat(indices).numpy().astype(np.int64, copy=False),
        bad=bad,
    )


def extract_features(
    method: PretrainMethod,
    loader: Iterable[Any],
    device: torch.device | str = "cpu",
    embedding: str = "auto",
    progress: bool = True,
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]:
    """``(feats (N, D) float32, targets (N,) int64, indices (N,) int64)``; see :func:`extract` (bad samples logged)."""
    out = extract(method, loader, device, embedding, progress)
    return out.feats, out.targets, out.indices


def _gather_shards(
    feats: list[Tensor], targets: list[Tensor], indices: list[Tensor], bad: list[tuple[Any, ...]]
) -> ExtractedFeatures:
    """Collective: every rank's rows on rank 0, one per collection index, in index order; the local shard elsewhere."""
    local = (
        torch.cat(feats).numpy() if feats else np.zeros((0, 0), np.float32),
        torch.cat(targets).numpy() if targets else np.zeros(0, np.int64),
        torch.cat(indices).numpy() if indices else np.zeros(0, np.int64),
        bad,
    )
    parts = distributed.gather_objects(local)
    if parts is None:
        return ExtractedFeatures(local[0].astype(np.float32), local[1].astype(np.int64), local[2].astype(np.int64), bad)
    rows = [p for p in parts if p[2].size]
    if not rows:
        raise ValueError("the loader yielded no readable sample; nothing to evaluate")
    idx = np.concatenate([p[2] for p in rows])
    _, first = np.unique(idx, return_index=True)  # sorted unique indices; padding repeats dropped
    all_bad = {tuple(b)[0]: tuple(b) for p in parts for b in p[3]}  # one entry per unreadable index
    if all_bad:
        log.warning("skipped %d unreadable samples, e.g. %s", len(all_bad), list(all_bad.values())[:3])
    return ExtractedFeatures(
        feats=np.concatenate([p[0] for p in rows]).astype(np.float32, copy=False)[first],
        targets=np.concatenate([p[1] for p in rows]).astype(np.int64, copy=False)[first],
        indices=idx.astype(np.int64, copy=False)[first],
        bad=[all_bad[k] for k in sorted(all_bad)],
    )
