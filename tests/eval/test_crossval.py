"""Stratified k-fold: every labelled sample is evaluated exactly once; mean/std agree with the per-fold numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ssl_art.config import EvalCfg
from ssl_art.eval.crossval import METRICS, cross_validate, evaluate_split, stratified_folds

FAST = EvalCfg(knn_k=5, linear_epochs=5, linear_lrs=(0.01,), linear_wds=(0.0,))


def _data(n: int = 90, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = rng.normal(size=(c, 8))[y] * 3 + rng.normal(size=(n, 8))
    return x.astype(np.float32), y


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_partition_and_stratify(folds: int) -> None:
    _, y = _data()
    splits = stratified_folds(y, folds, seed=1)
    assert len(splits) == folds
    seen = np.concatenate([ev for _, ev in splits])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(y)))  # each sample is eval exactly once
    for tr, ev in splits:
        assert not set(tr) & set(ev)
        assert len(tr) + len(ev) == len(y)
        assert np.bincount(y[ev], minlength=3).min() >= len(y) // 3 // folds  # every class in every fold
    again = stratified_folds(y, folds, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))  # seeded


def test_cross_validate_aggregates_folds() -> None:
    x, y = _data()
    y = y.copy()
    y[:6] = -1  # dropped before folding
    out = cross_validate(x, y, n_classes=3, cfg=dataclasses.replace(FAST, folds=3))
    folds = out["folds"]
    assert isinstance(folds, list) and len(folds) == 3
    assert sum(f["n_eval"] for f in folds) == 84
    for key in METRICS:
        vals = [f[key] for f in folds]
        assert out[key] == pytest.approx(np.mean(vals))
        assert out[f"{key}_std"] == pytest.approx(np.std(vals))
    assert out["knn_top1"] > 0.9  # well separated clusters
    assert out["n_eval"] == 28 and out["n_train"] == 56


def test_evaluate_split_keys_and_errors() -> None:
    x, y = _data()
    res = evaluate_split(x[:60], y[:60], x[60:], y[60:], 3, FAST)
    assert set(METRICS) <= set(res)
    assert 0.0 <= res["linear_top1"] <= 1.0
    with pytest.raises(ValueError, match="folds"):
        stratified_folds(y, 1)
