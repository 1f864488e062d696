"""``run_linear_eval(cfg)``: checkpoint -> frozen features -> kNN + linear probe, beside a random-init baseline.

Everything ``main_linear.py`` does, importable and testable without argparse. The method comes from
``eval.checkpoint`` (a checkpoint file or a pretraining run dir; its stored config fixes the architecture and, unless
``eval.image_size`` is set, the image size) or, when empty, is built from ``model.*`` and ``data.image_size`` (random
or hub/``init_checkpoint`` weights). Features of ``eval.train_path`` (falling back to ``data.path``; both empty = the
embedded synthetic collection) are evaluated against ``eval.eval_path`` when given, else by stratified k-fold
cross-validation. A randomly initialised model of the same architecture is evaluated the same way
(``eval.compare_random``), so every run shows what pretraining gained. Results go to ``<run.output_dir>/metrics.json``
next to the resolved ``config.yaml``, and a table is printed. Under ``torchrun`` feature extraction is sharded over
the ranks and gathered on rank 0, which alone evaluates, writes and prints (the other ranks return ``{}``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ssl_art import distributed
from ssl_art.config import ConfigError, DataCfg, LinearConfig, PretrainConfig, save_config, validate
from ssl_art.data import BadFileReport, Collection, build_collection, build_eval_transform, build_loader
from ssl_art.eval.crossval import METRICS, cross_validate, evaluate_split
from ssl_art.eval.features import ExtractedFeatures, extract, resolve_embedding
from ssl_art.methods.base import PretrainMethod
from ssl_art.methods.load import load_method
from ssl_art.methods.registry import build_pretrain_model
from ssl_art.runtime.device import resolve_device
from ssl_art.runtime.logs import setup_logging
from ssl_art.runtime.seeding import seed_everything

log = logging.getLogger("ssl_art.eval")


def _load_labelled(path: str, data: DataCfg, seed: int) -> Collection:
    return build_collection(dataclasses.replace(data, path=path), seed)


def _label_column(collection: Collection, wanted: str) -> str:
    """``data.label_column`` if the collection has it; its only label column otherwise; else a clear error."""
    columns = list(collection.labels)
    if wanted in columns:
        return wanted
    if len(columns) == 1:
        log.warning("label column '%s' not found; using the collection's only column '%s'", wanted, columns[0])
        return columns[0]
    raise ValueError(f"data.label_column='{wanted}' is not a label column of the collection; have {columns or 'none'}")


def _extract(
    method: PretrainMethod,
    collection: Collection,
    cfg: LinearConfig,
    image_size: int,
    device: torch.device,
    column: str,
    desc: str,
) -> ExtractedFeatures:
    loader = build_loader(
        collection, build_eval_transform(image_size), cfg.data, train=False, seed=cfg.run.seed, label_column=column
    )
    sharded = distributed.world_size() > 1  # build_loader shards under torchrun; rank 0 gathers
    return extract(method, loader, device, cfg.eval.embedding, progress=cfg.run.progress, desc=desc, sharded=sharded)


def _check_bad(collection: Collection, feats: ExtractedFeatures, max_fraction: float) -> BadFileReport:
    """Files dropped at indexing plus those that failed to decode; raises past ``data.max_bad_fraction``."""
    report = BadFileReport().merge(collection.bad)
    for _, kind, path in feats.bad:
        report.add(kind, path)
    if report.total:
        log.warning("%s: %d unreadable files skipped:\n%s", collection.source, report.total, report.summary())
    report.check(collection.n_indexed, max_fraction)
    return report


def _names(collection: Collection, column: str, feats: ExtractedFeatures) -> list[str | None]:
    labels = collection.labels[column]
    return [labels[int(i)] for i in feats.indices]


def _encode(names: list[str | None], classes: list[str]) -> NDArray[np.int64]:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[n] if n is not None and n != "" else -1 for n in names], dtype=np.int64)


def _build_models(cfg: LinearConfig) -> tuple[PretrainMethod, PretrainConfig, PretrainMethod | None]:
    """(method to evaluate, its pretraining config, random-init twin or None when the method is itself random)."""
    if cfg.eval.checkpoint:
        method, pcfg = load_method(cfg.eval.checkpoint)
        log.info("loaded %s (%s on %s)", cfg.eval.checkpoint, pcfg.method, pcfg.model.backbone)
        if cfg.model.backbone != pcfg.model.backbone and cfg.model != type(cfg.model)():
            log.warning(
                "model.backbone=%s ignored: the checkpoint fixes the architecture (%s)",
                cfg.model.backbone,
                pcfg.model.backbone,
            )
    else:
        pcfg = PretrainConfig(method="simclr", data=cfg.data, model=cfg.model)
        method = build_pretrain_model(pcfg)
        log.info(
            "no eval.checkpoint: evaluating %s from model.* (pretrained=%s, init_checkpoint=%r)",
            cfg.model.backbone,
            cfg.model.pretrained,
            cfg.model.init_checkpoint,
        )
    is_random = not cfg.eval.checkpoint and not cfg.model.pretrained and not cfg.model.init_checkpoint
    if not cfg.eval.compare_random or is_random:
        return method, pcfg, None
    torch.manual_seed(cfg.run.seed)
    random_cfg = dataclasses.replace(pcfg, model=dataclasses.replace(pcfg.model, pretrained=False, init_checkpoint=""))
    return method, pcfg, build_pretrain_model(random_cfg)


def _image_size(cfg: LinearConfig, pcfg: PretrainConfig) -> int:
    """``eval.image_size`` when set, else the checkpoint's ``data.image_size`` (``data.image_size`` without one)."""
    if cfg.eval.image_size > 0:
        return cfg.eval.image_size
    if cfg.eval.checkpoint and cfg.data.image_size not in (DataCfg().image_size, pcfg.data.image_size):
        log.warning(
            "data.image_size=%d is ignored with eval.checkpoint (it was trained at %d px); set eval.image_size=%d "
            "to evaluate at another size",
            cfg.data.image_size,
            pcfg.data.image_size,
            cfg.data.image_size,
        )
    return pcfg.data.image_size


def _evaluate(
    train: ExtractedFeatures,
    y_train: NDArray[np.int64],
    evalset: ExtractedFeatures | None,
    y_eval: NDArray[np.int64] | None,
    n_classes: int,
    cfg: LinearConfig,
) -> dict[str, Any]:
    if evalset is None or y_eval is None:
        return cross_validate(train.feats, y_train, n_classes, cfg.eval, cfg.run.seed)
    tr, ev = y_train >= 0, y_eval >= 0
    res: dict[str, Any] = dict(
        evaluate_split(train.feats[tr], y_train[tr], evalset.feats[ev], y_eval[ev], n_classes, cfg.eval, cfg.run.seed)
    )
    res.update({f"{k}_std": 0.0 for k in METRICS}, n_train=int(tr.sum()), n_eval=int(ev.sum()))
    return res


def format_table(metrics: dict[str, Any]) -> str:
    """Plain-text table of the pretrained and random-init rows (mean ± std over folds)."""
    rows = [("model", metrics)]
    if isinstance(metrics.get("random_init"), dict):
        rows.append(("random init", metrics["random_init"]))
    lines = [f"{'':<12}" + "".join(f"{k:>18}" for k in METRICS)]
    for name, m in rows:
        cells = [f"{100 * m[k]:.1f} ± {100 * m.get(k + '_std', 0.0):.1f}" for k in METRICS]
        lines.append(f"{name:<12}" + "".join(f"{c:>18}" for c in cells))
    lines.append(
        f"n_train={metrics['n_train']} n_eval={metrics['n_eval']} classes={len(metrics['classes'])} "
        f"({metrics['protocol']}); accuracies in %"
    )
    return "\n".join(lines)


def preflight(cfg: LinearConfig) -> None:
    """Cheap checks before any model is built or feature extracted: values, paths and the output dir.

    An existing non-empty ``run.output_dir`` is refused unless ``run.overwrite`` (then only the files this run
    writes are replaced; nothing is deleted, since the dir may be the pretraining run being evaluated).

    Raises:
        ConfigError: naming the key and the fix.
        FileExistsError: the output dir already holds files and ``run.overwrite`` is false.
    """
    validate(cfg)
    for key, value in (
        ("eval.train_path", cfg.eval.train_path),
        ("eval.eval_path", cfg.eval.eval_path),
        ("data.path", cfg.data.path),
    ):
        if value and not Path(value).expanduser().exists():
            raise ConfigError(f"{key}={value!r} does not exist; give an image folder, ImageFolder tree or CSV manifest")
    ckpt = cfg.eval.checkpoint
    if ckpt:
        p = Path(ckpt).expanduser()
        if not (p.is_file() or (p.is_dir() and (any(p.glob("checkpoints/*.pt")) or any(p.glob("*.pt"))))):
            raise ConfigError(
                f"eval.checkpoint={ckpt!r}: no checkpoint there; give a pretraining run dir (with checkpoints/) or "
                "a .pt file such as <run>/checkpoints/last.pt, or leave it empty for a random-init baseline"
            )
    init = cfg.model.init_checkpoint
    if init and not Path(init).expanduser().is_file():
        raise ConfigError(f"model.init_checkpoint={init!r} is not a file; give a local weights file or leave it empty")
    try:
        resolve_device(cfg.run.device)
    except RuntimeError as e:  # run.device=cuda/mps that is not there
        raise ConfigError(str(e)) from e
    out = Path(cfg.run.output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"run.output_dir={out} is a file; choose another run.output_dir")
    if out.is_dir() and any(out.iterdir()) and not cfg.run.overwrite:
        names = sorted(x.name for x in out.iterdir())[:5]
        raise FileExistsError(
            f"output dir {out} is not empty ({', '.join(names)}...); set run.overwrite=true to write metrics.json "
            "and config.yaml into it anyway, or choose another run.output_dir"
        )


def _check_bank(cfg: LinearConfig, train: Collection, column: str, cross_validation: bool) -> None:
    """``eval.knn_k`` must not exceed the labelled training images a query is compared with (per fold under CV)."""
    n = int((train.targets(column) >= 0).sum())
    bank = n - -(-n // cfg.eval.folds) if cross_validation else n  # smallest training part of a k-fold split
    if cfg.eval.knn_k > bank:
        where = f"{cfg.eval.folds}-fold CV on {n} labelled images" if cross_validation else f"{n} labelled images"
        raise ConfigError(
            f"eval.knn_k={cfg.eval.knn_k} is larger than the kNN bank ({bank} training images with {where}); "
            f"lower eval.knn_k to at most {bank}"
        )


def run_linear_eval(cfg: LinearConfig) -> dict[str, Any]:
    """Evaluate frozen features with kNN and a linear probe; write ``metrics.json`` and return the same dict.

    Returns:
        ``knn_top1``, ``knn_top5``, ``linear_top1``, ``linear_top5`` (fractions), their ``*_std`` over folds (0 with
        an eval split), ``n_train``, ``n_eval``, ``classes``, ``random_init`` (the same keys; absent with
        ``eval.compare_random=false``), plus ``protocol``, ``embedding``, ``image_size``, ``n_bad``, ``bad_files``
        and ``wall_s``.

    Raises:
        FileExistsError: when ``run.output_dir`` is not empty and ``run.overwrite`` is false.
        ConfigError: an out-of-range value, a missing path or checkpoint, or ``eval.knn_k`` larger than the bank
            (all raised before any feature is extracted).
        TooManyBadFilesError: when more than ``data.max_bad_fraction`` of a collection is unreadable.
    """
    t0 = time.time()
    out = Path(cfg.run.output_dir)
    try:
        distributed.init_from_env(cfg.dist.backend, resolve_device(cfg.run.device))
    except (RuntimeError, ValueError):  # a device that is not there: preflight says so in one line
        pass
    err: Exception | None = None
    try:  # every rank checks before rank 0 creates the output dir
        preflight(cfg)
    except Exception as e:
        if not distributed.is_initialized():
            raise
        err = e
    distributed.raise_together(err)
    main = distributed.is_main()
    setup_logging(None, distributed.rank())  # console only until the output dir is created
    train_col = _load_labelled(cfg.eval.train_path or cfg.data.path, cfg.data, cfg.run.seed)
    column = _label_column(train_col, cfg.data.label_column)
    eval_col = _load_labelled(cfg.eval.eval_path, cfg.data, cfg.run.seed) if cfg.eval.eval_path else None
    eval_column = _label_column(eval_col, cfg.data.label_column) if eval_col is not None else ""
    _check_bank(cfg, train_col, column, eval_col is None)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    device = resolve_device(cfg.run.device)
    method, pcfg, random_method = _build_models(cfg)  # a checkpoint that does not load leaves no output dir

    distributed.barrier()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    setup_logging(out if main else None, distributed.rank())
    image_size = _image_size(cfg, pcfg)
    embedding = resolve_embedding(method, cfg.eval.embedding)

    results: dict[str, dict[str, Any]] = {}
    classes: list[str] = []
    bad = BadFileReport()
    for name, model in (("model", method), ("random_init", random_method)):
        if model is None:
            continue
        tr = _extract(model, train_col, cfg, image_size, device, column, f"{name}: train features")
        ev: ExtractedFeatures | None = None
        eval_names: list[str | None] = []
        if eval_col is not None:
            ev = _extract(model, eval_col, cfg, image_size, device, eval_column, f"{name}: eval features")
            eval_names = _names(eval_col, eval_column, ev)
        if not main:  # rank 0 has every rank's features and evaluates alone
            continue
        train_names = _names(train_col, column, tr)
        classes = sorted({n for n in train_names + eval_names if n})
        y_tr = _encode(train_names, classes)
        y_ev = _encode(eval_names, classes) if ev is not None else None
        if (y_tr >= 0).sum() == 0:
            raise ValueError(f"no labelled sample in column '{column}' of the train collection")
        if name == "model":  # the same files are read for every model: check them once
            bad = _check_bad(train_col, tr, cfg.data.max_bad_fraction)
            if eval_col is not None and ev is not None:
                bad.merge(_check_bad(eval_col, ev, cfg.data.max_bad_fraction))
        results[name] = _evaluate(tr, y_tr, ev, y_ev, len(classes), cfg)
        log.info("%s: %s", name, {k: round(float(results[name][k]), 4) for k in METRICS})

    if not main:
        return {}
    if random_method is None and cfg.eval.compare_random:  # no checkpoint, no weights: the model *is* random init
        log.info("the evaluated model is itself randomly initialised; random_init repeats its numbers")
        results["random_init"] = results["model"]
    metrics: dict[str, Any] = {k: v for k, v in results["model"].items() if k != "folds"}
    metrics["folds"] = results["model"].get("folds", [])
    metrics["classes"] = classes
    if "random_init" in results:  # absent (not None) when eval.compare_random=false
        metrics["random_init"] = {k: v for k, v in results["random_init"].items() if k != "folds"}
    metrics.update(
        protocol=f"{cfg.eval.folds}-fold CV" if eval_col is None else "train/eval split",
        checkpoint=cfg.eval.checkpoint,
        embedding=embedding,
        image_size=image_size,
        n_bad=bad.total,
        bad_files=bad.to_dict(),
        wall_s=time.time() - t0,
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(format_table(metrics))
    print(f"metrics: {out / 'metrics.json'}")
    return metrics
