"""Embedding export: values equal a direct forward pass, resume after an interruption, bad rows, model hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ssl_art.retrieval.embed import (
    EmbeddingMeta,
    embed_collection,
    embed_dataset,
    model_hash,
    open_embeddings,
)
from ssl_art.retrieval.index import RetrievalIndex
from ssl_art.retrieval.manifest import read_manifest


class TinyMethod(nn.Module):
    """Mean-pool + linear 'pooled' and a second 'gram' output; counts the rows it embeds."""

    default_embedding = "pooled"

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(3, 6)
        self.rows_seen = 0

    @torch.no_grad()
    def embed(self, x: Tensor) -> dict[str, Tensor]:
        self.rows_seen += len(x)
        pooled = self.lin(x.mean(dim=(2, 3)))
        return {"pooled": pooled, "gram": pooled[:, :2] ** 2}


class Crashing(TinyMethod):
    """Raises after ``budget`` forward passes: a simulated kill in the middle of an export."""

    def __init__(self, budget: int):
        super().__init__()
        self.budget = budget

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        if self.budget == 0:
            raise KeyboardInterrupt("simulated interruption")
        self.budget -= 1
        return super().embed(x)


class ToyDataset(torch.utils.data.Dataset[Any]):
    """Row ``i`` -> ``(x, target, i)``; rows in ``bad`` return a marker object instead."""

    def __init__(self, n: int, bad: tuple[int, ...] = ()):
        self.x = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        self.bad = bad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        return object() if i in self.bad else (self.x[i], 0, i)


def reference(model: TinyMethod, ds: ToyDataset, kind: str = "pooled") -> np.ndarray:
    return model.embed(ds.x)[kind].numpy()


def paths(n: int) -> list[str]:
    return [f"p/{i}.jpg" for i in range(n)]


def test_export_matches_direct_forward(tmp_path: Path) -> None:
    ds, model = ToyDataset(23), TinyMethod()
    labels = {"label": ["a", None, "b"] * 7 + ["a", "b"]}
    meta = embed_dataset(model, ds, tmp_path, paths(23), labels, dtype="float32", batch_size=5, progress=False)
    emb, meta2 = open_embeddings(tmp_path)
    assert meta2 == meta and meta.complete and meta.n == 23 and meta.dim == 6 and meta.kind == "pooled"
    np.testing.assert_allclose(emb, reference(TinyMethod(), ds), atol=1e-6)
    p, lab = read_manifest(tmp_path / "manifest.csv")
    assert p == paths(23) and lab == labels
    gram = embed_dataset(TinyMethod(), ds, tmp_path / "g", paths(23), kind="gram", dtype="float16", progress=False)
    assert gram.dim == 2
    g = np.load(tmp_path / "g" / "embeddings.npy")
    assert g.dtype == np.float16
    np.testing.assert_allclose(g, reference(TinyMethod(), ds, "gram"), rtol=2e-3, atol=1e-3)
    with pytest.raises(ValueError, match="no 'fused' embedding; it provides gram, pooled"):
        embed_dataset(TinyMethod(), ds, tmp_path / "f", paths(23), kind="fused", progress=False)


def test_resume_after_interruption_without_duplicates(tmp_path: Path) -> None:
    n, bs, chunk = 40, 4, 8
    ds = ToyDataset(n)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(Crashing(budget=5), ds, tmp_path, paths(n), batch_size=bs, chunk_rows=chunk, progress=False)
    prog = json.loads((tmp_path / "progress.json").read_text())
    assert prog["done"] == 16  # 5 batches = 20 rows embedded, only the 2 full chunks (16 rows) recorded
    assert not EmbeddingMeta.read(tmp_path).complete
    with pytest.raises(ValueError, match="incomplete"):
        open_embeddings(tmp_path)
    resumed = TinyMethod()
    meta = embed_dataset(resumed, ds, tmp_path, paths(n), batch_size=bs, chunk_rows=chunk, progress=False)
    assert resumed.rows_seen == n - 16  # only the unrecorded rows are embedded again
    assert meta.complete and meta.n == n
    emb = np.load(tmp_path / "embeddings.npy")
    assert emb.shape == (n, 6)
    np.testing.assert_allclose(emb.astype(np.float32), reference(TinyMethod(), ds), rtol=2e-3, atol=1e-3)
    again = TinyMethod()
    embed_dataset(again, ds, tmp_path, paths(n), batch_size=bs, progress=False)
    assert again.rows_seen == 0  # complete: nothing recomputed


def test_resume_refuses_other_model(tmp_path: Path) -> None:
    ds = ToyDataset(12)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(Crashing(budget=2), ds, tmp_path, paths(12), batch_size=2, chunk_rows=2, progress=False)
    with pytest.raises(ValueError, match="holds embeddings of another run"):
        embed_dataset(TinyMethod(seed=1), ds, tmp_path, paths(12), batch_size=2, progress=False)


def test_bad_rows_are_zero_and_not_indexed(tmp_path: Path) -> None:
    ds = ToyDataset(10, bad=(0, 7))
    meta = embed_dataset(TinyMethod(), ds, tmp_path, paths(10), dtype="float32", batch_size=3, progress=False)
    assert meta.bad_rows == [0, 7]
    emb = np.load(tmp_path / "embeddings.npy")
    assert not emb[[0, 7]].any() and np.abs(emb[[1, 2, 8]]).sum() > 0
    idx = RetrievalIndex.build(tmp_path)
    assert sorted(idx.ids.tolist()) == [1, 2, 3, 4, 5, 6, 8, 9]
    assert 0 not in idx.search(emb[1:2], 8)[1]


def test_model_hash_tracks_weights() -> None:
    a, b = TinyMethod(seed=0), TinyMethod(seed=0)
    assert model_hash(a) == model_hash(b) and len(model_hash(a)) == 16
    with torch.no_grad():
        b.lin.weight[0, 0] += 1e-3
    assert model_hash(a) != model_hash(b)


def test_embed_collection_image_tree(tmp_path: Path, image_tree: Path, tiny_model: Any) -> None:
    meta = embed_collection(tiny_model, str(image_tree), tmp_path, image_size=32, batch_size=5, progress=False)
    emb, _ = open_embeddings(tmp_path)
    p, lab = read_manifest(tmp_path / "manifest.csv")
    assert meta.n == 12 and emb.shape == (12, tiny_model.backbone.embed_dim)
    assert sorted(set(lab["label"])) == ["blue", "green", "red"]  # type: ignore[type-var]
    assert meta.model_hash == model_hash(tiny_model) and np.isfinite(emb.astype(np.float32)).all()


DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikiart7-dev"


def test_wikiart_csv_subset_embeds_and_self_query(tmp_path: Path, tiny_model: Any) -> None:
    """Real JPEGs through the CSV manifest path: every work's nearest neighbour in an exact index is itself."""
    if not (DEV / "labels.csv").is_file():
        pytest.skip(f"sample data not found at {DEV} (see /work/shared/data/README.md)")
    import csv

    from ssl_art.retrieval.query import query

    with open(DEV / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    picked = [r for i, r in enumerate(sorted(rows, key=lambda r: (r["label"], r["path"]))) if i % 200 < 2]
    manifest = tmp_path / "subset.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label"])
        w.writeheader()
        w.writerows({"path": r["path"], "label": r["label"]} for r in picked)
    meta = embed_collection(tiny_model, str(manifest), tmp_path / "emb", root=str(DEV), image_size=32, progress=False)
    assert meta.n == 14 and not meta.bad_rows
    idx = RetrievalIndex.build(tmp_path / "emb")
    files = [str(DEV / r["path"]) for r in picked[:3]]
    res = query(idx, tiny_model, files, k=2)
    for r in res:
        assert Path(r.hits[0].path).resolve() == Path(r.query).resolve()
        assert r.hits[0].score == pytest.approx(1.0, abs=5e-3)  # float16 storage
