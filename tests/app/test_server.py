"""The web page: served over real HTTP on a free port, page + row query + upload query + thumbnails + errors."""

from __future__ import annotations

import io
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ssl_art.app.server import RetrievalApp, make_server
from ssl_art.retrieval.embed import embed_collection
from ssl_art.retrieval.embedder import BackboneEmbedder
from ssl_art.retrieval.index import ModelMismatchError, RetrievalIndex


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, image_tree: Path, tiny_model: Any) -> RetrievalIndex:
    out = tmp_path_factory.mktemp("served")
    embed_collection(tiny_model, str(image_tree), out / "emb", image_size=32, batch_size=6, progress=False)
    RetrievalIndex.build(out / "emb").save(out / "idx")
    return RetrievalIndex.load(out / "idx")


@pytest.fixture(scope="module")
def base_url(index: RetrievalIndex, tiny_model: Any) -> Iterator[str]:
    server = make_server(index, tiny_model, port=0, k=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_page_and_row_query(base_url: str, index: RetrievalIndex) -> None:
    status, ctype, body = get(base_url + "/")
    assert status == 200 and ctype.startswith("text/html")
    page = body.decode()
    assert "Nearest-style retrieval" in page and 'type="file"' in page and page.count('href="/?row=') == 12
    status, _, body = get(base_url + "/?row=0&k=3")
    assert status == 200 and "Results for" in body.decode()
    assert len(re.findall(r'<figure><img src="/thumb/\d+">', body.decode())) == 3  # 3 hits (+ the query)
    assert 'class="q" src="/thumb/0"' in body.decode()
    status, _, body = get(base_url + "/api/query?row=0&k=3")
    res = json.loads(body)
    assert status == 200 and [h["rank"] for h in res["hits"]] == [1, 2, 3]
    assert 0 not in [h["row"] for h in res["hits"]]  # the query work itself is excluded
    q = index.vectors(np.array([0]))
    assert q is not None
    sims, rows = index.search(q, 4)
    assert [h["row"] for h in res["hits"]] == [r for r in rows[0] if r != 0][:3]


def test_upload_query_returns_scored_hits(base_url: str, index: RetrievalIndex) -> None:
    path = index.paths[5]
    data = Path(path).read_bytes()
    status, res = post(base_url + "/api/query?k=4", data)
    assert status == 200 and len(res["hits"]) == 4
    assert res["hits"][0]["path"] == path and res["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    scores = [h["score"] for h in res["hits"]]
    assert scores == sorted(scores, reverse=True) and res["hits"][0]["label"] == index.labels["label"][5]


def test_thumbnails_and_errors(base_url: str) -> None:
    status, ctype, body = get(base_url + "/thumb/3")
    assert status == 200 and ctype == "image/jpeg" and Image.open(io.BytesIO(body)).format == "JPEG"
    assert get(base_url + "/thumb/999")[0] == 404
    assert get(base_url + "/nope")[0] == 404
    status, res = post(base_url + "/api/query", b"not an image")
    assert status == 400 and "not a readable image" in res["error"]


def test_app_refuses_other_model(index: RetrievalIndex) -> None:
    other = BackboneEmbedder("resnet10t", seed=7, image_size=32)
    with pytest.raises(ModelMismatchError):
        RetrievalApp(index, other)
