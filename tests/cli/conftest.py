"""Shared ``ssl-art`` fixtures: a tiny pretraining run, a truncated copy of its checkpoint, embeddings and an index.

Everything is built through the CLI itself (``ssl_art.cli.main``) at 32 px with a random-init resnet10t, once per
session (a few seconds on CPU).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ssl_art.cli import main

TINY_PRETRAIN = [
    "--config", "tiny", "--backbone", "resnet10t", "--device", "cpu",
    "data.synthetic_size=24", "data.batch_size=8", "optim.max_steps=2",
]  # fmt: skip


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["pretrain", *TINY_PRETRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def truncated_ckpt(pretrain_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = pretrain_run / "checkpoints" / "last.pt"
    dst = tmp_path_factory.mktemp("trunc") / "last.pt"
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    shutil.copy(f"{src}.sha256", f"{dst}.sha256")
    return dst


@pytest.fixture(scope="session")
def index_dir(image_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrieval")
    model = ["--backbone", "resnet10t", "--image-size", "32"]
    assert main(["embed", "--collection", str(image_tree), "--out", str(root / "emb"), *model, "--device", "cpu"]) == 0
    assert main(["index", "build", "--embeddings", str(root / "emb"), "--out", str(root / "idx")]) == 0
    return root / "idx"
