"""``run_pretrain(cfg)``: collection -> multi-view dataset -> method -> :func:`fit`, plus the run summary.

Everything ``main_pretrain.py`` does, importable and testable without argparse.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

from ssl_art.config import PretrainConfig, config_to_dict
from ssl_art.data.collection import load_collection
from ssl_art.data.dataset import ImageDataset
from ssl_art.data.loaders import collate
from ssl_art.data.transforms import MultiView, build_view_transform
from ssl_art.engine.loop import FitResult, fit
from ssl_art.engine.rundir import prepare_run_dir, seed_everything, setup_logging
from ssl_art.models.build import build_pretrain_model

log = logging.getLogger("ssl_art.pretrain")


def run_pretrain(cfg: PretrainConfig) -> FitResult:
    """Pretrain ``cfg.method`` on ``cfg.data.path`` into ``cfg.run.output_dir`` (resumable with ``run.resume``)."""
    config = config_to_dict(cfg)
    out = prepare_run_dir(cfg.run.output_dir, cfg.run.resume, cfg.run.overwrite, config)
    setup_logging(out)
    seed_everything(cfg.run.seed, cfg.run.deterministic)  # before building the model: its init is seeded too
    d = cfg.data
    collection = load_collection(
        d.path,
        fmt=d.format,
        label_column=d.label_column,
        root=d.root,
        synthetic_size=d.synthetic_size,
        synthetic_image_size=d.synthetic_image_size,
        seed=cfg.run.seed,
    )
    log.info(
        "collection %s: %d images (%d unreadable at indexing)",
        d.path or "<synthetic>",
        len(collection),
        collection.bad.total,
    )
    transform = MultiView(build_view_transform(d.aug, d.image_size), d.aug.n_views)
    dataset = ImageDataset(collection, transform, max_image_pixels=d.max_image_pixels)
    method = build_pretrain_model(cfg)
    n_params = sum(p.numel() for p in method.parameters() if p.requires_grad)
    log.info("method %s on %s: %.2fM trainable parameters", cfg.method, cfg.model.backbone, n_params / 1e6)
    t0 = time.time()
    result = fit(
        method, dataset, collate, d, cfg.optim, cfg.run, config, out, bad=collection.bad, dist_backend=cfg.dist.backend
    )
    summary = {**dataclasses.asdict(result), "wall_s": time.time() - t0, "n_images": len(collection)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "%s after %d steps (%.1f epochs, %.0f s, %.1f img/s); checkpoint: %s",
        result.stopped,
        result.steps,
        result.epochs,
        result.seconds,
        result.images_per_s,
        out / "checkpoints" / "last.pt",
    )
    return result
