"""Splits never share an image (or, grouped, an artist); label maps; masked multi-task loss; soft voting; report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_art.data.collection import Collection
from ssl_art.finetune.ensemble import member_weights, soft_vote
from ssl_art.finetune.labels import (
    apply_label_map,
    balanced_indices,
    inverse_frequency_weights,
    masked_multitask_loss,
    target_matrix,
)
from ssl_art.finetune.report import classification_metrics
from ssl_art.finetune.splits import load_split, make_split, save_split


def toy_targets(n: int = 300, c: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, c, n)


@pytest.mark.parametrize("seed", [0, 1])
def test_split_disjoint_complete_stratified(seed: int) -> None:
    y = toy_targets(seed=seed)
    s = make_split(y, 0.15, 0.15, seed=seed)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(y)))
    assert abs(len(s.test) - 45) <= 1 and abs(len(s.val) - 45) <= 1
    for part in (s.val, s.test):  # stratified: class shares within a few points of the whole
        share = np.bincount(y[part], minlength=5) / len(part)
        assert np.abs(share - np.bincount(y, minlength=5) / len(y)).max() < 0.05
    assert make_split(y, 0.15, 0.15, seed=seed) == s  # reproducible
    assert make_split(y, 0.15, 0.15, seed=seed + 7) != s


def test_grouped_split_keeps_artists_together() -> None:
    rng = np.random.default_rng(0)
    artists = [f"artist{int(a)}" for a in rng.integers(0, 40, 400)]
    artists[:5] = [None] * 5  # unknown artist -> its own group
    y = toy_targets(400)
    s = make_split(y, 0.2, 0.2, seed=0, groups=artists)
    owner = {}
    for name, part in (("train", s.train), ("val", s.val), ("test", s.test)):
        for i in part:
            a = artists[i]
            if a is None:
                continue
            assert owner.setdefault(a, name) == name, f"{a} in {owner[a]} and {name}"
    assert len(s.train) + len(s.val) + len(s.test) == 400
    assert len(s.val) > 0 and len(s.test) > 0


def test_missing_labels_are_left_out_and_split_roundtrip(tmp_path) -> None:
    y = toy_targets(100)
    y[:10] = -1
    s = make_split(y, 0.2, 0.2)
    assert not set(range(10)) & (set(s.train) | set(s.val) | set(s.test))
    paths = [f"/img/{i}.jpg" for i in range(100)]
    save_split(tmp_path / "splits.json", s, paths, {"seed": 0})
    assert load_split(tmp_path / "splits.json", paths) == s
    with pytest.raises(ValueError, match="collection changed"):
        load_split(tmp_path / "splits.json", list(reversed(paths)))


def test_label_map_in_place_new_column_and_errors() -> None:
    labels = {"style": ["Baroque", "Impressionism", None, "Cubism"], "artist": ["a", None, "b", "c"]}
    fine2coarse = {"Baroque": "Old", "Impressionism": "Modern", "Cubism": "Modern"}
    out = apply_label_map(labels, {"style": fine2coarse})
    assert out["style"] == ["Old", "Modern", None, "Modern"]
    assert labels["style"][0] == "Baroque"  # input untouched
    out = apply_label_map(labels, {"movement": {"from": "style", "map": {**fine2coarse, "Cubism": None}}})
    assert out["movement"] == ["Old", "Modern", None, None] and out["style"] == labels["style"]
    with pytest.raises(ValueError, match="Cubism"):
        apply_label_map(labels, {"style": {"Baroque": "Old", "Impressionism": "Modern"}})
    with pytest.raises(ValueError, match="genre"):
        apply_label_map(labels, {"x": {"from": "genre", "map": {}}})


def test_target_matrix_uses_fixed_classes() -> None:
    coll = Collection(paths=["a", "b", "c"], labels={"s": ["x", None, "z"], "t": ["p", "q", None]})
    m = target_matrix(coll, ["s", "t"], {"s": ["x", "y"], "t": ["p", "q"]})
    assert m.tolist() == [[0, 0], [-1, 1], [-1, -1]]  # 'z' unseen in training -> missing


def naive_masked_loss(logits, targets, weights, smoothing):
    total = 0.0
    for t, (z, w) in enumerate(zip(logits, weights)):
        terms = []
        for i in range(len(targets)):
            if targets[i, t] < 0:
                continue
            logp = F.log_softmax(z[i], dim=0)
            c = z.shape[1]
            q = torch.full((c,), smoothing / c)
            q[targets[i, t]] += 1 - smoothing
            terms.append(-(q * logp).sum())
        if terms:
            total = total + w * torch.stack(terms).mean()
    return total


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_multitask_loss_matches_naive(smoothing: float) -> None:
    torch.manual_seed(0)
    logits = [torch.randn(6, 4, requires_grad=True), torch.randn(6, 3, requires_grad=True)]
    targets = torch.tensor([[0, -1], [1, 2], [-1, 0], [3, -1], [2, 1], [-1, -1]])
    loss, per_head = masked_multitask_loss(logits, targets, [1.0, 0.5], smoothing)
    ref = naive_masked_loss(logits, targets, [1.0, 0.5], smoothing)
    assert torch.allclose(loss, ref, atol=1e-6)
    loss.backward()
    assert torch.all(logits[0].grad[[2, 5]] == 0) and torch.all(logits[1].grad[[0, 3, 5]] == 0)
    _, per = masked_multitask_loss(logits, torch.tensor([[0, -1]] * 6), [1.0, 1.0])
    assert np.isnan(per[1]) and np.isfinite(per[0])


def test_imbalance_helpers() -> None:
    y = np.array([0] * 80 + [1] * 20 + [-1] * 5)
    w = inverse_frequency_weights(y, 3)
    assert torch.allclose(w, torch.tensor([100 / (3 * 80), 100 / (3 * 20), 0.0]))
    draw = balanced_indices(y, 20000, seed=0)
    assert (y[draw] >= 0).all() and abs((y[draw] == 1).mean() - 0.5) < 0.02


def test_soft_vote_and_report() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(3), 5), rng.dirichlet(np.ones(3), 5)
    v = soft_vote([a, b], [3.0, 1.0])
    assert np.allclose(v, 0.75 * a + 0.25 * b) and np.allclose(v.sum(1), 1)
    assert member_weights([0.5, float("nan")], "val") == [0.5, 0.0]
    with pytest.raises(ValueError):
        soft_vote([a, b[:4]])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    y = np.array([0, 1, 1, -1])
    m = classification_metrics(probs, y, ["a", "b", "c"])
    assert m["n"] == 3 and m["top1"] == pytest.approx(1 / 3) and m["top3"] == 1.0
    assert m["per_class"]["b"]["recall"] == 0.0 and m["per_class"]["a"]["precision"] == 0.5
