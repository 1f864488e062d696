"""One ``--device auto`` default and one ``-k`` default (``RetrievalCfg.k``) across the ``ssl-art`` commands.

Before issue 15 ``embed`` and ``predict`` defaulted to ``--device cpu`` while training used ``auto``, and ``query``
returned 10 hits where ``serve`` showed 12.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

import ssl_art.app.server as server
from ssl_art.cli import build_parser, main
from ssl_art.cli.stages import STAGES
from ssl_art.config import RetrievalCfg


def test_device_defaults_to_auto_everywhere() -> None:
    ap = build_parser()
    assert ap.parse_args(["embed", "--collection", "c", "--out", "o"]).device == "auto"
    assert ap.parse_args(["predict", "a.pt", "img.jpg"]).device == "auto"
    for stage in STAGES.values():
        assert stage.cls().run.device == "auto"


def test_query_and_serve_use_the_same_k(
    index_dir: Path, image_tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = RetrievalCfg().k
    n_images = len(list(image_tree.rglob("*.png")))
    assert n_images > k  # so the number of hits shows k
    model = ["--backbone", "resnet10t"]
    assert main(["query", "--index", str(index_dir), *model, str(next(image_tree.rglob("*.png"))), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert len(hits) == k
    seen: dict[str, Any] = {}
    monkeypatch.setattr(server, "serve", lambda state, settings: seen.update(k=settings.k))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "--index", str(index_dir), *model, "--port", str(port)]) == 0
    assert seen["k"] == k
