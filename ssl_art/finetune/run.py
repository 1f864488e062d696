"""``run_finetune(cfg)``: the fine-tuning pipeline behind ``main_finetune.py``.

Order matters for honest numbers: load and label-map the collection, make (or reuse) the saved split, check that
ensemble members were trained on this split, fine-tune with model selection on val, evaluate the selected model on
test exactly once, then optionally soft-vote with other runs and train the gated head (stage 0 cheap branch, stage 1
selector/fusion, budget calibration on val, optional stage 2 on a copy), and finally measure FLOPs, synchronised
images/s, routing (selector vs fall-back) and accuracy of gated vs expensive-only vs cheap-only on the same test
images (unreadable ones left out of every score). Both training stages run on the engine's optimiser step and
checkpoint under ``checkpoints/<stage>/``; a killed run continues exactly with ``run.resume=true``, and a rerun
without it is refused with one line saying so. Each stage reseeds from ``run.seed``, so a resumed run repeats the
cheap stages (caching, stage 1, calibration) bit for bit. Everything lands in the run dir: ``splits.json``,
``config.yaml``, ``checkpoints/``, ``metrics.jsonl``, ``test*.json``, confusion PNGs, ``gate_compare.json`` and
``summary.json``, plus TensorBoard events under ``tb/``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ssl_art.finetune  # noqa: F401  (registers the ft.* choices)
from ssl_art.checkpoint import save_checkpoint
from ssl_art.config import ConfigError, FinetuneConfig, config_to_dict
from ssl_art.data import Collection, build_collection, build_eval_transform, build_loader, build_view_transform
from ssl_art.data.collection import load_collection
from ssl_art.engine.rundir import prepare_run_dir
from ssl_art.finetune.checks import check_ensemble_split, preflight
from ssl_art.finetune.compute import measure_modes
from ssl_art.finetune.ensemble import member_weights, soft_vote
from ssl_art.finetune.gate_train import cache_outputs, calibrate, fallback_text, fit_gate, train_stage2
from ssl_art.finetune.labels import read_label_map, remap_collection, target_matrix
from ssl_art.finetune.lr_decay import freeze_for_mode
from ssl_art.finetune.model import Classifier, ModelSpec, TrunkExit, build_cheap, build_gated, load_finetuned
from ssl_art.finetune.report import classification_metrics, write_report
from ssl_art.finetune.splits import Split, load_split, make_split, save_split
from ssl_art.finetune.train import predict_probs, train_classifier
from ssl_art.methods.load import load_method
from ssl_art.models.backbone import Backbone
from ssl_art.models.build import build_backbone
from ssl_art.runtime.device import amp_dtype, resolve_device
from ssl_art.runtime.logs import setup_logging
from ssl_art.runtime.schedules import scaled_lr
from ssl_art.runtime.seeding import seed_everything

log = logging.getLogger("ssl_art.finetune")


RANDOM_INIT_WARNING = (
    "FINE-TUNING FROM RANDOM INIT: ft.checkpoint, model.init_checkpoint and model.pretrained are all unset, so no "
    "pretrained weights are used. Set ft.checkpoint=RUN (an ssl-art pretrain run) or --checkpoint RUN."
)


def random_init(cfg: FinetuneConfig) -> bool:
    """True when no pretrained weights reach the backbone (no ft.checkpoint, init_checkpoint or hub weights)."""
    return not (cfg.ft.checkpoint or cfg.model.init_checkpoint or cfg.model.pretrained)


def _initial_backbone(cfg: FinetuneConfig) -> Backbone:
    """From an ssl_art pretraining checkpoint (``ft.checkpoint``), else ``model.*`` (timm weights / file / random)."""
    if cfg.ft.checkpoint:
        method, pcfg = load_method(cfg.ft.checkpoint)
        bb = method.backbone
        if not isinstance(bb, Backbone):
            raise ValueError(f"{cfg.ft.checkpoint}: the method's backbone is not an ssl_art Backbone")
        log.info("backbone %s from pretraining checkpoint %s", pcfg.model.backbone, cfg.ft.checkpoint)
        return bb
    return build_backbone(cfg.model, cfg.data.image_size)


def _get_split(cfg: FinetuneConfig, out: Path, coll: Collection, targets: np.ndarray) -> Split:
    path = Path(cfg.split.file) if cfg.split.file else out / "splits.json"
    if path.is_file():
        log.info("reusing split %s", path)
        split = load_split(path, coll.paths)
        if path.resolve() != (out / "splits.json").resolve():  # every run dir documents its own split
            shutil.copyfile(path, out / "splits.json")
        return split
    s = cfg.split
    groups = coll.labels[s.group_column] if s.group_column else None
    if s.group_column and groups is None:
        raise ValueError(f"split.group_column {s.group_column!r} not in the collection")
    split = make_split(
        targets[:, 0],
        s.val_fraction,
        0.0 if s.test_path else s.test_fraction,
        s.seed,
        groups,
        np.asarray((targets >= 0).any(1)),
    )
    save_split(out / "splits.json", split, coll.paths, config_to_dict(s) | {"source": coll.source})
    return split


def _load_images(loader: Any, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """Preprocessed ``(n, 3, S, S)`` tensor of a loader's images in collection order, and ``(n,)`` which loaded
    (unreadable images stay zeros and must be left out of every score)."""
    images: torch.Tensor | None = None
    ok = np.zeros(n, dtype=bool)
    for b in loader:
        if not b.views:
            continue
        if images is None:
            images = torch.zeros((n, *b.views[0].shape[1:]))
        images[b.indices] = b.views[0]
        ok[b.indices.numpy()] = True
    if images is None:
        raise RuntimeError("no readable image in the test set")
    return images, ok


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run the whole pipeline (see the module docstring); returns the summary also written to ``summary.json``.

    Raises:
        ConfigError: launched with ``WORLD_SIZE > 1`` (torchrun): fine-tuning runs in one process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:  # refuse before any rank writes: every rank would repeat the whole job into the same files
        raise ConfigError(
            f"main_finetune.py runs in one process, but torchrun started {world} (WORLD_SIZE={world}); "
            "run it without torchrun: python main_finetune.py --config ..."
        )
    # everything a user can get wrong (run folder, data path, label map, device) is checked before the run folder
    # is created, so a typo leaves nothing behind
    preflight(cfg)
    device = resolve_device(cfg.run.device)
    amp = amp_dtype(cfg.run.amp, device)
    columns = list(cfg.ft.label_columns) or [cfg.data.label_column]
    label_map = read_label_map(cfg.ft.label_map) if cfg.ft.label_map else {}
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    coll = remap_collection(build_collection(cfg.data, cfg.run.seed), label_map)
    backbone = _initial_backbone(cfg)  # a missing/truncated checkpoint or unknown backbone stops here
    out = prepare_run_dir(cfg.run.output_dir, cfg.run.resume, cfg.run.overwrite, config_to_dict(cfg))
    setup_logging(out)
    warnings = [RANDOM_INIT_WARNING] if random_init(cfg) else []
    for w in warnings:
        log.warning("%s", w)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    classes = {c: coll.classes(c) for c in columns}
    targets = target_matrix(coll, columns, classes)
    split = _get_split(cfg, out, coll, targets)
    train, val = coll.subset(split.train), coll.subset(split.val)
    y_train, y_val = targets[split.train], targets[split.val]
    if cfg.split.test_path:
        test = remap_collection(load_collection(cfg.split.test_path, root=cfg.data.root), label_map)
        y_test = target_matrix(test, columns, classes)
    else:
        test, y_test = coll.subset(split.test), targets[split.test]
    log.info(
        "split: %d train / %d val / %d test; heads %s",
        len(train),
        len(val),
        len(test),
        {c: len(v) for c, v in classes.items()},
    )
    check_ensemble_split(cfg.ft.ensemble, test.paths)

    size = cfg.data.image_size
    train_tf, eval_tf = build_view_transform(cfg.data.aug, size), build_eval_transform(size)
    spec = ModelSpec(
        kind="classifier",
        backbone=backbone.name,
        n_intermediates=len(backbone.indices),
        image_size=size,
        columns=columns,
        classes=classes,
        dropout=cfg.ft.head_dropout,
        cheap_backbone=cfg.gate.cheap_backbone,
        cheap_stages=cfg.gate.cheap_stages,
        hidden_dim=cfg.gate.hidden_dim,
        exit_width=cfg.gate.exit_width,
        threshold=cfg.gate.fallback_threshold,
        alpha=cfg.gate.alpha,
        fusion_init_bias=cfg.gate.fusion_init_bias,
    )
    model = Classifier(backbone, backbone.embed_dim, spec.n_classes, cfg.ft.head_dropout)
    n_train = freeze_for_mode(model, model.timm_model, cfg.ft.mode, cfg.ft.last_n)
    log.info("mode %s: %d trainable parameters", cfg.ft.mode, n_train)
    decay = 1.0 if cfg.ft.mode == "linear" else cfg.ft.layer_decay
    lr = scaled_lr(cfg.optim.lr, cfg.data.batch_size, cfg.optim.accum_steps)
    seed_everything(cfg.run.seed, cfg.run.deterministic)  # every stage starts from the seed: resume repeats it
    result = train_classifier(
        model, train, y_train, val, y_val, train_tf, eval_tf, cfg, device, amp, writer, "ft",
        epochs=cfg.optim.epochs, lr=lr, layer_decay=decay, freeze_backbone_stats=cfg.ft.mode == "linear",
        ckpt_dir=out / "checkpoints" / "ft", metrics_path=out / "metrics.jsonl",
    )  # fmt: skip
    meta = {"val_score": result.best_score, "select_metric": cfg.ft.select_metric, "best_epoch": result.best_epoch}
    save_checkpoint(
        out / "checkpoints" / "best.pt",
        {"model": model.state_dict(), "spec": spec.to_dict(), "config": config_to_dict(cfg), "meta": meta},
    )

    # test: once, on the model selected on val
    test_loader = build_loader(test, eval_tf, cfg.data, train=False, seed=cfg.run.seed)
    probs = predict_probs(model, test_loader, len(test), device)
    heads = {c: (probs[t], y_test[:, t], classes[c]) for t, c in enumerate(columns)}
    summary: dict[str, Any] = {"val": meta, "history": result.history, "n": [len(train), len(val), len(test)]}
    summary["warnings"] = warnings
    summary["test"] = _scalars(write_report(out, "test", heads, writer))

    if cfg.ft.ensemble:
        members = [probs[0]]
        scores = [result.best_score]
        for path in cfg.ft.ensemble:
            m, mspec, mmeta = load_finetuned(path)
            if mspec.classes[mspec.columns[0]] != classes[columns[0]] or mspec.image_size <= 0:
                raise ValueError(f"ensemble member {path} was trained on other classes than this run")
            loader = build_loader(test, build_eval_transform(mspec.image_size), cfg.data, train=False, seed=0)
            members.append(predict_probs(m.to(device), loader, len(test), device)[0])
            scores.append(float(mmeta.get("val_score", float("nan"))))
        vote = soft_vote(members, member_weights(scores, cfg.ft.ensemble_weighting))
        rep = write_report(out, "test_ensemble", {columns[0]: (vote, y_test[:, 0], classes[columns[0]])}, writer)
        summary["test_ensemble"] = _scalars(rep) | {"members": len(members), "weights": scores}

    if cfg.gate.enabled:
        summary["gate"] = _run_gate(
            cfg,
            out,
            spec,
            model,
            (train, y_train),
            (val, y_val),
            (test, y_test),
            train_tf,
            eval_tf,
            device,
            amp,
            writer,
        )
    writer.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _scalars(report: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = ("n", "top1", "top3", "top5", "balanced_acc", "macro_f1")
    return {col: {k: m[k] for k in keys} for col, m in report.items()}


def _run_gate(
    cfg: FinetuneConfig,
    out: Path,
    spec: ModelSpec,
    expensive: Classifier,
    train: tuple[Collection, np.ndarray],
    val: tuple[Collection, np.ndarray],
    test: tuple[Collection, np.ndarray],
    train_tf: Any,
    eval_tf: Any,
    device: torch.device,
    amp: torch.dtype | None,
    writer: Any,
) -> dict[str, Any]:
    """Stages 0-2 of the gated head, calibration on val and the measured comparison on test."""
    g = cfg.gate
    spec = replace(spec, kind="gated")
    cheap = build_cheap(spec, expensive)
    cheap_cfg = replace(cfg, ft=replace(cfg.ft, task_weights=()))  # one head, weight 1
    lr = scaled_lr(cfg.optim.lr, cfg.data.batch_size, cfg.optim.accum_steps)
    if isinstance(cheap.encoder, TrunkExit):
        # shared trunk: it belongs to the fine-tuned expensive branch and stays frozen; only the fresh exit head
        # trains, at gate.exit_lr_scale x the fine-tuning lr as a probe on frozen features would
        freeze_for_mode(cheap, cheap.timm_model, "linear")
        lr = g.exit_lr_scale * lr
    else:
        freeze_for_mode(cheap, cheap.timm_model, "full")
    seed = cfg.run.seed
    seed_everything(seed + 1, cfg.run.deterministic)
    res0 = train_classifier(
        cheap, train[0], train[1][:, :1], val[0], val[1][:, :1], train_tf, eval_tf, cheap_cfg, device, amp, writer,
        "gate_cheap", epochs=g.cheap_epochs or cfg.optim.epochs, lr=lr,
        ckpt_dir=out / "checkpoints" / "gate_cheap", metrics_path=out / "metrics.jsonl",
    )  # fmt: skip
    gated = build_gated(spec, cheap, expensive).to(device)
    for part in (gated.trunk, gated.cheap_head, gated.rest):
        for p in part.parameters():
            p.requires_grad_(False)
    train_cache = cache_outputs(
        gated, build_loader(train[0], train_tf, cfg.data, train=False, seed=seed), train[1][:, 0], device
    )
    val_cache = cache_outputs(
        gated, build_loader(val[0], eval_tf, cfg.data, train=False, seed=seed), val[1][:, 0], device
    )
    seed_everything(seed + 2, cfg.run.deterministic)
    hist1, calib = fit_gate(gated, train_cache, val_cache, g, seed)
    stage1 = gated  # its branches are the saved classifiers: the single-branch rows are measured on it
    hist2: list[dict[str, float]] = []
    if g.stage2_epochs > 0:
        gated = copy.deepcopy(stage1)  # stage 2 changes the branches; the classifiers it started from stay intact
        for p in gated.parameters():
            p.requires_grad_(True)
        loader = build_loader(train[0], train_tf, cfg.data, train=True, seed=seed)
        seed_everything(seed + 3, cfg.run.deterministic)
        hist2 = train_stage2(
            gated, loader, train[1][:, 0], g, g.stage2_lr_scale * scaled_lr(cfg.optim.lr, cfg.data.batch_size), device
        )
        val_cache = cache_outputs(
            gated, build_loader(val[0], eval_tf, cfg.data, train=False, seed=seed), val[1][:, 0], device
        )
        stage1_keys = {k: v for k, v in calib.items() if k.startswith("stage1_")}
        calib = stage1_keys | calibrate(gated, val_cache, g.budget, g.calibration, g.fallback_threshold)
    log.info("gate calibrated on val: %s", calib)
    save_checkpoint(
        out / "checkpoints" / "gated.pt",
        {"model": gated.state_dict(), "spec": spec.to_dict(), "config": config_to_dict(cfg), "meta": calib},
    )

    coll, y = test
    images, ok = _load_images(build_loader(coll, eval_tf, cfg.data, train=False, seed=seed), len(coll))
    y_ok = np.where(ok, y[:, 0], -1)  # unreadable test images are left out of every row's score
    col, classes = spec.columns[0], spec.classes[spec.columns[0]]
    modes = measure_modes(
        gated, images.to(device), cfg.data.batch_size, g.bench_repeats, g.bench_warmup,
        reference=stage1 if gated is not stage1 else None,
    )  # fmt: skip
    table = {}
    for name, m in modes.items():
        probs = torch.as_tensor(m.pop("logits")).softmax(-1).numpy()
        rep = classification_metrics(probs, y_ok, classes)
        table[name] = {k: rep[k] for k in ("n", "top1", "top3", "top5", "macro_f1")} | m
        if name == "gated":
            write_report(out, "test_gated", {col: (probs, y_ok, classes)}, writer)
    result = {
        "calibration": calib,
        "cheap_val": res0.best_score,
        "stage1": hist1[-1] if hist1 else {},
        "stage2": hist2[-1] if hist2 else {},
        "test": table,
    }
    (out / "gate_compare.json").write_text(json.dumps(result, indent=1))
    lines = gate_table(table, calib)
    (out / "gate_compare.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def gate_table(table: dict[str, dict[str, Any]], calib: dict[str, Any]) -> list[str]:
    """The printed comparison; the gated row names its calibration rule and its selector / fall-back split."""
    lines = [
        f"{'mode':16s} {'top1':>6s} {'top3':>6s} {'top5':>6s} {'mF1':>6s} {'GFLOPs/img':>10s} {'img/s':>8s} "
        f"{'%exp':>6s} {'%sel':>6s} {'%fb':>6s}  calibration"
    ]
    for name, r in table.items():
        note = ""
        if name == "gated":
            note = f"  {calib['calibration']} ({calib['rule_name']}, {fallback_text(calib['threshold'])})"
            if not calib["within_budget"]:
                note += " over budget"
        lines.append(
            f"{name:16s} {r['top1']:6.3f} {r['top3']:6.3f} {r['top5']:6.3f} {r['macro_f1']:6.3f} "
            f"{r['gflops_per_image']:10.4f} {r['images_per_s']:8.1f} {100 * r['expensive_fraction']:6.1f} "
            f"{100 * r['selector_fraction']:6.1f} {100 * r['fallback_fraction']:6.1f}{note}"
        )
    return lines
