"""The cached batched input path: sampler order, drop_last, bad samples, resident == streamed, resume positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_art.config import AugCfg
from ssl_art.data.batch_aug import BatchAugment
from ssl_art.data.cache import StoredShape, build_cache, open_cache
from ssl_art.data.cached_loader import CachedBatches
from ssl_art.data.collection import load_collection
from ssl_art.engine.sampler import ResumableSampler


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for k in range(11):
        w, h = [(30, 24), (24, 30), (28, 28)][k % 3]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{k:02d}.png")
    (root / "05.png").write_bytes(b"not a png")  # index 5 is bad
    coll = load_collection(str(root))
    return build_cache(coll, root.parent / "cache", StoredShape(18, 22), progress=False), coll.paths


def _batches(folder: Path, paths: list[str], mode: str, sampler: ResumableSampler, bs: int = 4) -> CachedBatches:
    aug = BatchAugment(AugCfg(preset="simclr", blur_prob=0.5), 16)
    return CachedBatches(open_cache(folder, mode), sampler, bs, aug, 2, 0, torch.device("cpu"), paths, prefetch=2)


def test_order_drop_last_and_bad_samples(built: tuple[Path, list[str]]) -> None:
    folder, paths = built
    sampler = ResumableSampler(11, seed=1)
    sampler.set_epoch(2)
    order = sampler.order()
    got = list(_batches(folder, paths, "ram", sampler))
    assert len(got) == 2  # 11 // 4, last incomplete batch dropped
    for k, batch in enumerate(got):
        expect = order[4 * k : 4 * k + 4]
        # bad image 5 is replaced by the next readable one (6): batches keep their size (equal on every DDP rank)
        assert batch.indices.tolist() == [6 if i == 5 else i for i in expect]
        assert batch.bad == ([(5, "not_an_image", paths[5])] if 5 in expect else [])
        assert len(batch.views) == 2 and batch.views[0].shape == (len(batch), 3, 16, 16)
        assert batch.targets.tolist() == [-1] * len(batch)


def test_streamed_disk_equals_resident_ram(built: tuple[Path, list[str]]) -> None:
    folder, paths = built
    a, b = ResumableSampler(11, seed=4), ResumableSampler(11, seed=4)
    a.set_epoch(1), b.set_epoch(1)
    ram, disk = list(_batches(folder, paths, "ram", a, 2)), list(_batches(folder, paths, "disk", b, 2))
    assert not _batches(folder, paths, "disk", b).resident
    assert len(ram) == len(disk) == 5
    for x, y in zip(ram, disk, strict=True):
        assert torch.equal(x.indices, y.indices) and x.bad == y.bad
        for vx, vy in zip(x.views, y.views, strict=True):
            torch.testing.assert_close(vx, vy, rtol=0, atol=0)


def test_resume_position_gives_the_remaining_batches(built: tuple[Path, list[str]]) -> None:
    folder, paths = built
    full_s, rest_s = ResumableSampler(11, seed=2), ResumableSampler(11, seed=2)
    full_s.set_epoch(3)
    rest_s.set_epoch(3, start=4)  # one batch of 4 already trained on
    full, rest = list(_batches(folder, paths, "ram", full_s)), list(_batches(folder, paths, "disk", rest_s))
    assert len(rest) == 1
    assert torch.equal(full[1].indices, rest[0].indices)
    torch.testing.assert_close(full[1].views[0], rest[0].views[0], rtol=0, atol=0)


def test_early_break_stops_the_prefetch_thread(built: tuple[Path, list[str]]) -> None:
    import threading

    folder, paths = built
    s = ResumableSampler(11, seed=0)
    it = iter(_batches(folder, paths, "disk", s, 1))
    next(it)
    it.close()  # what `break` in the training loop does
    assert not any(t.name == "ssl_art-cache-prefetch" and t.is_alive() for t in threading.enumerate())


def test_channels_last_views(built: tuple[Path, list[str]]) -> None:
    folder, paths = built
    aug = BatchAugment(AugCfg(preset="art"), 16)
    b = CachedBatches(
        open_cache(folder, "ram"), ResumableSampler(11, 0), 4, aug, 2, 0, torch.device("cpu"), paths, channels_last=True
    )
    v = next(iter(b)).views[0]
    assert v.is_contiguous(memory_format=torch.channels_last)
