"""``train_classifier`` runs on the engine's optimiser step: GradScaler under fp16, real accumulation, the
non-finite skip policy, ``log_every``, the optimiser builder with lars, and exact resume within a stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ssl_art.finetune.train as train_mod
from ssl_art.config import DataCfg, FinetuneConfig, OptimCfg, RunCfg
from ssl_art.data import build_collection, build_eval_transform
from ssl_art.engine.step import OptimStep
from ssl_art.finetune.labels import target_matrix
from ssl_art.finetune.lr_decay import freeze_for_mode
from ssl_art.finetune.model import Classifier
from ssl_art.finetune.train import train_classifier
from ssl_art.models.backbone import Backbone
from ssl_art.runtime.errors import NonFiniteLossError

CPU = torch.device("cpu")


def _setup(batch: int, accum: int, max_steps: int = 1, name: str = "sgd", **run: Any) -> tuple[Any, ...]:
    data = DataCfg(path="", image_size=32, synthetic_size=48, synthetic_image_size=32, batch_size=batch, num_workers=0)
    cfg = FinetuneConfig(
        data=data,
        optim=OptimCfg(name=name, lr=0.1, epochs=1, max_steps=max_steps, warmup_epochs=0, accum_steps=accum,
                       clip_grad=0.0, weight_decay=0.0),
        run=RunCfg(progress=False, **run),
    )  # fmt: skip
    coll = build_collection(data, 0)
    train, val = coll.subset(range(32)), coll.subset(range(32, 48))
    classes = {"label": coll.classes("label")}
    y = target_matrix(coll, ["label"], classes)
    torch.manual_seed(0)
    bb = Backbone("test_resnet", n_intermediates=2, img_size=32)
    model = Classifier(bb, bb.embed_dim, [len(classes["label"])])
    freeze_for_mode(model, model.timm_model, "linear")
    tf = build_eval_transform(32)  # deterministic "augmentation": the two runs see identical pixels
    return model, train, y[:32], val, y[32:], tf, cfg


def _train(model: Classifier, *args: Any, cfg: FinetuneConfig, **kw: Any) -> Any:
    train, y_train, val, y_val, tf = args
    return train_classifier(
        model, train, y_train, val, y_val, tf, tf, cfg, CPU, epochs=1, lr=0.1, freeze_backbone_stats=True, **kw
    )


def test_accumulation_equals_the_big_batch_step() -> None:
    """batch 8 x accum 2 (one optimiser step) == batch 16 x accum 1: same 16 images, same update."""
    m_small, tr, ytr, va, yva, tf, cfg_small = _setup(batch=8, accum=2)
    m_big, _, _, _, _, _, cfg_big = _setup(batch=16, accum=1)
    assert all(torch.equal(a, b) for a, b in zip(m_small.state_dict().values(), m_big.state_dict().values()))
    before = m_small.heads[0].weight.detach().clone()
    _train(m_small, tr, ytr, va, yva, tf, cfg=cfg_small)
    _train(m_big, tr, ytr, va, yva, tf, cfg=cfg_big)
    # best-on-val is loaded on return; with one step the history has one epoch, so compare the stepped weights
    # through the returned (= trained, the only epoch) state
    assert not torch.equal(m_big.heads[0].weight, before)
    torch.testing.assert_close(m_small.heads[0].weight, m_big.heads[0].weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(m_small.heads[0].bias, m_big.heads[0].bias, rtol=1e-4, atol=1e-6)


def test_fp16_uses_the_engine_step_with_a_grad_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[OptimStep] = []

    class Stop(Exception):
        pass

    class Spy(OptimStep):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            seen.append(self)
            raise Stop  # the step object is what is checked; fp16 kernels are not run on CPU

    monkeypatch.setattr(train_mod, "OptimStep", Spy)
    model, tr, ytr, va, yva, tf, cfg = _setup(batch=8, accum=3)
    with pytest.raises(Stop):
        train_classifier(model, tr, ytr, va, yva, tf, tf, cfg, CPU, torch.float16, epochs=1, lr=0.1)
    assert seen[0].scaler.is_enabled() and seen[0].accum_steps == 3


def _nan_on(model: Classifier, calls: set[int]) -> dict[str, int]:
    counter = {"n": 0}
    real = model.forward

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        out = real(x)
        if model.training:
            counter["n"] += 1
            if counter["n"] in calls:
                out = [z * float("nan") for z in out]
        return out

    model.forward = forward  # type: ignore[method-assign]
    return counter


def test_one_nonfinite_loss_is_skipped_like_pretraining(tmp_path: Path) -> None:
    model, tr, ytr, va, yva, tf, cfg = _setup(batch=8, accum=1, max_steps=3, max_nonfinite=2, log_every=1)
    counter = _nan_on(model, {2})
    res = _train(model, tr, ytr, va, yva, tf, cfg=cfg, metrics_path=tmp_path / "m.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and counter["n"] == 4  # 4 batches: one skipped, 3 steps
    assert np.isfinite(res.history[-1]["train_loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_max_nonfinite_in_a_row_stops() -> None:
    model, tr, ytr, va, yva, tf, cfg = _setup(batch=8, accum=1, max_steps=3, max_nonfinite=2)
    _nan_on(model, {1, 2})
    with pytest.raises(NonFiniteLossError, match="2 non-finite losses in a row"):
        _train(model, tr, ytr, va, yva, tf, cfg=cfg)


def test_log_every_keep_last_and_lars(tmp_path: Path) -> None:
    model, tr, ytr, va, yva, tf, cfg = _setup(
        batch=8, accum=1, max_steps=4, name="lars", log_every=2, ckpt_every_steps=1, keep_last=2
    )
    _train(model, tr, ytr, va, yva, tf, cfg=cfg, metrics_path=tmp_path / "m.jsonl", ckpt_dir=tmp_path / "ck")
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(r["tag"] == "ft" for r in rows)
    assert sorted(p.name for p in (tmp_path / "ck").glob("ckpt-*.pt")) == ["ckpt-000000003.pt", "ckpt-000000004.pt"]


def test_resume_within_a_stage_is_exact(tmp_path: Path) -> None:
    """Stop after 2 of 4 steps (time budget 0 would not stop; max_steps does), resume to 4: same as 4 straight."""
    full, tr, ytr, va, yva, tf, cfg = _setup(batch=8, accum=1, max_steps=4, ckpt_every_steps=1, keep_last=5)
    _train(full, tr, ytr, va, yva, tf, cfg=cfg, ckpt_dir=tmp_path / "full")
    part, *_ = _setup(batch=8, accum=1)
    _train(part, tr, ytr, va, yva, tf, cfg=replace(cfg, optim=replace(cfg.optim, max_steps=4)),
           ckpt_dir=tmp_path / "part")  # fmt: skip
    # drop the later checkpoints, as if killed after step 2
    for p in sorted((tmp_path / "part").glob("ckpt-00000000[34].pt*")):
        p.unlink()
    resumed, *_ = _setup(batch=8, accum=1)
    _train(resumed, tr, ytr, va, yva, tf, cfg=replace(cfg, run=replace(cfg.run, resume=True)),
           ckpt_dir=tmp_path / "part")  # fmt: skip
    a = torch.load(tmp_path / "full" / "ckpt-000000004.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "ckpt-000000004.pt", weights_only=False)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], msg=k)
    assert a["stage"]["history"] == b["stage"]["history"] and b["stage"]["done"]
