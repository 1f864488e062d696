"""Layer-wise lr decay groups and fine-tuning freezing, checked against hand-written layer tables."""

from __future__ import annotations

import pytest
import timm
from torch import nn

from ssl_art.finetune.lr_decay import freeze_for_mode, module_layer_ids, param_groups_lrd


class Wrapped(nn.Module):
    def __init__(self, timm_model: nn.Module, n_out: int = 3):
        super().__init__()
        self.model = timm_model
        self.head = nn.Linear(int(timm_model.num_features), n_out)


def resnet_hand_layer(name: str) -> int:
    """By hand: stem 0, layer1..4 -> 1..4, anything outside the timm model (the head) 5."""
    if name.startswith("head."):
        return 5
    inner = name[len("model.") :]
    if inner.startswith(("conv1", "bn1")):
        return 0
    return int(inner[len("layer")])


def vit_hand_layer(name: str, depth: int) -> int:
    if name.startswith("head."):
        return depth + 1
    inner = name[len("model.") :]
    if inner.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if inner.startswith("blocks."):
        return int(inner.split(".")[1]) + 1
    return depth  # final norm goes with the last block (timm's grouping)


@pytest.mark.parametrize("decay", [0.5, 0.75, 1.0])
def test_resnet_groups_match_hand_computation(decay: float) -> None:
    m = Wrapped(timm.create_model("resnet10t", num_classes=0))
    groups = param_groups_lrd(m, m.model, weight_decay=0.05, layer_decay=decay)
    seen = set()
    for g in groups:
        for name, p in zip(g["names"], g["params"]):
            lid = resnet_hand_layer(name)
            assert g["layer_id"] == lid, name
            assert g["lr_scale"] == pytest.approx(decay ** (5 - lid)), name
            assert g["weight_decay"] == (0.0 if p.ndim < 2 else 0.05), name
            seen.add(name)
    assert seen == {n for n, _ in m.named_parameters()}
    head = [g for g in groups if g["layer_id"] == 5]
    assert all(g["lr_scale"] == 1.0 for g in head)


def test_vit_groups_match_hand_computation() -> None:
    depth = 3
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=depth)
    m = Wrapped(vit)
    ids, n_layers = module_layer_ids(m, m.model)
    assert n_layers == depth
    for name, _ in m.named_parameters():
        assert ids[name] == vit_hand_layer(name, depth), name
    groups = param_groups_lrd(m, m.model, 0.05, 0.65)
    for g in groups:
        assert g["lr_scale"] == pytest.approx(0.65 ** (depth + 1 - g["layer_id"]))


def test_freeze_modes() -> None:
    m = Wrapped(timm.create_model("resnet10t", num_classes=0))
    n_lin = freeze_for_mode(m, m.model, "linear")
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert n_lin == m.head.weight.numel() + m.head.bias.numel()
    freeze_for_mode(m, m.model, "last_n", last_n=2)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in m.named_parameters() if resnet_hand_layer(n) >= 3}
    n_full = freeze_for_mode(m, m.model, "full")
    assert n_full == sum(p.numel() for p in m.parameters())
    # frozen parameters are left out of the optimiser groups
    freeze_for_mode(m, m.model, "linear")
    groups = param_groups_lrd(m, m.model, 0.05, 0.75)
    assert sum(len(g["params"]) for g in groups) == 2
    with pytest.raises(ValueError, match="last_n"):
        freeze_for_mode(m, m.model, "last_n", last_n=9)
    with pytest.raises(ValueError, match="linear, last_n, full"):
        freeze_for_mode(m, m.model, "partial")
