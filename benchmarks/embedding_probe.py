"""Which embedding of a pretrained backbone sorts style best? kNN CV on its learned embeddings and feature statistics.

For every checkpoint (or ``random`` for a random-init resnet18) the labelled collection is embedded once at
``--image-size`` (the evaluation's resize + centre crop) and each candidate is scored by the project's kNN vote
(k=20, T=0.07) under the same stratified 5-fold split as ``main_linear`` (seed 0):

- ``pooled``, ``fused``, ``gram``: what the method's ``embed()`` returns (the learned heads);
- ``ms<i>``: per-channel mean and std of backbone stage ``i``'s map (the AdaIN / Gatys style statistics, no
  parameters); ``ms_all``: stages 0-3 concatenated, each L2-normalised first;
- ``gram<i>``: the raw channel Gram of stage ``i`` (upper triangle; stages 0-1 only, larger ones are huge);
- ``pooled+ms_all``: both, each L2-normalised.

    python benchmarks/embedding_probe.py random runs/ablation16/simclr/seed0 --image-size 64 --md docs/x.md

Prints one JSON object and a markdown table (kNN top-1 %, mean +- std over folds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import normalize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_art.config import DataCfg, PretrainConfig, config_from_dict  # noqa: E402
from ssl_art.data import build_collection, build_eval_transform, build_loader  # noqa: E402
from ssl_art.eval.crossval import stratified_folds  # noqa: E402
from ssl_art.eval.knn import knn_accuracy  # noqa: E402
from ssl_art.methods.load import load_method  # noqa: E402
from ssl_art.methods.registry import build_pretrain_model  # noqa: E402
from ssl_art.models.stats import channel_stats  # noqa: E402


def channel_gram(f: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C(C+1)/2)`` upper triangle of ``F F^T / HW``."""
    c = f.shape[1]
    flat = f.flatten(2)
    g = flat @ flat.transpose(1, 2) / flat.shape[2]
    iu = torch.triu_indices(c, c)
    return g[:, iu[0], iu[1]]


@torch.no_grad()
def embeddings(method: Any, loader: Any) -> tuple[dict[str, Tensor], np.ndarray]:
    out: dict[str, list[Tensor]] = {}
    ys = []
    for batch in loader:
        x = batch.views[0]
        feats = method.backbone.features(x)
        for k, v in method.embed(x).items():
            out.setdefault(k, []).append(v.float())
        for i, f in enumerate(feats.intermediates):
            out.setdefault(f"ms{i}", []).append(channel_stats(f.float()))
            if i < 2:
                out.setdefault(f"gram{i}", []).append(channel_gram(f.float()))
        ys.append(torch.as_tensor(batch.targets))
    feats_n = {k: normalize(torch.cat(v), dim=1) for k, v in out.items()}
    feats_n["ms_all"] = feats_n.pop("stats")  # the embed() 'stats' kind: ms0..ms3, each normalised, concatenated
    feats_n["pooled+ms_all"] = torch.cat([feats_n["pooled"], feats_n["ms_all"]], dim=1)
    return feats_n, torch.cat(ys).numpy()


def probe(ckpt: str, a: argparse.Namespace) -> dict[str, tuple[float, float]]:
    if ckpt == "random":
        torch.manual_seed(0)
        method = build_pretrain_model(config_from_dict(PretrainConfig, {"model": {"backbone": a.backbone}}))
    else:
        method = load_method(ckpt)[0]
    method.eval()
    data = DataCfg(path=a.labelled, batch_size=100, num_workers=0, synthetic_size=a.synthetic_size)
    col = build_collection(data)
    loader = build_loader(col, build_eval_transform(a.image_size), data, train=False, seed=0, label_column="label")
    feats, y = embeddings(method, loader)
    folds = stratified_folds(y, a.folds, 0)
    res = {}
    for k, f in feats.items():
        x = f.numpy()
        accs = [knn_accuracy(x[tr], y[tr], x[ev], y[ev], k=20, T=0.07)["top1"] for tr, ev in folds]
        res[k] = (100 * float(np.mean(accs)), 100 * float(np.std(accs)))
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT / "data")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="run folders / checkpoint files, or 'random'")
    ap.add_argument("--labelled", default=str(shared / "wikiart7-dev"), help="labelled collection ('' = synthetic)")
    ap.add_argument("--synthetic-size", type=int, default=1400)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--backbone", default="resnet18", help="for 'random'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--md", default="", help="also write the table here")
    a = ap.parse_args(argv)
    if a.labelled and not Path(a.labelled).exists():
        raise SystemExit(f"error: --labelled {a.labelled} does not exist")
    torch.set_num_threads(a.threads)
    results = {c: probe(c, a) for c in a.checkpoints}
    kinds = list(dict.fromkeys(k for r in results.values() for k in r))
    name = Path(a.labelled).name or "synthetic"
    lines = [
        f"kNN top-1 (%, k=20, {a.folds}-fold CV, mean +- std over folds) on `{name}` at "
        f"{a.image_size} px, by embedding",
        "",
        "| checkpoint | " + " | ".join(kinds) + " |",
        "|---" * (len(kinds) + 1) + "|",
    ]
    for c, r in results.items():
        cells = [f"{r[k][0]:.1f} +- {r[k][1]:.1f}" if k in r else "-" for k in kinds]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(json.dumps({c: {k: round(v[0], 2) for k, v in r.items()} for c, r in results.items()}))
    print(table)
    if a.md:
        Path(a.md).write_text(table + "\n")
    return results


if __name__ == "__main__":
    main()
