"""Resumable data order and augmentation: a run stopped mid-epoch continues with exactly the batches it would have seen.

Two pieces make a resumed run identical to an uninterrupted one: :class:`ResumableSampler` draws the epoch's
permutation from ``(seed, epoch)`` and can start at any position, and :class:`SeededDataset` seeds torch's and
Python's RNGs from ``(seed, epoch, index)`` before each sample's augmentation, so a view does not depend on which
worker produced it or on what ran before. The sampler yields ``epoch * n + i`` so the epoch reaches the dataset
even inside persistent workers (which hold their own copy of the dataset object).

Under several processes every rank must see the same number of equally sized batches, or the collectives of a
step (gradient all-reduce, gathered negatives) pair up wrong or wait forever. So the sampler keeps only the first
``keep`` items of each epoch's permutation (whole global batches; the rest of the permutation is left for other
epochs, as ``drop_last`` does in one process), and :class:`SeededDataset` replaces an unreadable sample by the next
readable one in collection order (a :class:`~ssl_art.data.dataset.Substitute`, counted as bad), so a batch never
shrinks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from ssl_art.data.dataset import BadSample, Substitute


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation that can skip the first ``start`` items (already trained on).

    With ``world_size > 1`` each rank takes every ``world_size``-th item after ``start`` (DistributedSampler-style),
    so ``start`` counts samples consumed by all ranks together. ``keep > 0`` uses only the first ``keep`` items of
    each epoch's permutation (a multiple of the global batch: every rank then gets the same whole batches).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1, keep: int = 0):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.keep = min(keep, n) if keep > 0 else n
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and the position to start from."""
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.n
        return iter([base + i for i in self.order()[self.start : self.keep][self.rank :: self.world_size]])

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.keep, self.world_size))


class SeededDataset(Dataset[Any]):
    """Wraps a dataset so that key ``e * n + i`` gives sample ``i`` augmented with RNG seed ``f(seed, e, i)``.

    A :class:`~ssl_art.data.dataset.BadSample` at ``i`` becomes a :class:`~ssl_art.data.dataset.Substitute`: the
    first readable sample after ``i`` (wrapping around), augmented with ``i``'s seed, so the result depends only on
    ``(seed, e, i)``. When nothing is readable the ``BadSample`` is returned as it is.
    """

    def __init__(self, dataset: Dataset[Any], seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        assert isinstance(self.dataset, Sized)
        return len(self.dataset)

    def __getitem__(self, key: int) -> Any:
        epoch, i = divmod(key, len(self))
        s = (self.seed * 1_000_003 + epoch) * 10_000_019 + i
        torch.manual_seed(s % (2**63))
        random.seed(s)
        item = self.dataset[i]
        if not isinstance(item, BadSample):
            return item
        n = len(self)
        for k in range(1, n):
            torch.manual_seed(s % (2**63))
            random.seed(s)
            alt = self.dataset[(i + k) % n]
            if not isinstance(alt, BadSample):
                return Substitute(item, alt)
        return item
