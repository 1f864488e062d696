"""Batching: a collate function that drops bad samples into a typed :class:`Batch`, and a seeded DataLoader factory.

:func:`collate` stacks each view into ``(B, 3, H, W)`` and lists the skipped ``(index, kind, path)`` triples, so the
engine can count bad files with :class:`~ssl_art.data.decode.BadFileReport` and apply ``data.max_bad_fraction``.
:func:`build_loader` seeds the sampler (a ``torch.Generator``) and every worker (numpy and ``random`` from torch's
per-worker seed), so two runs with the same seed see the same batches and the same augmentations. Under an
initialised ``torch.distributed`` process group it shards with a ``DistributedSampler``; the caller must then call
``loader.sampler.set_epoch(epoch)`` each epoch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from ssl_art.config import DataCfg
from ssl_art.data.collection import Collection, load_collection
from ssl_art.data.dataset import BadSample, ImageDataset, Substitute
from ssl_art.data.decode import BadFileReport

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A collated batch with bad samples removed.

    Attributes:
        views: one ``(B, 3, H, W)`` tensor per view (a single-tensor transform gives a 1-element list); empty when
            every sample of the batch was bad.
        targets: ``(B,)`` int64 class indices, ``-1`` = unlabeled.
        indices: ``(B,)`` int64 dataset indices.
        bad: ``(index, kind, path)`` of the samples that were skipped.
    """

    views: list[Tensor]
    targets: Tensor
    indices: Tensor
    bad: list[tuple[int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to ``device``."""
        return Batch(
            views=[v.to(device, non_blocking=non_blocking) for v in self.views],
            targets=self.targets.to(device, non_blocking=non_blocking),
            indices=self.indices.to(device, non_blocking=non_blocking),
            bad=self.bad,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copy (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(
            [v.pin_memory() for v in self.views], self.targets.pin_memory(), self.indices.pin_memory(), self.bad
        )

    def bad_report(self, report: BadFileReport | None = None) -> BadFileReport:
        """Add this batch's bad samples to ``report`` (a new one by default) and return it."""
        report = report if report is not None else BadFileReport()
        for _, kind, path in self.bad:
            report.add(kind, path)
        return report


def collate(batch: Sequence[tuple[Any, int, int] | BadSample | Substitute]) -> Batch:
    """Stack good samples view by view, list the bad ones.

    Args:
        batch: items from :class:`~ssl_art.data.dataset.ImageDataset`: ``(x, target, index)`` with ``x`` a
            ``(3, H, W)`` tensor or a list of them, or :class:`~ssl_art.data.dataset.BadSample`; a
            :class:`~ssl_art.data.dataset.Substitute` adds its stand-in sample to the batch and its bad one to
            ``bad``.

    Returns:
        A :class:`Batch`; ``len(batch) == 0`` (no views) when every sample was bad.

    Raises:
        ValueError: when good samples disagree on the number of views.
    """
    good = [b.sample if isinstance(b, Substitute) else b for b in batch if not isinstance(b, BadSample)]
    bad = [(b.index, b.kind, b.path) for b in (s.bad if isinstance(s, Substitute) else s for s in batch)
           if isinstance(b, BadSample)]  # fmt: skip
    views: list[Tensor] = []
    if good:
        per_sample = [[x] if isinstance(x, Tensor) else list(x) for x, _, _ in good]
        n_views = len(per_sample[0])
        if any(len(v) != n_views for v in per_sample):
            raise ValueError(f"samples disagree on the number of views: {sorted({len(v) for v in per_sample})}")
        views = [torch.stack([v[k] for v in per_sample]) for k in range(n_views)]
    targets = torch.tensor([int(t) for _, t, _ in good], dtype=torch.int64)
    indices = torch.tensor([int(i) for _, _, i in good], dtype=torch.int64)
    return Batch(views=views, targets=targets, indices=indices, bad=bad)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed (itself seeded)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_collection(cfg: DataCfg, seed: int = 0) -> Collection:
    """:func:`~ssl_art.data.collection.load_collection` with the fields of ``cfg``."""
    return load_collection(
        cfg.path,
        fmt=cfg.format,
        label_column=cfg.label_column,
        root=cfg.root,
        synthetic_size=cfg.synthetic_size,
        synthetic_image_size=cfg.synthetic_image_size,
        seed=seed,
    )


def build_loader(
    collection: Collection,
    transform: Callable[[Image.Image], Any],
    cfg: DataCfg,
    train: bool,
    seed: int,
    label_column: str | None = None,
) -> DataLoader[Any]:
    """A DataLoader yielding :class:`Batch` objects.

    Args:
        collection: the images.
        transform: PIL image -> tensor or list of view tensors.
        cfg: batch size, workers, pinning, decompression limit and the default label column.
        train: shuffle and drop the last incomplete batch (kept when the collection is smaller than one batch,
            so a tiny collection still yields a step); evaluation keeps order and every sample.
        seed: seeds the shuffling generator and (through it) every worker.
        label_column: class column for targets; ``None`` = ``cfg.label_column``.

    Returns:
        The DataLoader; under ``torch.distributed`` its sampler is a ``DistributedSampler``.
    """
    if cfg.batch_size <= 0:
        raise ValueError(f"data.batch_size must be positive, got {cfg.batch_size}")
    if cfg.num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {cfg.num_workers}")
    dataset = ImageDataset(collection, transform, cfg.max_image_pixels, label_column or cfg.label_column)
    generator = torch.Generator()
    generator.manual_seed(seed)
    drop_last = train and len(dataset) >= cfg.batch_size
    if train and not drop_last:
        log.warning(
            "collection (%d images) is smaller than one batch (%d): keeping the partial batch",
            len(dataset),
            cfg.batch_size,
        )
    sampler: DistributedSampler[Any] | None = None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=train if sampler is None else False,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and workers > 0,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=generator,
    )
