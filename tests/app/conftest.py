"""App fixtures: a tiny image tree (with one bomb and one broken file among the works), its index, a random-init
fine-tune classifier checkpoint (resnet10t at 64 px: real Grad-CAM maps, fast), and a TestClient factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from ssl_art.app.api import create_app  # noqa: E402
from ssl_art.app.service import AppState, ClassifierService, SimilarService  # noqa: E402
from ssl_art.app.workers import InferencePool  # noqa: E402
from ssl_art.finetune.model import ModelSpec, build_classifier  # noqa: E402
from ssl_art.retrieval.embed import embed_collection  # noqa: E402
from ssl_art.retrieval.index import RetrievalIndex  # noqa: E402
from tests.conftest import BACKBONE, make_image_tree  # noqa: E402

CLASSES = ["blue", "green", "red"]


def make_classifier(path: Path, image_size: int = 64, classes: list[str] = CLASSES) -> Path:
    """A random-init fine-tune checkpoint in ``load_finetuned``'s format, two heads (``label``, ``mood``)."""
    spec = ModelSpec("classifier", BACKBONE, 4, image_size, ["label", "mood"], {"label": classes, "mood": ["a", "b"]})
    torch.manual_seed(0)
    model = build_classifier(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "spec": spec.to_dict(), "meta": {"val_score": 0.5}}, path)
    return path


@pytest.fixture(scope="session")
def works(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 small single-hue images (``tests.conftest.make_image_tree``)."""
    return make_image_tree(tmp_path_factory.mktemp("works"))


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, works: Path, tiny_model: Any) -> Path:
    out = tmp_path_factory.mktemp("app_index")
    src = f"random:{BACKBONE}:seed0"  # what `ssl-art embed --backbone` records; serve rebuilds the model from it
    embed_collection(tiny_model, str(works), out / "emb", image_size=32, batch_size=6, progress=False, source=src)
    RetrievalIndex.build(out / "emb").save(out / "idx")
    return out / "idx"


@pytest.fixture(scope="session")
def classifier_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tmp_path_factory.mktemp("clf") / "checkpoints" / "best.pt")


@pytest.fixture(scope="session")
def classifier(classifier_path: Path) -> ClassifierService:
    return ClassifierService.load(str(classifier_path))


@pytest.fixture(scope="session")
def similar(index_dir: Path, tiny_model: Any) -> SimilarService:
    return SimilarService(RetrievalIndex.load(index_dir), tiny_model)


MakeClient = Callable[..., TestClient]


@pytest.fixture()
def make_client(classifier: ClassifierService, similar: SimilarService) -> Iterator[MakeClient]:
    pools: list[InferencePool] = []

    def make(
        with_classifier: bool = True, with_index: bool = True, workers: int = 2, queue: int = 4, **kw: Any
    ) -> TestClient:
        state = AppState(classifier if with_classifier else None, similar if with_index else None)
        pool = InferencePool(workers, queue, kw.pop("timeout", 60.0))
        pools.append(pool)
        return TestClient(create_app(state, pool, **kw), raise_server_exceptions=False)

    yield make
    for p in pools:
        p.shutdown()


@pytest.fixture(scope="session")
def painting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 'painting' that is not in the collection."""
    p = tmp_path_factory.mktemp("upload") / "sunset <b>&.png"
    img = Image.new("RGB", (60, 45), (220, 120, 40))
    img.paste((30, 30, 120), (0, 30, 60, 45))
    img.save(p)
    return p
