"""``run_pretrain(cfg)``: collection -> multi-view dataset -> method -> :func:`fit`, plus the run summary.

Everything ``main_pretrain.py`` does, importable and testable without argparse. Under ``torchrun`` every rank joins
the process group first, checks the config (an error on any rank stops all of them with its message), and waits
while rank 0 alone prepares the run directory; rank 0 alone writes ``summary.json`` and logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import yaml

from ssl_art import distributed
from ssl_art.config import ConfigError, PretrainConfig, config_to_dict, validate
from ssl_art.data.dataset import ImageDataset
from ssl_art.data.loaders import build_collection, collate
from ssl_art.data.transforms import build_pretrain_transform
from ssl_art.engine.fast_path import apply_speed_options, prepare_cached_input
from ssl_art.engine.hooks import EpochHook
from ssl_art.engine.loop import FitResult, fit
from ssl_art.engine.monitor import KnnMonitor
from ssl_art.engine.rundir import check_run_dir, prepare_run_dir
from ssl_art.methods.registry import METHODS, build_pretrain_model
from ssl_art.runtime.device import amp_dtype, resolve_device
from ssl_art.runtime.logs import setup_logging
from ssl_art.runtime.seeding import seed_everything

log = logging.getLogger("ssl_art.pretrain")


def preflight(cfg: PretrainConfig) -> None:
    """Cheap checks that must fail before any data is indexed or a model is built (one message naming the fix).

    Raises:
        ConfigError: an out-of-range value, or a ``data.path`` / ``model.init_checkpoint`` that does not exist.
        RunDirError: ``run.output_dir`` holds a run and neither ``run.resume`` nor ``run.overwrite`` is set.
    """
    validate(cfg)
    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is not one of {', '.join(METHODS)}")
    if cfg.data.path and not Path(cfg.data.path).expanduser().exists():
        raise ConfigError(
            f"data.path={cfg.data.path!r} does not exist; point it at an image folder, an ImageFolder tree or a "
            "CSV manifest (or data.path='' for the embedded synthetic collection)"
        )
    for key, path in (("monitor.path", cfg.monitor.path), ("monitor.eval_path", cfg.monitor.eval_path)):
        if cfg.monitor.every_epochs and path and not Path(path).expanduser().exists():
            raise ConfigError(
                f"{key}={path!r} does not exist; point it at a labelled ImageFolder tree or CSV manifest "
                "(or monitor.path='' for the embedded synthetic collection, monitor.every_epochs=0 for no monitor)"
            )
    init = cfg.model.init_checkpoint
    if init and not Path(init).expanduser().is_file():
        raise ConfigError(f"model.init_checkpoint={init!r} is not a file; give a local weights file or leave it empty")
    try:  # run.device=cuda without CUDA, run.amp=fp16 on CPU
        amp_dtype(cfg.run.amp, resolve_device(cfg.run.device))
    except (RuntimeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    check_run_dir(cfg.run.output_dir, cfg.run.resume, cfg.run.overwrite)
    if cfg.run.resume:
        _check_resume_matches(cfg)


_RESUME_FREE = {"init_checkpoint", "pretrained"}  # weights come from the checkpoint on resume


def _check_resume_matches(cfg: PretrainConfig) -> None:
    """On ``run.resume``, the method and model must be those of the run being continued (its ``config.yaml``)."""
    saved_file = Path(cfg.run.output_dir) / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text()) or {}
    now = config_to_dict(cfg)
    diffs = [f"method: {saved.get('method')!r} -> {now['method']!r}"] if saved.get("method") != now["method"] else []
    old_model = saved.get("model", {}) if isinstance(saved.get("model"), dict) else {}
    for key, value in now["model"].items():
        if key not in _RESUME_FREE and key in old_model and old_model[key] != value:
            diffs.append(f"model.{key}: {old_model[key]!r} -> {value!r}")
    if diffs:
        raise ConfigError(
            f"run.resume=true but the config differs from the run in {cfg.run.output_dir} ({'; '.join(diffs)}); "
            f"resume with the original values (see {saved_file}) or start a new run.output_dir"
        )


def run_pretrain(cfg: PretrainConfig) -> FitResult:
    """Pretrain ``cfg.method`` on ``cfg.data.path`` into ``cfg.run.output_dir`` (resumable with ``run.resume``).

    Raises:
        ConfigError: see :func:`preflight`; also a batch larger than the collection.
        RunDirError: see :func:`preflight`.
        TooManyBadFilesError: more than ``data.max_bad_fraction`` of the files are unreadable (at indexing or
            while training); ``<output_dir>/bad_files.json`` lists them by kind.
        NonFiniteLossError: ``run.max_nonfinite`` non-finite steps in a row; the last good checkpoint is kept.
    """
    try:
        distributed.init_from_env(cfg.dist.backend, resolve_device(cfg.run.device))
    except (RuntimeError, ValueError):  # a device or backend that cannot work: preflight says so in one line
        pass
    err: Exception | None = None
    try:  # every rank checks the config before any rank writes (so a fresh run dir is not "already a run")
        preflight(cfg)
    except Exception as e:
        if not distributed.is_initialized():
            raise
        err = e
    distributed.raise_together(err)  # one rank's error stops every rank, with that rank's message
    rank = distributed.rank()
    config = config_to_dict(cfg)
    setup_logging(None, rank)  # console only until the run dir exists
    d = cfg.data
    collection = build_collection(d, cfg.run.seed)
    if d.batch_size > len(collection):
        raise ConfigError(
            f"data.batch_size={d.batch_size} is larger than the collection {d.path or '<synthetic>'} "
            f"({len(collection)} usable images); lower data.batch_size to at most {len(collection)}"
        )
    collection.bad.check(collection.n_indexed, d.max_bad_fraction)  # stop before any training
    seed_everything(cfg.run.seed, cfg.run.deterministic)  # before building the model: its init is seeded too
    method = build_pretrain_model(cfg)  # before the run dir exists: an init_checkpoint mismatch leaves nothing
    hooks: list[EpochHook] = []
    if cfg.monitor.every_epochs and rank == 0:  # rank 0 alone measures; decoded before the run dir exists too
        hooks.append(KnnMonitor.from_config(cfg.monitor, d, seed=0))  # seed 0: the same set and folds every run
    distributed.barrier()  # every rank has checked the run dir before rank 0 creates it
    if rank == 0:
        prepare_run_dir(cfg.run.output_dir, cfg.run.resume, cfg.run.overwrite, config)
    distributed.barrier()
    out = Path(cfg.run.output_dir)
    setup_logging(out, rank)
    log.info(
        "collection %s: %d images (%d unreadable at indexing)",
        d.path or "<synthetic>",
        len(collection),
        collection.bad.total,
    )
    batches = prepare_cached_input(cfg, collection, out, resolve_device(cfg.run.device))  # None: the PIL path
    transform = build_pretrain_transform(d.aug, d.image_size)  # the recipe the batched path follows: every option
    dataset = ImageDataset(collection, transform, max_image_pixels=d.max_image_pixels)
    apply_speed_options(method, cfg.run.channels_last, cfg.run.compile)
    n_params = sum(p.numel() for p in method.parameters() if p.requires_grad)
    log.info("method %s on %s: %.2fM trainable parameters", cfg.method, cfg.model.backbone, n_params / 1e6)
    t0 = time.time()
    result = fit(
        method, dataset, collate, d, cfg.optim, cfg.run, config, out, bad=collection.bad,
        dist_backend=cfg.dist.backend, sync_bn=cfg.dist.sync_bn, batches=batches, epoch_hooks=hooks,
    )  # fmt: skip
    if rank != 0:
        return result
    summary = {**dataclasses.asdict(result), "wall_s": time.time() - t0, "n_images": len(collection)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if result.bad_files.get("total"):
        log.warning(
            "%d unreadable files skipped (counts per kind in %s): %s",
            result.bad_files["total"],
            out / "bad_files.json",
            result.bad_files["counts"],
        )
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
