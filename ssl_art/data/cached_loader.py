"""The cached input path: sampler keys -> uint8 batch gathered from an :class:`~ssl_art.data.cache.ImageCache` ->
:class:`~ssl_art.data.batch_aug.BatchAugment` on the training device -> :class:`~ssl_art.data.loaders.Batch`.

Replaces the DataLoader of the per-image PIL path with the same contract: the sampler yields ``epoch * n + i``
keys (:class:`~ssl_art.engine.sampler.ResumableSampler`), batches are cut from its order with ``drop_last``, bad
images (flagged when the cache was built) are replaced in their batch by the next readable image (augmented with
the bad image's seed, as :class:`~ssl_art.engine.sampler.SeededDataset` does) and listed in ``batch.bad`` exactly as
:func:`~ssl_art.data.loaders.collate` does. A cache in RAM becomes one resident ``(N, 3, S, L)`` uint8 tensor on
the device (GPU memory on CUDA; zero-copy on CPU) and batches are ``index_select``-ed there; a disk cache streams:
a background thread reads the next batches (``pread``) into pinned buffers and copies them to the device
asynchronously while the model trains. Augmentation randomness is a function of the key only (per-sample seeds).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_art.data.batch_aug import BatchAugment, MultiCropAugment, draw_uniforms, sample_seed
from ssl_art.data.cache import ImageCache
from ssl_art.data.loaders import Batch

_DONE = object()


class CachedBatches:
    """Iterable of augmented :class:`Batch` es following ``sampler``'s current epoch.

    Args:
        cache: the opened cache (row ``i`` = collection image ``i``).
        sampler: yields keys ``epoch * n + i`` (re-iterated every epoch; ``set_epoch`` is the caller's).
        batch_size: samples per batch (incomplete last batch dropped).
        augment: the batched views.
        n_views: views per sample (global + local: the uniform rows drawn per sample).
        seed: run seed for :func:`~ssl_art.data.batch_aug.sample_seed`.
        device: where pool, augmentation and views live.
        paths: the collection's paths (for ``batch.bad``).
        targets: ``(N,)`` int64 class index per image (``-1`` unlabeled); ``None`` = all ``-1``.
        prefetch: batches read ahead by the background thread (disk caches; 0 = synchronous).
        channels_last: views in ``torch.channels_last`` memory format.
    """

    def __init__(
        self,
        cache: ImageCache,
        sampler: Iterable[int],
        batch_size: int,
        augment: BatchAugment | MultiCropAugment,
        n_views: int,
        seed: int,
        device: torch.device,
        paths: Sequence[str],
        targets: np.ndarray | None = None,
        prefetch: int = 2,
        channels_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.cache, self.sampler, self.batch_size = cache, sampler, batch_size
        self.augment, self.n_views, self.seed, self.device = augment, n_views, seed, device
        self.paths, self.prefetch, self.channels_last = paths, prefetch, channels_last
        n = len(cache)
        self.targets = torch.as_tensor(targets if targets is not None else np.full(n, -1), dtype=torch.int64)
        self.hw = torch.as_tensor(cache.hw, dtype=torch.int64)
        self.transposed = torch.as_tensor(cache.transposed, dtype=torch.bool)
        self._pool: Tensor | None = None
        self.pinned = device.type == "cuda"

    @property
    def resident(self) -> bool:
        """The whole cache is held on the device (a RAM cache)."""
        return self.cache.pixels is not None

    def pool(self) -> Tensor:
        """The device-resident ``(N, 3, S, L)`` uint8 pool (moved on first use, after the device is selected)."""
        if self._pool is None:
            assert self.cache.pixels is not None
            self._pool = torch.from_numpy(self.cache.pixels).to(self.device)
        return self._pool

    def _split(self, keys: list[int]) -> tuple[list[int], list[int], list[tuple[int, str, str]]]:
        """Keys -> (good indices, their per-sample seeds, bad triples)."""
        n = len(self.cache)
        good, seeds, bad = [], [], []
        for key in keys:
            epoch, i = divmod(int(key), n)
            kind = self.cache.kind(i)
            if kind:
                bad.append((i, kind, self.paths[i]))
                j = self._substitute(i)  # keep the batch size (equal batches on every rank under DDP)
                if j is None:
                    continue
                good.append(j)
                seeds.append(sample_seed(self.seed, epoch, i))
            else:
                good.append(i)
                seeds.append(sample_seed(self.seed, epoch, i))
        return good, seeds, bad

    def _substitute(self, i: int) -> int | None:
        """The first readable image after ``i`` (wrapping around), which stands in for bad image ``i``."""
        n = len(self.cache)
        for k in range(1, n):
            if not self.cache.kind((i + k) % n):
                return (i + k) % n
        return None

    def _read(self, good: list[int]) -> Tensor:
        """Gather uint8 canvases of ``good`` onto the device."""
        if self.resident:
            idx = torch.as_tensor(good, dtype=torch.int64, device=self.device)
            return self.pool().index_select(0, idx)
        s = self.cache.shape
        buf = torch.empty((len(good), 3, s.short, s.long), dtype=torch.uint8, pin_memory=self.pinned)
        self.cache.gather(good, out=buf.numpy())
        return buf.to(self.device, non_blocking=self.pinned)

    def _prepare(self, keys: list[int]) -> tuple[list[int], Tensor | None, Tensor, list[tuple[int, str, str]]]:
        good, seeds, bad = self._split(keys)
        canvas = self._read(good) if good else None
        return good, canvas, draw_uniforms(seeds, self.n_views), bad

    def _finish(self, good: list[int], canvas: Tensor | None, u: Tensor, bad: list[tuple[int, str, str]]) -> Batch:
        idx = torch.as_tensor(good, dtype=torch.int64)
        views: list[Tensor] = []
        if canvas is not None:
            views = self.augment(canvas, self.hw[idx], self.transposed[idx], u)
            if self.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return Batch(views=views, targets=self.targets[idx], indices=idx, bad=bad)

    def _chunks(self) -> list[list[int]]:
        keys = list(self.sampler)
        b = self.batch_size
        return [keys[k * b : (k + 1) * b] for k in range(len(keys) // b)]

    def __iter__(self) -> Iterator[Batch]:
        chunks = self._chunks()
        if self.resident or self.prefetch <= 0:
            for keys in chunks:
                yield self._finish(*self._prepare(keys))
            return
        yield from self._streamed(chunks)

    def _streamed(self, chunks: list[list[int]]) -> Iterator[Batch]:
        """Read ahead in a thread (I/O and the host->device copy overlap the training step)."""
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for keys in chunks:
                    item = self._prepare(keys)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(_DONE)
            except BaseException as e:  # noqa: BLE001 -- re-raised in the consumer
                q.put(e)

        worker = threading.Thread(target=produce, name="ssl_art-cache-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self._finish(*item)
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)
