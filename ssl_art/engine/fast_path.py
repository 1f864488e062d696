"""Choosing and preparing the pretraining input path, plus the measured speed options.

:func:`prepare_cached_input` turns ``data.cache`` (``off | auto | ram | disk``) into either ``None`` (the
per-image PIL DataLoader path runs) or a factory ``sampler -> CachedBatches`` for :func:`~ssl_art.engine.loop.fit`,
building (or reusing) the decode-once cache first. It logs which path runs and why, counts the bad files found while
building together with those dropped at indexing, and stops with ``bad_files.json`` written when more than
``data.max_bad_fraction`` of the collection is unreadable -- the same report the PIL path writes.
:func:`apply_speed_options` applies ``run.channels_last`` and ``run.compile``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_art import distributed
from ssl_art.config import ConfigError, PretrainConfig
from ssl_art.data.batch_aug import build_batch_augment
from ssl_art.data.cache import build_cache, cache_key, is_built, open_cache, plan_cache, stored_shape
from ssl_art.data.cached_loader import CachedBatches
from ssl_art.data.collection import Collection
from ssl_art.data.decode import BadFileReport
from ssl_art.runtime.errors import TooManyBadFilesError

log = logging.getLogger("ssl_art.input")

BatchesFactory = Callable[[Iterable[int]], CachedBatches]


def cache_root(cfg: PretrainConfig) -> Path:
    """``data.cache_dir``, or ``<parent of run.output_dir>/.ssl_art_cache`` (never inside the data folder)."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser()
    return Path(cfg.run.output_dir).expanduser().resolve().parent / ".ssl_art_cache"


def _free_bytes(root: Path) -> int:
    probe = root
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def prepare_cached_input(
    cfg: PretrainConfig, collection: Collection, out: Path, device: torch.device
) -> BatchesFactory | None:
    """Build or reuse the cache when ``data.cache`` selects it; ``None`` = use the per-image path.

    Raises:
        ConfigError: an explicit ``data.cache=ram|disk`` that cannot be honoured.
        TooManyBadFilesError: more than ``data.max_bad_fraction`` unreadable (``out/bad_files.json`` written).
    """
    d = cfg.data
    if d.cache == "off":
        log.info("input path: per-image PIL DataLoader (data.cache=off)")
        return None
    shape = stored_shape(collection, d.image_size, d.cache_scale, d.cache_max_aspect)
    folder = cache_root(cfg) / cache_key(collection, shape, d.max_image_pixels)
    nbytes = shape.nbytes(len(collection))
    free = nbytes if is_built(folder) else _free_bytes(folder.parent)
    try:
        mode, why = plan_cache(d.cache, nbytes, d.cache_max_gb, d.cache_ram_gb, free)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if mode == "off":
        log.info("input path: per-image PIL DataLoader (%s)", why)
        return None
    reused = is_built(folder)
    err: Exception | None = None
    if distributed.is_main():  # under torchrun rank 0 builds the shared folder; the others wait, then reuse it
        try:
            build_cache(collection, folder, shape, d.max_image_pixels, d.num_workers, cfg.run.progress)
        except Exception as e:
            err = e
    distributed.raise_together(err)
    if not distributed.is_main():
        build_cache(collection, folder, shape, d.max_image_pixels, d.num_workers, False)  # already built: reused
    cache = open_cache(folder, mode)
    where = "GPU-resident" if mode == "ram" and device.type == "cuda" else mode
    log.info(
        "input path: cached batched augmentation on %s, %s cache (%s) %s %s: %d x 3 x %d x %d uint8",
        device.type,
        where,
        why,
        "reused from" if reused else "built in",
        folder,
        len(cache),
        shape.short,
        shape.long,
    )
    report = cache.bad_report(collection.paths)
    if report.total:
        log.warning("%d unreadable files found while caching:\n%s", report.total, report.summary())
    merged = BadFileReport().merge(collection.bad).merge(report)
    try:
        merged.check(collection.n_indexed, d.max_bad_fraction)
    except TooManyBadFilesError:
        if distributed.is_main():
            (out / "bad_files.json").write_text(json.dumps(merged.to_dict(), indent=2))
        raise
    targets = _targets(collection, d.label_column)
    augment = build_batch_augment(d.aug, d.image_size)

    def factory(sampler: Iterable[int]) -> CachedBatches:
        return CachedBatches(
            cache,
            sampler,
            d.batch_size,
            augment,
            d.aug.n_views + d.aug.n_local,
            cfg.run.seed,
            device,
            collection.paths,
            targets,
            channels_last=cfg.run.channels_last,
        )

    return factory


def _targets(collection: Collection, column: str) -> np.ndarray | None:
    if not collection.labels or column not in collection.labels:
        return None
    return collection.targets(column)


def apply_speed_options(method: nn.Module, channels_last: bool, compile_model: bool) -> nn.Module:
    """``channels_last`` memory format for the whole method; ``torch.compile`` of its backbone, in place.

    ``nn.Module.compile`` keeps the parameter names, so checkpoints stay loadable without ``torch.compile``.
    """
    if channels_last:
        method.to(memory_format=torch.channels_last)
    if compile_model:
        backbone: Any = getattr(method, "backbone", method)
        backbone.compile()
    return method
