"""Resumable data order and augmentation: a run stopped mid-epoch continues with exactly the batches it would have seen.

Two pieces make a resumed run identical to an uninterrupted one: :class:`ResumableSampler` draws the epoch's
permutation from ``(seed, epoch)`` and can start at any position, and :class:`SeededDataset` seeds torch's and
Python's RNGs from ``(seed, epoch, index)`` before each sample's augmentation, so a view does not depend on which
worker produced it or on what ran before. The sampler yields ``epoch * n + i`` so the epoch reaches the dataset
even inside persistent workers (which hold their own copy of the dataset object).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation that can skip the first ``start`` items (already trained on).

    With ``world_size > 1`` each rank takes every ``world_size``-th item after ``start`` (DistributedSampler-style),
    so ``start`` counts samples consumed by all ranks together.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
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
        return iter([base + i for i in self.order()[self.start :][self.rank :: self.world_size]])

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.n, self.world_size))


class SeededDataset(Dataset[Any]):
    """Wraps a dataset so that key ``e * n + i`` gives sample ``i`` augmented with RNG seed ``f(seed, e, i)``."""

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
        return self.dataset[i]
