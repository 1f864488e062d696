"""Seeded stratified train/val/test splits, optionally grouped (no artist in two splits), saved once as JSON.

A split is made once per run and written to ``splits.json`` (indices into the collection plus the paths, so a
changed manifest is detected instead of silently mis-assigning images). Stratification uses the first label
column; unlabeled items (``-1``) are kept in train only when there is another head to learn from, otherwise
dropped. With a group column (e.g. ``artist``) scikit-learn's ``StratifiedGroupKFold`` assigns whole groups, so
every work of one artist lands in exactly one split; items with no group value form singleton groups.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split


@dataclass(frozen=True)
class Split:
    """Indices into one collection for each part (disjoint, sorted)."""

    train: list[int]
    val: list[int]
    test: list[int]


def _n_folds(fraction: float) -> int:
    return max(2, int(round(1.0 / fraction)))


def _grouped_take(
    idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, taken) with about ``fraction`` taken, whole groups only, stratified by ``y``."""
    n_splits = min(_n_folds(fraction), len(np.unique(groups[idx])))
    if n_splits < 2:
        raise ValueError("need at least 2 distinct groups to make a grouped split")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # the label only stratifies; classes rarer than n_splits trigger a sklearn warning, not an error
    rest, taken = next(iter(sgkf.split(np.zeros(len(idx)), y[idx], groups[idx])))
    return idx[rest], idx[taken]


def _plain_take(idx: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified when every class has >= 2 members, else plain random (tiny classes cannot be stratified)."""
    _, counts = np.unique(y[idx], return_counts=True)
    n_take = int(round(fraction * len(idx)))
    stratify = y[idx] if counts.min() >= 2 and n_take >= len(counts) else None
    rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=stratify)
    return np.asarray(rest), np.asarray(taken)


def make_split(
    targets: Sequence[int] | np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int = 0,
    groups: Sequence[str | None] | None = None,
    keep: Sequence[bool] | np.ndarray | None = None,
) -> Split:
    """Stratified (optionally grouped) train/val/test split.

    Args:
        targets: ``(N,)`` class index per item of the first label column, ``-1`` when missing.
        val_fraction: share of the kept items in val.
        test_fraction: share in test; ``0`` when a separate test set is given.
        seed: makes the split reproducible.
        groups: ``(N,)`` group key per item (e.g. artist); ``None`` entries become singleton groups.
        keep: ``(N,)`` which items may be used at all; default: those with a label.

    Returns:
        The :class:`Split`; val and test never share an item (or a group) with each other or with train.

    Raises:
        ValueError: when fractions are out of range or nothing is left to train on.
    """
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, 0 <= test_fraction and sum < 1, got {val_fraction}, {test_fraction}")
    y = np.asarray(targets, dtype=np.int64)
    mask = np.asarray(keep, dtype=bool) if keep is not None else y >= 0
    idx = np.flatnonzero(mask)
    # unlabeled (in the first column) items still stratify, as their own pseudo-class
    ys = np.where(y >= 0, y, y.max(initial=0) + 1)
    if groups is not None:
        g = np.asarray([k if k not in (None, "") else f"__item{i}" for i, k in enumerate(groups)], dtype=object)
        rest, test = (idx, idx[:0]) if test_fraction == 0 else _grouped_take(idx, ys, g, test_fraction, seed)
        train, val = _grouped_take(rest, ys, g, val_fraction / (1.0 - test_fraction), seed + 1)
    else:
        rest, test = (idx, idx[:0]) if test_fraction == 0 else _plain_take(idx, ys, test_fraction, seed)
        train, val = _plain_take(rest, ys, val_fraction / (1.0 - test_fraction), seed + 1)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"split left {len(train)} train and {len(val)} val items; the collection is too small")
    return Split(sorted(int(i) for i in train), sorted(int(i) for i in val), sorted(int(i) for i in test))


def save_split(path: str | Path, split: Split, paths: Sequence[str], meta: dict[str, object]) -> None:
    """Write ``splits.json``: indices, the image paths of each part and how the split was made."""
    doc = {
        "meta": meta,
        "n_items": len(paths),
        **asdict(split),
        "paths": {k: [str(paths[i]) for i in getattr(split, k)] for k in ("train", "val", "test")},
    }
    Path(path).write_text(json.dumps(doc, indent=1))


def load_split(path: str | Path, paths: Sequence[str]) -> Split:
    """Read a saved split and check that it still matches the collection's paths.

    Raises:
        ValueError: when the collection changed since the split was saved.
    """
    doc = json.loads(Path(path).read_text())
    split = Split(doc["train"], doc["val"], doc["test"])
    for part in ("train", "val", "test"):
        saved = doc["paths"][part]
        now = [str(paths[i]) if i < len(paths) else "<missing>" for i in getattr(split, part)]
        if saved != now:
            raise ValueError(f"{path}: the collection changed since the split was made ({part} differs); delete it")
    return split
