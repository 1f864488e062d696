"""Statistics for comparing methods over seeds and folds: mean +- std, and paired bootstrap intervals of differences.

A comparison of two pretraining variants is *paired*: both are evaluated on the same cross-validation folds (the
folds' seed is fixed) and, where both were run with it, the same training seed, so each ``(seed, fold)`` cell gives
one difference ``d[s, f] = variant - baseline``. :func:`paired_bootstrap_ci` resamples those differences in two
stages, seeds with replacement and then folds with replacement within each drawn seed (the hierarchical bootstrap:
folds of one model are not independent of each other, seeds are), and reports the percentile interval of the mean
difference (Efron & Tibshirani 1993, ch. 13). With one seed it is the ordinary bootstrap over folds, which then
only measures evaluation noise, not training noise; the caller should say so.

Standard deviations over seeds use ``ddof=1`` (the sample std: few seeds, an estimate of the spread of a new run);
the folds' std in :mod:`ssl_art.eval.crossval` uses ``ddof=0``, scikit-learn's convention for CV scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class Interval:
    """A mean difference and its bootstrap percentile interval.

    Attributes:
        mean: mean of the paired differences.
        low: lower bound of the interval.
        high: upper bound.
        n_seeds: seeds paired.
        n_folds: folds per seed.
    """

    mean: float
    low: float
    high: float
    n_seeds: int
    n_folds: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0."""
        return self.low > 0 or self.high < 0


def mean_std(values: Sequence[float] | ArrayLike) -> tuple[float, float]:
    """``(mean, sample std with ddof=1)``; the std is ``nan`` for fewer than two values.

    Raises:
        ValueError: for an empty input.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def paired_differences(
    variant: Mapping[int, Sequence[float]], baseline: Mapping[int, Sequence[float]]
) -> NDArray[np.float64]:
    """``(S, F)`` differences ``variant - baseline`` over the seeds both have (sorted), fold by fold.

    Args:
        variant: seed -> per-fold scores.
        baseline: seed -> per-fold scores on the same folds.

    Raises:
        ValueError: no seed in common, or fold counts that differ.
    """
    seeds = sorted(set(variant) & set(baseline))
    if not seeds:
        raise ValueError(f"no seed in common: variant has {sorted(variant)}, baseline {sorted(baseline)}")
    rows = []
    for s in seeds:
        a, b = np.asarray(variant[s], dtype=np.float64), np.asarray(baseline[s], dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1 or a.size == 0:
            raise ValueError(f"seed {s}: per-fold scores must have the same length, got {a.shape} and {b.shape}")
        rows.append(a - b)
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"every seed needs the same number of folds, got {sorted(lengths)}")
    return np.stack(rows)


def bootstrap_means(diffs: ArrayLike, n_boot: int = 10_000, seed: int = 0) -> NDArray[np.float64]:
    """``(n_boot,)`` means of two-stage resamples (seeds, then folds within each drawn seed) of ``(S, F)`` diffs.

    The draws are, in this order, ``rng.integers(0, S, (n_boot, S))`` and ``rng.integers(0, F, (n_boot, S, F))``
    from ``numpy.random.default_rng(seed)``.

    Raises:
        ValueError: ``diffs`` not 2-D and non-empty, or ``n_boot < 1``.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"diffs must be a non-empty (seeds, folds) array, got shape {d.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    s, f = d.shape
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, s, size=(n_boot, s))
    fold_idx = rng.integers(0, f, size=(n_boot, s, f))
    return np.asarray(d[seed_idx[..., None], fold_idx].mean(axis=(1, 2)), dtype=np.float64)


def paired_bootstrap_ci(diffs: ArrayLike, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Interval:
    """Mean of ``(S, F)`` paired differences and its percentile bootstrap interval at ``level``.

    Raises:
        ValueError: see :func:`bootstrap_means`; ``level`` outside ``(0, 1)``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = np.asarray(diffs, dtype=np.float64)
    means = bootstrap_means(d, n_boot, seed)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(d.mean()), float(low), float(high), int(d.shape[0]), int(d.shape[1]))
