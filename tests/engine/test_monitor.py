"""The online kNN monitor: off by default, on it logs the value eval's kNN gives on the same features, it leaves
training untouched, and a killed-and-resumed run continues its curve (metrics.jsonl and TensorBoard)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_art.config import ConfigError, PretrainConfig, load_config
from ssl_art.data import build_collection, build_eval_transform, build_loader
from ssl_art.data.synthetic import SyntheticArt
from ssl_art.engine import pretrain as pretrain_mod
from ssl_art.engine.hooks import run_epoch_hooks
from ssl_art.engine.loop import FitResult
from ssl_art.engine.monitor import KnnMonitor
from ssl_art.engine.pretrain import run_pretrain
from ssl_art.eval.crossval import stratified_folds
from ssl_art.eval.features import extract
from ssl_art.eval.knn import knn_accuracy
from ssl_art.methods.registry import build_pretrain_model

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--config",
    str(ROOT / "configs" / "tiny.yaml"),
    "model.backbone=test_resnet",
    "run.device=cpu",
    "data.synthetic_size=16",
    "optim.max_steps=0",
    "optim.epochs=2",
]
MON = ["monitor.every_epochs=1", "monitor.max_images=30", "monitor.folds=3", "monitor.k=5"]


def _cfg(tmp: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, [*TINY, f"run.output_dir={tmp}", *extra])


def _monitor_lines(run: Path) -> list[dict[str, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "monitor/knn_top1" in r]


def test_off_by_default_builds_and_logs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert PretrainConfig().monitor.every_epochs == 0
    seen: dict[str, object] = {}

    def fake_fit(*args: object, **kwargs: object) -> FitResult:
        seen.update(kwargs)
        return FitResult(steps=0, epochs=0.0, stopped="done", seconds=0.0, images_per_s=0.0, nonfinite_skipped=0)

    def no_monitor(*args: object, **kwargs: object) -> KnnMonitor:
        raise AssertionError("the monitor must not be built when monitor.every_epochs=0")

    monkeypatch.setattr(pretrain_mod, "fit", fake_fit)
    monkeypatch.setattr(KnnMonitor, "from_config", no_monitor)
    run_pretrain(_cfg(tmp_path / "run"))
    assert seen["epoch_hooks"] == []
    buf = io.StringIO()
    assert run_epoch_hooks([], torch.nn.Linear(1, 1), 1, 1, None, buf) == {}  # type: ignore[arg-type]
    assert buf.getvalue() == ""


def test_hooks_run_on_rank_zero_only() -> None:
    calls: list[int] = []

    def hook(method: object, epoch: int, step: int) -> dict[str, float]:
        calls.append(epoch)
        return {"monitor/x": 1.0}

    class Writer:
        def __init__(self) -> None:
            self.scalars: list[tuple[str, float, int]] = []

        def add_scalar(self, k: str, v: float, s: int) -> None:
            self.scalars.append((k, v, s))

        def flush(self) -> None:
            pass

    w, buf = Writer(), io.StringIO()
    assert run_epoch_hooks([hook], None, 3, 30, w, buf, rank=1) == {}  # type: ignore[arg-type]
    assert calls == [] and buf.getvalue() == ""
    assert run_epoch_hooks([hook], None, 3, 30, w, buf, rank=0) == {"monitor/x": 1.0}  # type: ignore[arg-type]
    assert w.scalars == [("monitor/x", 1.0, 30)]
    assert json.loads(buf.getvalue()) == {"step": 30, "epoch": 3, "monitor/x": 1.0}


def test_due_epochs() -> None:
    cfg = _cfg(Path("unused"), "monitor.every_epochs=2").monitor
    mon = object.__new__(KnnMonitor)
    mon.cfg = cfg
    assert [e for e in range(7) if mon.due(e)] == [0, 2, 4, 6]
    mon.cfg = dataclasses.replace(cfg, at_start=False)
    assert [e for e in range(7) if mon.due(e)] == [2, 4, 6]
    mon.cfg = dataclasses.replace(cfg, every_epochs=0)
    assert not any(mon.due(e) for e in range(7))


def test_value_matches_eval_knn_on_the_same_features() -> None:
    cfg = _cfg(Path("unused"), *MON, "monitor.label_columns=[label,content]")
    torch.manual_seed(0)
    method = build_pretrain_model(cfg)
    mon = KnnMonitor.from_config(cfg.monitor, cfg.data, seed=0)
    got = mon.evaluate(method)
    assert method.training  # train mode restored

    # reference: the evaluation pipeline (collection -> eval loader -> extract -> folds -> eval.knn)
    coll = build_collection(cfg.data, 0)
    keep = np.sort(np.random.default_rng(0).permutation(len(coll))[:30])  # max_images >= 16: all images
    coll = coll.subset(keep)
    loader = build_loader(coll, build_eval_transform(cfg.data.image_size), cfg.data, train=False, seed=0)
    feats = extract(method, loader, "cpu", "auto", progress=False).feats
    bank, _ = mon.features(method)
    np.testing.assert_allclose(bank, feats, rtol=1e-5, atol=1e-5)
    for col, key in (("label", "monitor/knn_top1"), ("content", "monitor/knn_top1_content")):
        y = coll.targets(col)
        accs = [
            knn_accuracy(feats[tr], y[tr], feats[ev], y[ev], k=5, T=0.07)["top1"]
            for tr, ev in stratified_folds(y, 3, 0)
        ]
        assert got[key] == pytest.approx(float(np.mean(accs)), abs=1e-9)
    assert 0.0 <= got["monitor/knn_top1"] <= 1.0


def test_fixed_split_matches_eval_knn(tmp_path: Path) -> None:
    syn = SyntheticArt(24, 32, n_styles=3, seed=1)
    for part, rng in (("bank", range(0, 15)), ("query", range(15, 24))):
        for i in rng:
            d = tmp_path / part / syn.labels[i]
            d.mkdir(parents=True, exist_ok=True)
            syn.image(i).save(d / f"{i}.png")
    cfg = _cfg(
        Path("unused"),
        *MON,
        f"monitor.path={tmp_path / 'bank'}",
        f"monitor.eval_path={tmp_path / 'query'}",
    )
    torch.manual_seed(0)
    method = build_pretrain_model(cfg)
    mon = KnnMonitor.from_config(cfg.monitor, cfg.data, seed=0)
    got = mon.evaluate(method)["monitor/knn_top1"]
    bank, queries = mon.features(method)
    assert queries is not None
    by = np.array([int(v[-1]) for v in mon.bank.labels["label"]])  # style_<k>
    qy = np.array([int(v[-1]) for v in mon.queries.labels["label"]])  # type: ignore[union-attr]
    assert got == pytest.approx(knn_accuracy(bank, by, queries, qy, k=5, T=0.07, n_classes=3)["top1"])


def test_bad_monitor_settings_are_config_errors(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run", "monitor.every_epochs=1", "monitor.path=/nonexistent/monitor/set")
    with pytest.raises(ConfigError, match="monitor.path"):
        run_pretrain(cfg)
    assert not (tmp_path / "run").exists()
    cfg = _cfg(tmp_path / "run", *MON, "monitor.label_columns=[artist]")
    with pytest.raises(ConfigError, match="artist"):
        KnnMonitor.from_config(cfg.monitor, cfg.data)
    cfg = _cfg(tmp_path / "run", *MON, "monitor.folds=20")
    with pytest.raises(ConfigError, match="monitor.folds=20"):
        KnnMonitor.from_config(cfg.monitor, cfg.data)


def test_monitor_leaves_training_unchanged_and_a_resumed_run_continues_the_curve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_pretrain(_cfg(tmp_path / "off"))
    run_pretrain(_cfg(tmp_path / "on", *MON))
    off = torch.load(tmp_path / "off" / "checkpoints" / "last.pt", weights_only=False)["model"]
    on = torch.load(tmp_path / "on" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(off[k], on[k]) for k in off)
    assert [r["epoch"] for r in _monitor_lines(tmp_path / "on")] == [0, 1, 2]
    assert not _monitor_lines(tmp_path / "off")

    # kill (SIGTERM) right after the epoch-1 measurement, then resume: the curve goes on from where it stopped
    original = KnnMonitor.__call__

    def kill_after_epoch_1(self: KnnMonitor, method: torch.nn.Module, epoch: int, step: int) -> dict[str, float]:
        out = original(self, method, epoch, step)  # type: ignore[arg-type]
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(KnnMonitor, "__call__", kill_after_epoch_1)
    killed = run_pretrain(_cfg(tmp_path / "resumed", *MON))
    assert killed.stopped == "signal" and killed.steps < 4
    monkeypatch.setattr(KnnMonitor, "__call__", original)
    done = run_pretrain(_cfg(tmp_path / "resumed", *MON, "run.resume=true"))
    assert done.stopped == "done" and done.steps == 4
    lines = _monitor_lines(tmp_path / "resumed")
    assert [(r["epoch"], r["step"]) for r in lines] == [(0, 0), (1, 2), (2, 4)]
    want = [r["monitor/knn_top1"] for r in _monitor_lines(tmp_path / "on")]
    assert [r["monitor/knn_top1"] for r in lines][:2] == want[:2]  # same run up to the kill

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "resumed" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("monitor/knn_top1")] == [0, 2, 4]
