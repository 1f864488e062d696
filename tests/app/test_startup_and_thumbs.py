"""Startup integrity (a damaged index is a clear error naming the file, before serving) and thumbnails of works whose
file went bad after indexing (unreadable, decompression/resize bomb): a clear 422 JSON, never a 500 or an empty
reply (issue 14, cases 4 and 5)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ssl_art.app.api import create_app
from ssl_art.app.server import load_state
from ssl_art.app.service import AppState, SimilarService
from ssl_art.app.workers import InferencePool
from ssl_art.cli import main as cli_main
from ssl_art.retrieval.embed import embed_collection
from ssl_art.retrieval.index import RetrievalIndex
from tests.conftest import BACKBONE, make_image_tree


def test_load_state_from_the_cli_arguments(index_dir: Path, classifier_path: Path) -> None:
    state = load_state(str(classifier_path.parents[1]), str(index_dir))  # run folder; model read from index.json
    assert state.classifier is not None and state.similar is not None
    assert state.similar.info()["works"] == 12
    with pytest.raises(ValueError, match="nothing to serve"):
        load_state()


@pytest.mark.parametrize("how", ["truncated", "empty", "columnless", "shuffled"])
def test_damaged_manifest_stops_serve_at_startup(
    index_dir: Path, tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.retrieval.test_integrity import damage

    idx = tmp_path / "idx"
    shutil.copytree(index_dir, idx)
    damage(idx / "manifest.csv", how)
    with pytest.raises(ValueError) as info:
        load_state(index=str(idx))
    assert str(idx / "manifest.csv") in str(info.value)
    with pytest.raises(SystemExit) as ex:
        cli_main(["serve", "--index", str(idx), "--port", "0"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "error:" in err and str(idx / "manifest.csv") in err and "Traceback" not in err


def test_serve_needs_something_and_a_matching_model(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["serve"])
    assert "--classifier RUN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["serve", "--classifier", str(index_dir / "nope")])
    assert "not found" in capsys.readouterr().err
    from ssl_art.retrieval.embedder import BackboneEmbedder
    from ssl_art.retrieval.index import ModelMismatchError

    with pytest.raises(ModelMismatchError):
        SimilarService(RetrievalIndex.load(index_dir), BackboneEmbedder(BACKBONE, seed=7, image_size=32))


@pytest.fixture(scope="module")
def damaged_client(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> Any:
    root = make_image_tree(tmp_path_factory.mktemp("damaged"), n_per_class=2)
    out = tmp_path_factory.mktemp("damaged_idx")
    embed_collection(tiny_model, str(root), out / "emb", image_size=32, progress=False)
    RetrievalIndex.build(out / "emb").save(out / "idx")
    idx = RetrievalIndex.load(out / "idx")
    (Path(idx.paths[0])).write_bytes(b"\x89PNG\r\n\x1a\n garbage after the signature")  # unreadable now
    Image.new("RGB", (1, 60000)).save(idx.paths[1], format="PNG")  # a resize bomb now
    Path(idx.paths[2]).write_bytes(b"")  # emptied
    pool = InferencePool(2, 4)
    yield TestClient(create_app(AppState(None, SimilarService(idx, tiny_model)), pool), raise_server_exceptions=False)
    pool.shutdown()


@pytest.mark.parametrize(("row", "why"), [(0, "is truncated"), (1, "size guard"), (2, "is empty")])
def test_thumb_of_a_bad_file_is_a_clear_422(damaged_client: Any, row: int, why: str) -> None:
    r = damaged_client.get(f"/api/works/{row}/thumb")
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
    msg = r.json()["error"]
    assert f"work {row}" in msg and why in msg and "/tmp/" not in msg
    assert damaged_client.get("/api/works/3/thumb").status_code == 200  # the rest still work
    hits = damaged_client.post("/api/similar?row=3&k=5").json()["hits"]  # stored vectors: no file decode needed
    assert len(hits) == 5


def test_random_backbone_name_is_read_from_the_index(index_dir: Path) -> None:
    state = load_state(index=str(index_dir))
    assert state.similar is not None and type(state.similar.model).__name__ == "BackboneEmbedder"
    assert BACKBONE in RetrievalIndex.load(index_dir).meta.source
