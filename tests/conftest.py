"""Shared test setup: the thin main_*.py entry points are importable (they live at the repository root), and the
retrieval/app tests share tiny generated image trees and a tiny random-init model."""

from __future__ import annotations

import pathlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ssl_art.retrieval.embedder import BackboneEmbedder  # noqa: E402

BACKBONE = "resnet10t"  # smallest timm ResNet with forward_intermediates; random init, never downloaded
IMAGE_SIZE = 32


def make_image_tree(root: Path, n_per_class: int = 4, classes: tuple[str, ...] = ("red", "green", "blue")) -> Path:
    """An ImageFolder tree of small noisy single-hue images, ``root/<class>/<i>.png``."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (40, 48, 3)).astype(np.uint8)
            img[..., c] += 180
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_model() -> BackboneEmbedder:
    return BackboneEmbedder(BACKBONE, seed=0, image_size=IMAGE_SIZE)
