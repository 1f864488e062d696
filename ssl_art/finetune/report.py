"""Classification report of a fine-tuned model: top-1/3/5, balanced accuracy, macro-F1, per-class P/R, confusion PNG.

The numbers come from :mod:`ssl_art.eval.metrics` (one implementation for the whole toolkit); this module only
assembles them per head, writes ``<name>.json`` and ``<name>_confusion.png`` into the run dir and mirrors the
scalars to TensorBoard. Rows whose label is missing (``-1``) are left out of that head's report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ssl_art.eval.metrics import (
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    precision_recall_per_class,
    topk_accuracy,
)


def classification_metrics(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Scalars, per-class precision/recall/support and the confusion matrix of ``(N, C)`` probs on ``(N,)`` targets.

    Returns:
        ``{"n", "top1", "top3", "top5", "balanced_acc", "macro_f1", "per_class": {name: {...}}, "confusion"}``.
    """
    keep = (targets >= 0) & np.isfinite(probs).all(axis=1)
    p, t = probs[keep], targets[keep].astype(np.int64)
    c = len(classes)
    pred = p.argmax(axis=1)
    prec, rec = precision_recall_per_class(t, pred, c)
    cm = confusion_matrix(t, pred, c)
    support = cm.sum(axis=1)
    return {
        "n": int(len(t)),
        "top1": topk_accuracy(p, t, 1),
        "top3": topk_accuracy(p, t, 3),
        "top5": topk_accuracy(p, t, 5),
        "balanced_acc": balanced_accuracy(t, pred, c),
        "macro_f1": macro_f1(t, pred, c),
        "per_class": {
            name: {"precision": float(prec[k]), "recall": float(rec[k]), "support": int(support[k])}
            for k, name in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }


def save_confusion_png(cm: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix (true rows, predicted columns) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(cm[i, j])),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="k" if norm[i, j] < 0.6 else "w",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    out_dir: Path,
    name: str,
    heads: dict[str, tuple[np.ndarray, np.ndarray, list[str]]],
    writer: Any = None,
    step: int = 0,
) -> dict[str, dict[str, Any]]:
    """Report every head: ``<name>.json`` plus ``<name>_<column>_confusion.png``; scalars to TensorBoard.

    Args:
        out_dir: run directory.
        name: report name, e.g. ``test`` or ``test_ensemble``.
        heads: column -> ``(probs (N, C), targets (N,), classes)``.
        writer: optional ``SummaryWriter``.
        step: TensorBoard step.
    """
    report = {}
    for col, (probs, targets, classes) in heads.items():
        m = classification_metrics(probs, targets, classes)
        save_confusion_png(
            np.asarray(m["confusion"]), classes, out_dir / f"{name}_{col}_confusion.png", f"{name}: {col}"
        )
        report[col] = m
        if writer is not None:
            for k in ("top1", "top3", "top5", "balanced_acc", "macro_f1"):
                writer.add_scalar(f"{name}/{col}/{k}", m[k], step)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1))
    return report
