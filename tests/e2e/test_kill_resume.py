"""SIGKILL a real ``main_pretrain.py`` mid-epoch, resume it, and get the weights of an uninterrupted run.

Run on both input paths: the per-image PIL DataLoader (``data.cache=off``) and the cached batched path with the
cache in RAM and memory-mapped on disk (issue 11).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--config",
    "configs/tiny.yaml",
    "optim.max_steps=0",
    "optim.epochs=2",  # 48 images / batch 8 = 6 steps per epoch, 12 in all
    "run.ckpt_every_steps=1",
    "run.keep_last=3",
    "run.deterministic=true",
]


def _run(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "main_pretrain.py", *ARGS, f"run.output_dir={out}", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("cache", ["off", "ram", "disk"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, cache):
    full = _run(tmp_path / "full", f"data.cache={cache}")
    assert full.wait(timeout=300) == 0, full.stderr.read().decode() if full.stderr else ""

    part_dir = tmp_path / "part"
    part = _run(part_dir, f"data.cache={cache}")
    deadline = time.time() + 300
    # kill -9 as soon as the step-4 checkpoint is on disk: mid-epoch 1, possibly mid-way through writing step 5
    while not (part_dir / "checkpoints" / "ckpt-000000004.pt.sha256").exists():
        assert part.poll() is None, part.stderr.read().decode() if part.stderr else "exited early"
        assert time.time() < deadline
        time.sleep(0.05)
    part.send_signal(signal.SIGKILL)
    part.wait()
    from ssl_art.checkpoint import find_resumable, load_checkpoint

    newest = find_resumable(part_dir / "checkpoints")  # what resume will use (last.pt may lag by one step)
    assert newest is not None
    assert 4 <= load_checkpoint(newest)["step"] < 12, "the kill must land before the run finished"

    resumed = _run(part_dir, "run.resume=true", f"data.cache={cache}")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode() if resumed.stderr else ""
    a, b = _weights(tmp_path / "full"), _weights(part_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_new_run_into_existing_dir_refused(tmp_path):
    first = _run(tmp_path, "optim.max_steps=1")
    assert first.wait(timeout=300) == 0
    second = _run(tmp_path, "optim.max_steps=1")
    assert second.wait(timeout=300) != 0
    err = second.stderr.read().decode() if second.stderr else ""
    assert "already holds a run" in err and "run.resume=true" in err
