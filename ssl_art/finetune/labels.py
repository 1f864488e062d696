"""Label handling for fine-tuning: fine -> coarse label maps, multi-task target matrices and the masked loss.

A label map is a YAML file applied when the collection is loaded, never to the data on disk. Two forms per key::

    style: {Impressionism: Modern, Baroque: Old_Masters, ...}      # rewrite the 'style' column in place
    movement: {from: style, map: {Impressionism: Modern, ...}}     # add a new 'movement' column from 'style'

A fine label absent from its map is an error (naming the labels), so a typo never silently drops images; map a
label to ``null`` to make it missing on purpose. Multi-task targets are an ``(N, T)`` int64 matrix with ``-1`` for
a missing label; :func:`masked_multitask_loss` drops those rows from that head's loss only, so an image with a
style but no artist still trains the style head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from ssl_art.data.collection import Collection


def read_label_map(path: str | Path) -> dict[str, dict[str, object]]:
    """Load a label-map YAML (see the module docstring).

    Raises:
        ValueError: when the file is not a mapping of column -> mapping.
    """
    doc = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ValueError(f"{path}: a label map is a mapping column -> {{fine: coarse}} (or {{from: col, map: ...}})")
    return {str(k): dict(v) for k, v in doc.items()}


def apply_label_map(
    labels: Mapping[str, list[str | None]], label_map: Mapping[str, Mapping[str, object]]
) -> dict[str, list[str | None]]:
    """Return new label columns with ``label_map`` applied (inputs untouched).

    Args:
        labels: column -> one label per image (``None`` = missing).
        label_map: column -> ``{fine: coarse}`` or ``{"from": source_column, "map": {fine: coarse}}``.

    Returns:
        Column -> mapped labels; columns not in the map are copied unchanged.

    Raises:
        ValueError: for an unknown source column or fine labels the map does not cover.
    """
    out = {k: list(v) for k, v in labels.items()}
    for column, spec in label_map.items():
        if "from" in spec and "map" in spec:
            source, table = str(spec["from"]), spec["map"]
        else:
            source, table = column, spec
        if source not in labels:
            raise ValueError(f"label map: column {source!r} not in the collection (have {', '.join(labels)})")
        if not isinstance(table, Mapping):
            raise ValueError(f"label map for {column!r}: expected a mapping fine -> coarse")
        table = {str(k): v for k, v in table.items()}
        unmapped = sorted({v for v in labels[source] if v is not None and v not in table})
        if unmapped:
            raise ValueError(f"label map for {column!r} does not cover {unmapped[:10]} (map them, or to null)")
        out[column] = [None if v is None or table[v] is None else str(table[v]) for v in labels[source]]
    return out


def remap_collection(coll: Collection, label_map: Mapping[str, Mapping[str, object]]) -> Collection:
    """A copy of ``coll`` whose label columns went through :func:`apply_label_map`."""
    return Collection(
        paths=list(coll.paths),
        labels=apply_label_map(coll.labels, label_map),
        source=coll.source,
        bad=coll.bad,
        synthetic=coll.synthetic,
    )


def target_matrix(coll: Collection, columns: Sequence[str], classes: Mapping[str, Sequence[str]]) -> np.ndarray:
    """``(N, T)`` int64 class indices for ``columns`` against fixed class lists; ``-1`` = missing or unknown class.

    Class lists are passed in (computed once on the whole labelled collection) so that train, val, test and a
    separately given test set all use the same indices; a test label unseen in training maps to ``-1``.
    """
    out = np.full((len(coll), len(columns)), -1, dtype=np.int64)
    for j, col in enumerate(columns):
        index = {c: k for k, c in enumerate(classes[col])}
        values = coll.labels.get(col)
        if values is None:
            raise ValueError(f"label column {col!r} not in collection {coll.source!r} (have {', '.join(coll.labels)})")
        out[:, j] = [index.get(v, -1) if v is not None else -1 for v in values]
    return out


def inverse_frequency_weights(targets: np.ndarray, n_classes: int) -> Tensor:
    """``(C,)`` class weights ``N / (C * count_c)`` from ``(N,)`` targets (missing ``-1`` ignored; empty class -> 0)."""
    t = targets[targets >= 0]
    counts = np.bincount(t, minlength=n_classes).astype(np.float64)
    w = np.divide(len(t), n_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(w, dtype=torch.float32)


def balanced_indices(targets: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` indices with replacement so every present class is equally likely (a balanced epoch).

    Args:
        targets: ``(N,)`` class per item, ``-1`` missing (never drawn).
        n: how many to draw (usually ``N``).
        seed: per-epoch seed.
    """
    valid = np.flatnonzero(targets >= 0)
    counts = np.bincount(targets[valid])
    p = 1.0 / counts[targets[valid]]
    rng = np.random.default_rng(seed)
    return rng.choice(valid, size=n, replace=True, p=p / p.sum())


def masked_multitask_loss(
    logits: Sequence[Tensor],
    targets: Tensor,
    weights: Sequence[float],
    label_smoothing: float = 0.0,
    class_weights: Sequence[Tensor | None] | None = None,
) -> tuple[Tensor, list[float]]:
    """Weighted sum over heads of cross-entropy on the rows that have a label for that head.

    Args:
        logits: one ``(B, C_t)`` tensor per head.
        targets: ``(B, T)`` int64, ``-1`` = missing for that head.
        weights: ``T`` loss weights.
        label_smoothing: passed to ``F.cross_entropy``.
        class_weights: per head ``(C_t,)`` weights or ``None``.

    Returns:
        ``(loss, per_head)``: the scalar loss and each head's (unweighted) loss as a float (``nan`` when the batch
        has no label for that head, which then contributes nothing).
    """
    if targets.ndim != 2 or targets.shape[1] != len(logits):
        raise ValueError(f"targets must be (B, {len(logits)}), got {tuple(targets.shape)}")
    total = logits[0].new_zeros(())
    per_head: list[float] = []
    for t, (z, w) in enumerate(zip(logits, weights)):
        mask = targets[:, t] >= 0
        if not bool(mask.any()):
            per_head.append(float("nan"))
            continue
        cw = class_weights[t] if class_weights is not None else None
        loss = F.cross_entropy(
            z[mask],
            targets[mask, t],
            weight=cw.to(z.device) if cw is not None else None,
            label_smoothing=label_smoothing,
        )
        per_head.append(float(loss.detach()))
        total = total + w * loss
    return total, per_head
