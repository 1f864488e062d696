"""SIGKILL a real ``main_finetune.py`` mid-run: rerunning the command says in one line how to resume, and the
resumed run continues (no step trained twice) and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--config",
    "configs/finetune/tiny.yaml",
    "optim.epochs=4",  # 42 train images / batch 16 = 2 steps per epoch, 8 in all
    "run.ckpt_every_steps=1",
    "run.keep_last=3",
    "run.log_every=1",
    "run.deterministic=true",
    "run.device=cpu",
]


def _run(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "main_finetune.py", *ARGS, f"run.output_dir={out}", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _err(p: subprocess.Popen[bytes]) -> str:
    return p.stderr.read().decode() if p.stderr else ""


def _model(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_sigkill_rerun_says_resume_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    full = _run(tmp_path / "full")
    assert full.wait(timeout=600) == 0, _err(full)

    part_dir = tmp_path / "part"
    part = _run(part_dir)
    deadline = time.time() + 600
    # kill -9 as soon as the step-3 checkpoint of the fine-tuning stage is on disk: mid-epoch 1
    while not (part_dir / "checkpoints" / "ft" / "ckpt-000000003.pt.sha256").exists():
        assert part.poll() is None, _err(part) or "exited early"
        assert time.time() < deadline
        time.sleep(0.02)
    part.send_signal(signal.SIGKILL)
    part.wait()
    from ssl_art.checkpoint import find_resumable, load_checkpoint

    newest = find_resumable(part_dir / "checkpoints" / "ft")
    assert newest is not None
    stage = load_checkpoint(newest)["stage"]
    assert 3 <= stage["step"] < 8 and not stage["done"], "the kill must land before the stage finished"
    assert not (part_dir / "summary.json").exists()

    again = _run(part_dir)  # the same command again
    assert again.wait(timeout=300) == 2
    lines = [line for line in _err(again).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "unfinished" in lines[0] and "run.resume=true" in lines[0]

    resumed = _run(part_dir, "run.resume=true")
    assert resumed.wait(timeout=600) == 0, _err(resumed)
    log = (part_dir / "train.log").read_text()
    assert f"[ft] resumed from {newest}" in log
    rows = [json.loads(r) for r in (part_dir / "metrics.jsonl").read_text().splitlines()]
    ft_steps = [r["step"] for r in rows if r["tag"] == "ft"]
    assert ft_steps.count(1) == 1 and max(ft_steps) == 8  # continued, not retrained from scratch

    for name in ("ft/last.pt", "best.pt", "gated.pt"):
        a, b = _model(tmp_path / "full" / "checkpoints" / name), _model(part_dir / "checkpoints" / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")
    s_full = json.loads((tmp_path / "full" / "summary.json").read_text())
    s_part = json.loads((part_dir / "summary.json").read_text())
    assert s_full["history"] == s_part["history"] and s_full["test"] == s_part["test"]
