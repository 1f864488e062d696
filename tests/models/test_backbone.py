"""Backbone wrapper contract for one CNN and one ViT (timm ``test_model_forward_intermediates`` style)."""

import pytest
import torch

from ssl_art.models.backbone import Backbone, load_backbone_weights


@pytest.mark.parametrize(
    "name, n, expect_channels",
    [("resnet18", 4, [64, 128, 256, 512]), ("vit_tiny_patch16_224", 4, [192] * 4), ("resnet18", 2, [128, 512])],
)
def test_features_shapes(name, n, expect_channels):
    b = Backbone(name, n_intermediates=n, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    f = b.features(x)
    assert f.pooled.shape == (2, b.embed_dim)
    assert [t.shape[1] for t in f.intermediates] == expect_channels == b.channels
    assert all(t.ndim == 4 and t.shape[0] == 2 for t in f.intermediates)
    # features() agrees with forward() and with timm's own pooled output
    torch.testing.assert_close(b(x), f.pooled)
    torch.testing.assert_close(b.model(x), f.pooled)


def test_last_intermediate_is_the_final_map():
    b = Backbone("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    f = b.features(x)
    torch.testing.assert_close(b.model.forward_features(x), f.intermediates[-1])


def test_unknown_backbone_named():
    with pytest.raises(ValueError, match="unknown timm backbone 'resnet_nope'"):
        Backbone("resnet_nope")


def test_bad_n_intermediates():
    with pytest.raises(ValueError, match="n_intermediates must be in"):
        Backbone("resnet18", n_intermediates=9)


def test_init_checkpoint_round_trip_and_mismatch(tmp_path):
    a, b = Backbone("resnet18"), Backbone("resnet18")
    torch.save({"model": {f"backbone.model.{k}": v for k, v in a.model.state_dict().items()}}, tmp_path / "a.pt")
    load_backbone_weights(b, str(tmp_path / "a.pt"))
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    vit = Backbone("vit_tiny_patch16_224", img_size=32)
    with pytest.raises(ValueError, match="architecture mismatch|shape mismatch"):
        load_backbone_weights(vit, str(tmp_path / "a.pt"))
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(b, str(tmp_path / "missing.pt"))
