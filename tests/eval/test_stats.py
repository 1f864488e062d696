"""Seed/fold statistics: mean +- std against numpy, paired differences, and the two-stage bootstrap against a naive
loop (same draws), an exact small case, a degenerate case and scipy's one-sample percentile bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ssl_art.eval.stats import bootstrap_means, mean_std, paired_bootstrap_ci, paired_differences


def test_mean_std_is_numpy_with_ddof_1() -> None:
    x = [0.31, 0.35, 0.29]
    m, s = mean_std(x)
    assert m == pytest.approx(sum(x) / 3)
    assert s == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in x) / 2))
    m1, s1 = mean_std([0.4])
    assert m1 == 0.4 and math.isnan(s1)
    with pytest.raises(ValueError):
        mean_std([])


def test_paired_differences_match_seeds_and_folds() -> None:
    v = {0: [0.5, 0.6], 1: [0.4, 0.4], 7: [0.9, 0.9]}
    b = {0: [0.4, 0.5], 1: [0.5, 0.3], 2: [0.1, 0.1]}
    np.testing.assert_allclose(paired_differences(v, b), [[0.1, 0.1], [-0.1, 0.1]])
    with pytest.raises(ValueError, match="no seed in common"):
        paired_differences({3: [1.0]}, {4: [1.0]})
    with pytest.raises(ValueError, match="same length"):
        paired_differences({0: [1.0, 2.0]}, {0: [1.0]})


def _naive_bootstrap(d: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Plain loops over the documented draws: seeds with replacement, then folds with replacement per drawn seed."""
    s, f = d.shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, s, size=(n_boot, s))
    fold_idx = rng.integers(0, f, size=(n_boot, s, f))
    out = np.empty(n_boot)
    for b in range(n_boot):
        total = 0.0
        for i in range(s):
            for j in range(f):
                total += d[seed_idx[b, i], fold_idx[b, i, j]]
        out[b] = total / (s * f)
    return out


@pytest.mark.parametrize("shape", [(1, 5), (3, 5), (2, 3)])
def test_bootstrap_means_equal_the_naive_loop(shape: tuple[int, int]) -> None:
    d = np.random.default_rng(1).normal(0.02, 0.03, size=shape)
    np.testing.assert_allclose(bootstrap_means(d, 500, seed=3), _naive_bootstrap(d, 500, 3), rtol=0, atol=1e-12)
    ci = paired_bootstrap_ci(d, n_boot=500, seed=3)
    lo, hi = np.quantile(_naive_bootstrap(d, 500, 3), [0.025, 0.975])
    assert (ci.low, ci.high) == pytest.approx((lo, hi))
    assert ci.mean == pytest.approx(d.mean()) and (ci.n_seeds, ci.n_folds) == shape


def test_exact_small_case_and_degenerate_case() -> None:
    # one seed, folds [0, 1]: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    means = bootstrap_means([[0.0, 1.0]], n_boot=40_000, seed=0)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert np.mean(means == 0.5) == pytest.approx(0.5, abs=0.01)
    ci = paired_bootstrap_ci([[0.0, 1.0]], n_boot=40_000)
    assert (ci.low, ci.high) == (0.0, 1.0) and not ci.excludes_zero
    const = paired_bootstrap_ci(np.full((3, 5), 0.04))
    assert const.low == pytest.approx(0.04) and const.high == pytest.approx(0.04) and const.excludes_zero


def test_one_seed_interval_agrees_with_scipy_percentile_bootstrap() -> None:
    d = np.random.default_rng(7).normal(0.03, 0.05, size=40)
    ours = paired_bootstrap_ci(d[None, :], n_boot=20_000, seed=0)
    ref = sps.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", random_state=0).confidence_interval
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert ours.low == pytest.approx(ref.low, abs=0.1 * se)
    assert ours.high == pytest.approx(ref.high, abs=0.1 * se)


def test_seed_stage_widens_the_interval_when_seeds_disagree() -> None:
    folds = np.array([0.01, -0.01, 0.0, 0.02, -0.02])
    agree = np.stack([folds + 0.05] * 3)
    disagree = np.stack([folds + 0.0, folds + 0.05, folds + 0.10])  # same mean, training noise between seeds
    a, b = paired_bootstrap_ci(agree), paired_bootstrap_ci(disagree)
    assert a.mean == pytest.approx(b.mean)
    assert (b.high - b.low) > 3 * (a.high - a.low)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        bootstrap_means(np.zeros(3))
    with pytest.raises(ValueError):
        bootstrap_means(np.zeros((1, 2)), n_boot=0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci(np.zeros((1, 2)), level=1.0)
