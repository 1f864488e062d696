"""Top-k predictions of fine-tuned checkpoints for an image, a folder or a CSV manifest, as CSV or JSON.

``ssl-art predict runs/ft/checkpoints/best.pt photos/ -k 3 --out preds.csv``

The preprocessing is :func:`~ssl_art.data.build_eval_transform` at the image size stored in the checkpoint, the
same function fine-tuning evaluated with, so there is no train/serve skew. Several checkpoints are soft-voted
(weighted by their stored val score with ``--weighting val``); a gated checkpoint predicts with its calibrated
routing and also reports whether each image used the expensive branch. Serving code: imports models and data,
never the engine. The command line is ``ssl-art predict`` (:mod:`ssl_art.cli.predict`); the old
``python -m ssl_art.predict`` names it.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_art.config import DataCfg
from ssl_art.data import build_eval_transform, build_loader, load_collection
from ssl_art.data.collection import Collection
from ssl_art.finetune.ensemble import member_weights, soft_vote
from ssl_art.finetune.model import ModelSpec, load_finetuned
from ssl_art.models.gated import GatedTwoBranch


@dataclass
class Predictions:
    """Per-image results: ``paths``; ``probs`` column -> ``(N, C)``; ``classes`` column -> names; ``routed``."""

    paths: list[str]
    probs: dict[str, np.ndarray]
    classes: dict[str, list[str]]
    routed: np.ndarray | None = None


def collection_for(source: str) -> Collection:
    """An image file, a folder (scanned recursively, labels ignored) or a CSV manifest as a collection."""
    p = Path(source)
    if p.is_file() and p.suffix.lower() != ".csv":
        return Collection(paths=[str(p.resolve())], source=source)
    return load_collection(source, fmt="csv" if p.suffix.lower() == ".csv" else "folder")


@torch.no_grad()
def _member_probs(
    model: torch.nn.Module, spec: ModelSpec, coll: Collection, batch_size: int, device: str
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    loader = build_loader(
        coll, build_eval_transform(spec.image_size), DataCfg(batch_size=batch_size, num_workers=0), False, 0
    )
    model.to(device).eval()
    gated = isinstance(model, GatedTwoBranch)
    cols = spec.columns[:1] if gated else spec.columns
    out = {c: np.full((len(coll), len(spec.classes[c])), np.nan, dtype=np.float32) for c in cols}
    routed = np.zeros(len(coll), dtype=bool) if gated else None
    for b in loader:
        if not b.views:
            continue
        idx = b.indices.numpy()
        x = b.views[0].to(device)
        if isinstance(model, GatedTwoBranch):
            res = model(x, sample=False)
            logits = [res.logits]
            assert routed is not None
            routed[idx] = res.routed.cpu().numpy()
        else:
            logits = model(x)
        for c, z in zip(cols, logits):
            out[c][idx] = z.float().softmax(-1).cpu().numpy()
    return out, routed


def predict(
    checkpoints: list[str], source: str, batch_size: int = 32, weighting: str = "uniform", device: str = "cpu"
) -> Predictions:
    """Soft-voted class probabilities of ``checkpoints`` on the images of ``source``.

    Raises:
        ValueError: when members disagree on a head's classes.
    """
    coll = collection_for(source)
    per: list[dict[str, np.ndarray]] = []
    scores: list[float] = []
    classes: dict[str, list[str]] = {}
    routed: np.ndarray | None = None
    for ck in checkpoints:
        model, spec, meta = load_finetuned(ck)
        probs, r = _member_probs(model, spec, coll, batch_size, device)
        for c in probs:
            if c in classes and classes[c] != spec.classes[c]:
                raise ValueError(f"{ck}: head {c!r} has other classes than the previous checkpoints")
            classes[c] = spec.classes[c]
        per.append(probs)
        scores.append(float(meta.get("val_score", meta.get("val_top1", float("nan")))))
        routed = r if r is not None else routed
    weights = member_weights(scores, weighting)
    voted = {}
    for c in classes:
        members = [(p[c], w) for p, w in zip(per, weights) if c in p]
        voted[c] = soft_vote([m for m, _ in members], [w for _, w in members])
    return Predictions(coll.paths, voted, classes, routed)


def top_k_rows(pred: Predictions, k: int) -> list[dict[str, Any]]:
    """One dict per image: ``path``, and per head a list of ``{label, prob}`` (highest first)."""
    rows = []
    for i, path in enumerate(pred.paths):
        row: dict[str, Any] = {"path": path}
        for c, p in pred.probs.items():
            if not np.isfinite(p[i]).all():
                row[c] = []  # unreadable image
                continue
            order = np.argsort(-p[i])[:k]
            row[c] = [{"label": pred.classes[c][j], "prob": round(float(p[i, j]), 6)} for j in order]
        if pred.routed is not None:
            row["expensive"] = bool(pred.routed[i])
        rows.append(row)
    return rows


def write_rows(rows: list[dict[str, Any]], out: str, k: int) -> None:
    """``.json`` -> a JSON list; anything else -> CSV with ``<head>_top<j>`` / ``<head>_p<j>`` columns; ``-`` stdout."""
    if out.endswith(".json"):
        text = json.dumps(rows, indent=1)
        sys.stdout.write(text + "\n") if out == "-" else Path(out).write_text(text)
        return
    heads = [h for h in rows[0] if h not in ("path", "expensive")] if rows else []
    fields = ["path"] + [f"{h}_{t}{j}" for h in heads for j in range(1, k + 1) for t in ("top", "p")]
    fields += ["expensive"] if rows and "expensive" in rows[0] else []
    f = sys.stdout if out == "-" else open(out, "w", newline="")
    try:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            flat: dict[str, Any] = {"path": r["path"]}
            for h in heads:
                for j, e in enumerate(r[h], start=1):
                    flat[f"{h}_top{j}"], flat[f"{h}_p{j}"] = e["label"], e["prob"]
            if "expensive" in r:
                flat["expensive"] = int(r["expensive"])
            w.writerow(flat)
    finally:
        if f is not sys.stdout:
            f.close()


if __name__ == "__main__":  # the old entry point: one command style now
    sys.exit(
        "error: `python -m ssl_art.predict` is now `ssl-art predict` (same arguments; see `ssl-art predict --help`)"
    )
