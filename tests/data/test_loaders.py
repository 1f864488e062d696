"""ImageDataset + collate + build_loader: bad files are skipped and counted, batches are typed and seeded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ssl_art.config import AugCfg, DataCfg
from ssl_art.data.collection import load_collection
from ssl_art.data.dataset import BadSample, ImageDataset
from ssl_art.data.decode import BadFileReport
from ssl_art.data.loaders import Batch, build_collection, build_loader, collate
from ssl_art.data.transforms import build_eval_transform, build_pretrain_transform
from ssl_art.runtime.errors import TooManyBadFilesError

CFG = DataCfg(batch_size=4, num_workers=0, max_image_pixels=5000, image_size=16)


def test_zoo_dataset_skips_and_counts(zoo: dict[str, Path]) -> None:
    coll = load_collection(str(zoo["good_rgb"].parent))
    assert coll.bad.counts == {"zero_byte": 1}  # dropped while indexing
    zoo["upper_ext"].unlink()  # deleted after indexing
    ds = ImageDataset(coll, build_eval_transform(16), max_image_pixels=CFG.max_image_pixels)
    kinds = {Path(s.path).name: s.kind for s in (ds[i] for i in range(len(ds))) if isinstance(s, BadSample)}
    assert kinds == {
        "UPPER.JPEG": "missing",
        "bomb.png": "decompression_bomb",
        "not_an_image.jpg": "not_an_image",
        "truncated.jpg": "truncated",
    }
    loader = build_loader(coll, build_eval_transform(16), CFG, train=False, seed=0)
    report = BadFileReport().merge(coll.bad)
    seen: list[int] = []
    for batch in loader:
        assert isinstance(batch, Batch)
        batch.bad_report(report)
        assert len(batch.views) == 1 and batch.views[0].shape == (len(batch), 3, 16, 16)
        assert (batch.targets == -1).all()  # unlabeled folder
        seen += batch.indices.tolist()
    assert len(seen) == len(coll) - 4 and sorted(seen) == seen  # eval loader keeps order
    assert report.total == 5 and report.counts["missing"] == 1
    with pytest.raises(TooManyBadFilesError, match="truncated"):
        report.check(coll.n_indexed, CFG.max_bad_fraction)
    report.check(coll.n_indexed, 0.5)  # 5 of 14 is tolerated at 50%


def test_collate_views_and_all_bad() -> None:
    a = ([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)], 2, 10)
    b = ([torch.ones(3, 4, 4), torch.zeros(3, 4, 4)], -1, 11)
    batch = collate([a, BadSample(12, "truncated", "/t.jpg"), b])
    assert len(batch.views) == 2 and batch.views[0].shape == (2, 3, 4, 4)
    assert torch.equal(batch.views[1][0], torch.ones(3, 4, 4))
    assert batch.targets.tolist() == [2, -1] and batch.targets.dtype == torch.int64
    assert batch.indices.tolist() == [10, 11] and batch.bad == [(12, "truncated", "/t.jpg")]
    single = collate([(torch.zeros(3, 2, 2), 0, 0)])
    assert len(single.views) == 1 and single.views[0].shape == (1, 3, 2, 2)
    empty = collate([BadSample(0, "missing", "/a"), BadSample(1, "zero_byte", "/b")])
    assert len(empty) == 0 and empty.views == [] and empty.targets.shape == (0,) and len(empty.bad) == 2
    with pytest.raises(ValueError, match="number of views"):
        collate([a, (torch.zeros(3, 4, 4), 0, 1)])


def test_labelled_targets_and_missing_column(tmp_path: Path) -> None:
    coll = load_collection("", synthetic_size=14, synthetic_image_size=16)
    ds = ImageDataset(coll, build_eval_transform(16))
    item = ds[9]
    assert not isinstance(item, BadSample)
    x, target, i = item
    assert x.shape == (3, 16, 16) and target == 2 and i == 9  # image 9 -> style_2
    with pytest.raises(ValueError, match="label columns: label"):
        ImageDataset(coll, build_eval_transform(16), label_column="artist")


def test_train_loader_seeded_and_shuffled() -> None:
    coll = load_collection("", synthetic_size=14, synthetic_image_size=16)
    tf = build_pretrain_transform(AugCfg(preset="simclr", n_views=2), 16)

    def run(seed: int) -> list[Batch]:
        torch.manual_seed(123)  # num_workers=0: augmentations use the global RNG
        return list(build_loader(coll, tf, CFG, train=True, seed=seed))

    a, b, c = run(0), run(0), run(1)
    assert len(a) == 3  # 14 // 4, last partial batch dropped
    assert all(len(x.views) == 2 and x.views[0].shape == (4, 3, 16, 16) for x in a)
    order = [x.indices.tolist() for x in a]
    assert order == [x.indices.tolist() for x in b]
    assert order != [x.indices.tolist() for x in c]
    assert sum(order, []) != sorted(sum(order, []))
    assert all(torch.equal(x.views[1], y.views[1]) for x, y in zip(a, b))
    targets = coll.targets()
    assert all(torch.equal(x.targets, torch.from_numpy(targets[x.indices.numpy()])) for x in a)


def test_workers_reproducible() -> None:
    coll = load_collection("", synthetic_size=8, synthetic_image_size=16)
    cfg = dataclasses.replace(CFG, num_workers=2, persistent_workers=True)
    tf = build_pretrain_transform(AugCfg(), 16)
    loader = build_loader(coll, tf, cfg, train=True, seed=5)
    assert loader.persistent_workers and loader.drop_last
    a = [x.views[0] for x in loader]
    b = [x.views[0] for x in build_loader(coll, tf, cfg, train=True, seed=5)]
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))
    eval_loader = build_loader(coll, tf, dataclasses.replace(CFG, persistent_workers=True), train=False, seed=0)
    assert not eval_loader.persistent_workers and not eval_loader.drop_last  # no workers -> not persistent


def test_tiny_collection_keeps_partial_batch() -> None:
    coll = load_collection("", synthetic_size=3, synthetic_image_size=16)
    batches = list(build_loader(coll, build_eval_transform(16), CFG, train=True, seed=0))
    assert len(batches) == 1 and len(batches[0]) == 3


def test_build_collection_from_cfg(shared_data: Path) -> None:
    cfg = DataCfg(path=str(shared_data / "wikiart7-dev" / "labels.csv"), batch_size=8, num_workers=0)
    coll = build_collection(cfg)
    assert len(coll) == 1400 and coll.bad.total == 0
    batch = next(iter(build_loader(coll.subset(range(0, 1400, 100)), build_eval_transform(32), cfg, False, 0)))
    assert batch.views[0].shape == (8, 3, 32, 32) and batch.bad == []
    assert build_collection(DataCfg(synthetic_size=7)).synthetic is not None
