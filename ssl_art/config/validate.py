"""Value checks of a loaded config: ranges and cross-field rules, each error naming the key and the valid range.

Types were already checked by the loader; :func:`validate` runs inside ``load_config`` and again in the engines, so a
bad value stops before any data is read or a model is built.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ssl_art.config.schema import (
    AugCfg,
    ConfigError,
    DataCfg,
    EvalCfg,
    ModelCfg,
    MonitorCfg,
    OptimCfg,
    PretrainConfig,
    RunCfg,
)


def _need(ok: bool, key: str, value: Any, need: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range: {need}")


def _validate_section(sec: Any, prefix: str) -> None:
    """Range checks of the shared sections (``data``, ``model``, ``optim``, ``run``, ``eval``) where present."""
    if isinstance(sec, DataCfg):
        _need(sec.image_size >= 1, f"{prefix}image_size", sec.image_size, "set a positive image side in pixels")
        _need(sec.batch_size >= 1, f"{prefix}batch_size", sec.batch_size, "set data.batch_size >= 1")
        _need(sec.num_workers >= 0, f"{prefix}num_workers", sec.num_workers, "use 0 (main process) or more")
        frac = sec.max_bad_fraction
        _need(0.0 <= frac <= 1.0, f"{prefix}max_bad_fraction", frac, "a fraction in [0, 1], e.g. 0.05")
        _need(sec.max_image_pixels >= 1, f"{prefix}max_image_pixels", sec.max_image_pixels, "a positive pixel count")
        _need(sec.synthetic_size >= 1, f"{prefix}synthetic_size", sec.synthetic_size, "at least 1 image")
        _need(sec.synthetic_image_size >= 1, f"{prefix}synthetic_image_size", sec.synthetic_image_size, "pixels >= 1")
        caches = ("off", "auto", "ram", "disk")
        _need(sec.cache in caches, f"{prefix}cache", sec.cache, f"one of {', '.join(caches)}")
        _need(sec.cache_max_gb >= 0, f"{prefix}cache_max_gb", sec.cache_max_gb, "a size in GB >= 0")
        _need(sec.cache_ram_gb >= 0, f"{prefix}cache_ram_gb", sec.cache_ram_gb, "a size in GB >= 0")
        _need(sec.cache_scale >= 1.0, f"{prefix}cache_scale", sec.cache_scale, ">= 1 (stored side / image_size)")
        _need(sec.cache_max_aspect >= 1.0, f"{prefix}cache_max_aspect", sec.cache_max_aspect, ">= 1, e.g. 1.34")
        _validate_section(sec.aug, f"{prefix}aug.")
    elif isinstance(sec, AugCfg):
        _need(0.0 < sec.min_scale <= 1.0, f"{prefix}min_scale", sec.min_scale, "a crop area fraction in (0, 1]")
        for name in ("hflip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob"):
            v = getattr(sec, name)
            _need(0.0 <= v <= 1.0, f"{prefix}{name}", v, "a probability in [0, 1]")
        s = sec.color_jitter_strength
        _need(s >= 0.0, f"{prefix}color_jitter_strength", s, "use 0 (no jitter) or more")
        _need(sec.n_views >= 1, f"{prefix}n_views", sec.n_views, "at least 1 view per image")
        _need(sec.min_scale <= sec.max_scale <= 1.0, f"{prefix}max_scale", sec.max_scale, "in [min_scale, 1], e.g. 1.0")
        _need(sec.n_local >= 0, f"{prefix}n_local", sec.n_local, "0 (off) or a number of local views, e.g. 4")
        _need(sec.local_size >= 0, f"{prefix}local_size", sec.local_size, "0 (image_size // 2) or pixels, e.g. 32")
        if sec.n_local:
            lo = sec.local_min_scale
            _need(0.0 < lo <= sec.min_scale, f"{prefix}local_min_scale", lo, "in (0, min_scale], e.g. 0.05")
            _need(sec.preset != "none", f"{prefix}preset", sec.preset, "simclr or art: local views are random crops")
            _need(
                sec.crop_overlap == "any", f"{prefix}crop_overlap", sec.crop_overlap, "any when n_local > 0 (locals "
                "crop anywhere)"
            )  # fmt: skip
    elif isinstance(sec, ModelCfg):
        for name in ("n_intermediates", "proj_hidden_dim", "proj_out_dim"):
            _need(getattr(sec, name) >= 1, f"{prefix}{name}", getattr(sec, name), "a positive integer")
    elif isinstance(sec, OptimCfg):
        _need(sec.lr > 0, f"{prefix}lr", sec.lr, "a positive learning rate, e.g. optim.lr=1e-3")
        _need(sec.min_lr >= 0, f"{prefix}min_lr", sec.min_lr, "0 or a positive floor for the cosine schedule")
        _need(sec.weight_decay >= 0, f"{prefix}weight_decay", sec.weight_decay, "0 (off) or positive")
        _need(0.0 <= sec.momentum < 1.0, f"{prefix}momentum", sec.momentum, "in [0, 1), e.g. 0.9")
        _need(sec.max_steps >= 0, f"{prefix}max_steps", sec.max_steps, "0 (use optim.epochs) or a positive count")
        _need(
            sec.epochs >= 1 or sec.max_steps > 0, f"{prefix}epochs", sec.epochs, "at least 1 (or set optim.max_steps)"
        )
        _need(sec.warmup_epochs >= 0, f"{prefix}warmup_epochs", sec.warmup_epochs, "0 (no warmup) or positive")
        _need(sec.clip_grad >= 0, f"{prefix}clip_grad", sec.clip_grad, "0 (off) or a positive max grad norm")
        _need(sec.accum_steps >= 1, f"{prefix}accum_steps", sec.accum_steps, "1 (no accumulation) or more")
    elif isinstance(sec, RunCfg):
        _need(sec.keep_last >= 1, f"{prefix}keep_last", sec.keep_last, "keep at least 1 checkpoint")
        _need(sec.ckpt_every_steps >= 0, f"{prefix}ckpt_every_steps", sec.ckpt_every_steps, "0 (per epoch) or more")
        _need(sec.log_every >= 1, f"{prefix}log_every", sec.log_every, "log every 1 or more steps")
        _need(sec.time_budget_s >= 0, f"{prefix}time_budget_s", sec.time_budget_s, "0 (no budget) or seconds")
        _need(sec.max_nonfinite >= 1, f"{prefix}max_nonfinite", sec.max_nonfinite, "stop after 1 or more in a row")
    elif isinstance(sec, MonitorCfg):
        _need(sec.every_epochs >= 0, f"{prefix}every_epochs", sec.every_epochs, "0 (off) or a number of epochs")
        _need(sec.folds >= 2, f"{prefix}folds", sec.folds, "the monitor's cross-validation needs at least 2 folds")
        _need(bool(sec.label_columns), f"{prefix}label_columns", list(sec.label_columns), "one or more columns")
        _need(sec.k >= 1, f"{prefix}k", sec.k, "at least 1 neighbour, e.g. monitor.k=20")
        _need(sec.t > 0, f"{prefix}t", sec.t, "a positive kNN temperature, e.g. 0.07")
        _need(sec.image_size >= 0, f"{prefix}image_size", sec.image_size, "0 (data.image_size) or pixels")
        _need(sec.max_images >= 0, f"{prefix}max_images", sec.max_images, "0 (all) or a positive count")
        _need(sec.batch_size >= 1, f"{prefix}batch_size", sec.batch_size, "at least 1 image per batch")
    elif isinstance(sec, EvalCfg):
        _need(sec.folds >= 2, f"{prefix}folds", sec.folds, "cross-validation needs at least 2 folds")
        _need(sec.knn_k >= 1, f"{prefix}knn_k", sec.knn_k, "at least 1 neighbour, e.g. eval.knn_k=20")
        _need(sec.knn_t > 0, f"{prefix}knn_t", sec.knn_t, "a positive kNN temperature, e.g. 0.07")
        _need(sec.linear_epochs >= 1, f"{prefix}linear_epochs", sec.linear_epochs, "at least 1 epoch")
        bs = sec.linear_batch_size
        _need(bs >= 1, f"{prefix}linear_batch_size", bs, "at least 1 sample per linear-probe batch, e.g. 256")
        _need(sec.image_size >= 0, f"{prefix}image_size", sec.image_size, "0 (the checkpoint's size) or pixels")
        lrs = sec.linear_lrs
        _need(bool(lrs) and min(lrs) > 0, f"{prefix}linear_lrs", list(lrs), "one or more positive learning rates")
        _need(all(w >= 0 for w in sec.linear_wds), f"{prefix}linear_wds", list(sec.linear_wds), "weight decays >= 0")


def validate(cfg: Any) -> None:
    """Check value ranges and cross-field rules of a loaded config (types were checked by the loader).

    Run by :func:`load_config` and again by the engines, so a bad value stops before any data is read or a model is
    built. Sections other than ``data``/``model``/``optim``/``run``/``eval`` (and ``loss`` for pretraining) are left
    to their owners.

    Raises:
        ConfigError: naming the key, its value and the valid range.
    """
    for f in dataclasses.fields(cfg):
        _validate_section(getattr(cfg, f.name), f"{f.name}.")
    if isinstance(cfg, PretrainConfig):
        n = cfg.data.aug.n_views
        _need(n >= 2, "data.aug.n_views", n, f"{cfg.method} contrasts views of one image: use data.aug.n_views >= 2")
        a, size = cfg.data.aug, cfg.data.image_size
        if a.n_local:
            side = a.local_size or size // 2
            _need(8 <= side < size, "data.aug.local_size", side, f"in [8, data.image_size={size}): locals are smaller")
        b = cfg.data.batch_size
        _need(b >= 2, "data.batch_size", b, "contrastive pretraining needs at least 2 images per batch")
        t = cfg.loss.temperature
        _need(t > 0, "loss.temperature", t, "a positive temperature, e.g. loss.temperature=0.2")
