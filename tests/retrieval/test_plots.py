"""Plots (PNG files are written and well-formed) and Grad-CAM against a naive activations x gradients reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ssl_art.explain.gradcam import gradcam, gradcam_own, save_gradcam_overlay
from ssl_art.retrieval.plots import plot_embedding_map, plot_query_grid, project_2d, stratified_sample
from ssl_art.retrieval.query import Hit, QueryResult


def blobs(n: int = 60) -> tuple[np.ndarray, list[str | None]]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.standard_normal((3, 16))[y] * 4 + rng.standard_normal((n, 16))
    labels: list[str | None] = [["a", "b", "c"][c] for c in y]
    labels[0] = None
    return x.astype(np.float32), labels


def test_tsne_map_png(tmp_path: Path) -> None:
    x, labels = blobs()
    xy, used = project_2d(x, "tsne", max_iter=300)
    assert used == "t-SNE" and xy.shape == (60, 2) and np.isfinite(xy).all()
    out = plot_embedding_map(x, labels, tmp_path / "map.png", method="tsne", title="test", max_iter=300)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300
    with pytest.raises(ValueError, match="auto, umap, tsne"):
        project_2d(x, "pca")


@pytest.mark.slow
def test_umap_map_png(tmp_path: Path) -> None:
    pytest.importorskip("umap")
    x, labels = blobs()
    assert project_2d(x, "umap")[1] == "UMAP"
    assert plot_embedding_map(x, labels, tmp_path / "u.png").is_file()


def test_stratified_sample_keeps_shares() -> None:
    labels = ["a"] * 800 + ["b"] * 200
    rows = stratified_sample(labels, 100)
    got = [labels[i] for i in rows]
    assert len(rows) == 100 and got.count("a") == 80 and got.count("b") == 20
    assert len(set(rows.tolist())) == 100


def test_query_grid_png(tmp_path: Path, image_tree: Path) -> None:
    files = sorted(str(p) for p in image_tree.rglob("*.png"))
    hits = [Hit(j + 1, j, files[j], 0.9 - j / 10, {"label": "x"}) for j in range(4)]
    res = [QueryResult(files[0], hits)]
    res.append(QueryResult(files[5], [Hit(1, 5, files[5], 1.0, {"label": "y"}), Hit(2, 99, "missing.png", 0.5, {})]))
    out = plot_query_grid(res, tmp_path / "grid.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > im.height  # 2 rows x 5 columns


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1))
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(F.relu(self.features(x)).mean(dim=(2, 3)))
        return out


def naive_gradcam(model: SmallCNN, x: torch.Tensor, cls: list[int]) -> np.ndarray:
    """Grad-CAM written out: A = target layer output, dY/dA by autograd, channel weights = spatial mean."""
    out = []
    for i, c in enumerate(cls):
        xi = x[i : i + 1]
        a = model.features(xi)
        logits = model.head(F.relu(a).mean(dim=(2, 3)))
        (g,) = torch.autograd.grad(logits[0, c], a)
        w = g[0].mean(dim=(1, 2))
        cam = torch.clamp((w[:, None, None] * a[0]).sum(0), min=0).detach()
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
        up = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        up = up.clamp(min=0)
        out.append(((up - up.min()) / (up.max() - up.min() + 1e-7)).numpy())
    return np.stack(out)


def test_gradcam_own_matches_naive_reference() -> None:
    model = SmallCNN()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    cls = [0, 2, 3]
    ours = gradcam_own(model, model.features[2], x, cls).numpy()
    assert ours.shape == (3, 16, 16) and ours.min() >= 0 and ours.max() <= 1 + 1e-6
    np.testing.assert_allclose(ours, naive_gradcam(model, x, cls), atol=1e-5)
    # default target = predicted class
    pred = model(x).argmax(dim=1).tolist()
    np.testing.assert_allclose(
        gradcam_own(model, model.features[2], x).numpy(), naive_gradcam(model, x, pred), atol=1e-5
    )


def test_gradcam_library_agrees_with_own() -> None:
    pytest.importorskip("pytorch_grad_cam")
    model = SmallCNN()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    lib = gradcam(model, model.features[2], x, [1, 2], backend="grad-cam")
    own = gradcam(model, model.features[2], x, [1, 2], backend="own")
    assert lib.shape == own.shape == (2, 16, 16)
    # cv2 and torch bilinear resizing differ slightly at the borders; the maps must agree closely
    assert np.corrcoef(lib.ravel(), own.ravel())[0, 1] > 0.99
    assert np.abs(lib - own).mean() < 0.03


def test_gradcam_overlay_png(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).random((2, 16, 16, 3))
    cams = np.random.default_rng(1).random((2, 16, 16))
    out = save_gradcam_overlay(imgs, cams, tmp_path / "cam.png", titles=["a", "b"])
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_gradcam_cli_on_finetune_checkpoint(tmp_path: Path, image_tree: Path) -> None:
    """``ssl-art plot gradcam`` on a (random-init) fine-tune checkpoint; the default layer is the last stage."""
    from ssl_art.cli import main
    from ssl_art.explain.gradcam import SelectHead, default_target_layer
    from ssl_art.finetune.model import ModelSpec, build_from_spec

    spec = ModelSpec("classifier", "resnet10t", 1, 32, ["label"], {"label": ["blue", "green", "red"]})
    model = build_from_spec(spec)
    layer = default_target_layer(model)
    assert layer is model.get_submodule("encoder.model.layer4")
    x = torch.randn(2, 3, 32, 32)
    cams = gradcam(SelectHead(model), layer, x, [0, 1], backend="own")
    assert cams.shape == (2, 32, 32) and cams.max() <= 1 + 1e-6
    ckpt = tmp_path / "best.pt"
    torch.save({"spec": spec.to_dict(), "model": model.state_dict()}, ckpt)
    main(["plot", "gradcam", "--checkpoint", str(ckpt), str(image_tree / "red"), "--out", str(tmp_path / "c.png")])
    with Image.open(tmp_path / "c.png") as im:
        assert im.format == "PNG"
