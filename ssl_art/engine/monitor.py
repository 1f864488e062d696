"""Online kNN monitor: the learning curve of a pretraining run, as solo-learn's and lightly's online kNN give it.

Every ``monitor.every_epochs`` epochs (and once before the first step) the current backbone embeds a small labelled
collection in eval mode and a weighted kNN vote (:mod:`ssl_art.eval.knn`, FAISS) classifies it: with stratified
folds of ``monitor.path`` (:func:`ssl_art.eval.crossval.stratified_folds`, each image a query once, the other folds
its bank) or, with ``monitor.eval_path``, ``path`` as the bank and ``eval_path`` as the queries. The top-1 of the
first label column is ``monitor/knn_top1``; further columns give ``monitor/knn_top1_<column>`` (on the synthetic
collection ``label_columns=[label, content]`` tracks style and content separately).

It is cheap by construction: the images are decoded and eval-transformed once, at the start of the run (at most
``monitor.max_images`` of them, a seeded random subset), and kept as one float32 tensor; a check is a forward pass
over them plus an exact search. The check forks the CPU RNG, so a run with the monitor on trains exactly as one
with it off, and it restores the method's train mode (:func:`ssl_art.eval.features.extract`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ssl_art.config import ConfigError, DataCfg, MonitorCfg
from ssl_art.data import Collection, build_collection, build_eval_transform, build_loader
from ssl_art.eval.crossval import stratified_folds
from ssl_art.eval.features import extract
from ssl_art.eval.knn import knn_accuracy
from ssl_art.methods.base import PretrainMethod

log = logging.getLogger("ssl_art.engine")


@dataclass
class LabelledImages:
    """Decoded, eval-transformed images with their labels.

    Attributes:
        images: ``(N, 3, S, S)`` float32, ImageNet-normalised.
        labels: column -> ``(N,)`` label strings (``None`` = missing).
    """

    images: Tensor
    labels: dict[str, list[str | None]]


def decode_collection(
    collection: Collection, image_size: int, data: DataCfg, seed: int, columns: tuple[str, ...]
) -> LabelledImages:
    """Decode every readable image of ``collection`` once with the eval transform (unreadable ones are skipped)."""
    for col in columns:
        if col not in collection.labels:
            have = ", ".join(collection.labels) or "none"
            raise ConfigError(
                f"monitor.label_columns: {col!r} is not a label column of {collection.source or 'the collection'} "
                f"(have {have})"
            )
    loader = build_loader(collection, build_eval_transform(image_size), data, train=False, seed=seed)
    images: list[Tensor] = []
    kept: list[int] = []
    for batch in loader:
        if batch.views:
            images.append(batch.views[0])
            kept += [int(i) for i in batch.indices]
    if not images:
        raise ConfigError(f"monitor.path: no readable image in {collection.source}")
    return LabelledImages(
        images=torch.cat(images), labels={c: [collection.labels[c][i] for i in kept] for c in columns}
    )


def _load(path: str, cfg: MonitorCfg, data: DataCfg, seed: int, key: str) -> LabelledImages:
    try:
        coll = build_collection(dataclasses.replace(data, path=path, format="auto", root=""), seed)
    except ValueError as e:
        raise ConfigError(f"{key}={path!r}: {e}") from e
    if cfg.max_images and len(coll) > cfg.max_images:
        keep = np.sort(np.random.default_rng(seed).permutation(len(coll))[: cfg.max_images])
        coll = coll.subset(keep)
    size = cfg.image_size or data.image_size
    # decode with the monitor's batch size and no workers: a one-off cost that must not leave processes behind
    return decode_collection(
        coll, size, dataclasses.replace(data, batch_size=cfg.batch_size, num_workers=0), seed, cfg.label_columns
    )


def _targets(*label_lists: list[str | None]) -> tuple[list[NDArray[np.int64]], int]:
    """Class indices (``-1`` = missing) over the union of classes of all lists, and the number of classes."""
    classes = sorted({v for labels in label_lists for v in labels if v is not None})
    index = {c: k for k, c in enumerate(classes)}
    out = [np.array([-1 if v is None else index[v] for v in labels], dtype=np.int64) for labels in label_lists]
    return out, len(classes)


class KnnMonitor:
    """An :class:`~ssl_art.engine.hooks.EpochHook`: kNN top-1 of the current model on a small labelled set.

    Args:
        bank: the labelled images (folds of it, or the kNN bank of a fixed split).
        queries: the fixed split's query images; ``None`` = stratified folds of ``bank``.
        cfg: the ``monitor`` config section (``every_epochs``, ``folds``, ``k``, ``t``, ``embedding`` ...).
        seed: seeds the folds.

    Raises:
        ConfigError: ``monitor.folds`` larger than the set, or a column without two labelled classes.
    """

    def __init__(self, bank: LabelledImages, queries: LabelledImages | None, cfg: MonitorCfg, seed: int = 0) -> None:
        self.bank, self.queries, self.cfg, self.seed = bank, queries, cfg, seed
        self.columns = cfg.label_columns
        self._splits: dict[str, tuple[NDArray[np.int64], NDArray[np.int64] | None, int]] = {}
        for col in self.columns:
            if queries is None:
                (y,), c = _targets(bank.labels[col])
                qy = None
                if int((y >= 0).sum()) < cfg.folds:
                    raise ConfigError(
                        f"monitor.folds={cfg.folds} exceeds the {int((y >= 0).sum())} images labelled in column "
                        f"{col!r}; lower monitor.folds or raise monitor.max_images"
                    )
            else:
                (y, qy), c = _targets(bank.labels[col], queries.labels[col])
            if c < 2:
                raise ConfigError(f"monitor: column {col!r} has {c} labelled class(es); kNN accuracy needs 2 or more")
            self._splits[col] = (y, qy, c)

    @classmethod
    def from_config(cls, cfg: MonitorCfg, data: DataCfg, seed: int = 0) -> KnnMonitor:
        """Load and decode ``cfg.path`` (and ``cfg.eval_path``) with ``data``'s synthetic/bad-file settings.

        Raises:
            ConfigError: a path that does not exist, a missing label column, or too few images for the folds.
        """
        t0 = time.time()
        bank = _load(cfg.path, cfg, data, seed, "monitor.path")
        queries = _load(cfg.eval_path, cfg, data, seed, "monitor.eval_path") if cfg.eval_path else None
        mon = cls(bank, queries, cfg, seed)
        n_q = 0 if queries is None else queries.images.shape[0]
        log.info(
            "kNN monitor: %d images%s of %s at %d px, every %d epoch(s), decoded in %.1f s",
            bank.images.shape[0],
            f" + {n_q} queries" if n_q else f" ({cfg.folds} folds)",
            cfg.path or "<synthetic>",
            bank.images.shape[-1],
            cfg.every_epochs,
            time.time() - t0,
        )
        return mon

    def due(self, epoch: int) -> bool:
        """Whether ``epoch`` (completed epochs; 0 = before the first step) is one the monitor measures."""
        every = self.cfg.every_epochs
        if every <= 0:
            return False
        return self.cfg.at_start if epoch == 0 else epoch % every == 0

    def _batches(self, images: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        bs = self.cfg.batch_size
        for start in range(0, images.shape[0], bs):
            chunk = images[start : start + bs]
            yield chunk, torch.full((chunk.shape[0],), -1, dtype=torch.long)

    def features(self, method: PretrainMethod) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """``(bank (N, D), queries (M, D) | None)`` embeddings of the monitor's images by the current ``method``."""
        device = next(method.parameters()).device
        with torch.random.fork_rng(devices=[]):  # the forward pass must not move the training RNG stream
            bank = extract(method, self._batches(self.bank.images), device, self.cfg.embedding, progress=False).feats
            queries = None
            if self.queries is not None:
                queries = extract(
                    method, self._batches(self.queries.images), device, self.cfg.embedding, progress=False
                ).feats
        return bank, queries

    def score(self, bank: NDArray[np.float32], queries: NDArray[np.float32] | None) -> dict[str, float]:
        """kNN top-1 per label column from precomputed features (mean over folds without a fixed split)."""
        out: dict[str, float] = {}
        for i, col in enumerate(self.columns):
            y, qy, c = self._splits[col]
            if queries is not None and qy is not None:
                b_keep, q_keep = y >= 0, qy >= 0
                k = min(self.cfg.k, int(b_keep.sum()))
                acc = knn_accuracy(bank[b_keep], y[b_keep], queries[q_keep], qy[q_keep], k, self.cfg.t, c)["top1"]
            else:
                keep = np.flatnonzero(y >= 0)
                accs = []
                for tr, ev in stratified_folds(y[keep], self.cfg.folds, self.seed):
                    tr_i, ev_i = keep[tr], keep[ev]
                    k = min(self.cfg.k, len(tr_i))
                    accs.append(knn_accuracy(bank[tr_i], y[tr_i], bank[ev_i], y[ev_i], k, self.cfg.t, c)["top1"])
                acc = float(np.mean(accs))
            out["monitor/knn_top1" if i == 0 else f"monitor/knn_top1_{col}"] = acc
        return out

    def evaluate(self, method: PretrainMethod) -> dict[str, float]:
        """Measure now, whatever the epoch: ``{"monitor/knn_top1": ..., "monitor/seconds": ...}``."""
        t0 = time.time()
        out = self.score(*self.features(method))
        out["monitor/seconds"] = time.time() - t0
        return out

    def __call__(self, method: PretrainMethod, epoch: int, step: int) -> dict[str, float]:
        return self.evaluate(method) if self.due(epoch) else {}
