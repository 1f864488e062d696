"""``ssl-art export``: the backbone as timm weights (loaded back by timm with equal outputs), a model card, the raw
safetensors state dict that ``model.init_checkpoint`` takes, and the ONNX embedder with onnxruntime parity.

Also: ``model.init_checkpoint`` reads ``.pt`` with ``weights_only=True``, so a pickle that runs code is refused.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import timm
import torch

from ssl_art.cli import main
from ssl_art.config import ConfigError
from ssl_art.export.onnx_graph import EmbedOne, parity
from ssl_art.methods.load import load_method
from ssl_art.models.backbone import Backbone, load_backbone_weights

SIZE = 32


def test_timm_export_loads_in_timm_with_equal_outputs(pretrain_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "timm"
    assert main(["export", str(pretrain_run), "--format", "timm", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    method, cfg = load_method(str(pretrain_run))
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = method.embed(x)["pooled"]
        by_file = timm.create_model(
            cfg.model.backbone, pretrained=True, num_classes=0,
            pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")),
        ).eval()(x)  # fmt: skip
        by_dir = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x)
    assert torch.allclose(by_file, ref, atol=1e-6) and torch.allclose(by_dir, ref, atol=1e-6)
    conf = json.loads((out / "config.json").read_text())
    assert conf["architecture"] == "resnet10t" and conf["num_classes"] == 0
    assert conf["pretrained_cfg"]["input_size"] == [3, SIZE, SIZE]
    assert conf["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406] and conf["pretrained_cfg"]["tag"] == "ssl_art_simclr"


def test_model_card_names_data_method_epochs_metrics_and_command(pretrain_run: Path, tmp_path: Path) -> None:
    (pretrain_run / "eval").mkdir(exist_ok=True)
    (pretrain_run / "eval" / "metrics.json").write_text(json.dumps({"knn_top1": 0.625, "classes": ["a"]}))
    out = tmp_path / "card"
    assert main(["export", str(pretrain_run / "checkpoints" / "last.pt"), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "`simclr`" in card and "packaged synthetic art collection (24 images)" in card
    assert "| epochs | 1 configured; trained 2 steps" in card
    assert "knn_top1=0.625" in card
    made = (pretrain_run / "command.txt").read_text().strip()
    assert made.startswith("ssl-art pretrain --config tiny") and made in card


def test_safetensors_export_feeds_init_checkpoint(pretrain_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "st"
    assert main(["export", str(pretrain_run), "--format", "safetensors", "--out", str(out)]) == 0
    assert not (out / "config.json").exists()
    method, _ = load_method(str(pretrain_run))
    fresh = Backbone("resnet10t", n_intermediates=4, img_size=SIZE)
    load_backbone_weights(fresh, str(out / "model.safetensors"))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), method.backbone.eval()(x))


def test_init_checkpoint_reads_ssl_art_checkpoints_weights_only(pretrain_run: Path) -> None:
    fresh = Backbone("resnet10t", n_intermediates=4, img_size=SIZE)
    load_backbone_weights(fresh, str(pretrain_run / "checkpoints" / "last.pt"))  # numpy RNG state is allow-listed
    method, _ = load_method(str(pretrain_run))
    assert all(torch.equal(v, method.backbone.model.state_dict()[k]) for k, v in fresh.model.state_dict().items())


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def test_init_checkpoint_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    bad = tmp_path / "weights.pt"
    bb = Backbone("resnet10t", n_intermediates=4, img_size=SIZE)
    torch.save({"model": bb.model.state_dict(), "extra": _Evil(str(marker))}, bad)
    with pytest.raises(ConfigError, match="could run code"):
        load_backbone_weights(bb, str(bad))
    with pytest.raises(pickle.UnpicklingError):  # the reference: torch itself refuses it under weights_only
        torch.load(bad, weights_only=True)
    assert not marker.exists()


@pytest.fixture(scope="module")
def art_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("art") / "run"
    argv = [
        "pretrain", "--config", "tiny", "--method", "art_ssl", "--backbone", "resnet10t", "--device", "cpu",
        "data.synthetic_size=16", "optim.max_steps=1", "model.gram.enabled=true", "model.fusion.enabled=true",
        "loss.w_gram=0.5", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("kind", ["pooled", "fused", "gram", "stats"])
def test_onnx_embedder_matches_pytorch(art_run: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / kind
    assert main(["export", str(art_run), "--format", "onnx", "--embedding", kind, "--out", str(out)]) == 0
    info = json.loads((out / "embedder.json").read_text())
    assert info["embedding"] == kind and info["input_size"] == [3, SIZE, SIZE]
    method, _ = load_method(str(art_run))
    x = torch.randn(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))  # another batch size than traced
    ref = method.embed(x)[kind]
    diff = parity(out / "embedder.onnx", EmbedOne(method, kind).eval(), x)
    assert ref.shape[0] == 5 and diff <= 1e-4, diff
