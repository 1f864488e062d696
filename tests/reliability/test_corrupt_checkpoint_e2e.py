"""Corrupt-checkpoint fallback end to end: truncate the newest checkpoint of a real run, resume, evaluate.

A crash (or a full disk) can leave the newest checkpoint damaged. Resume must notice (size/SHA-256 sidecar), warn,
use the previous checkpoint, and -- in deterministic mode -- still end with the weights of an uninterrupted run.
Evaluating the run dir falls back the same way; naming the damaged file itself is a clear error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from reliability_helpers import TINY, assert_same_weights, final_weights, read_json

import main_pretrain
from ssl_art.checkpoint import CheckpointError, load_checkpoint
from ssl_art.methods.load import load_method

ARGS = [*TINY, "optim.max_steps=4", "run.ckpt_every_steps=1", "run.keep_last=3", "run.deterministic=true"]


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.fixture
def damaged_run(tmp_path: Path) -> tuple[Path, Path]:
    """(an uninterrupted 4-step run, a copy of it whose newest checkpoint -- and last.pt -- are truncated)."""
    full = tmp_path / "full"
    assert main_pretrain.main([*ARGS, f"run.output_dir={full}"]) == 0
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for src in full.rglob("*"):  # copy, keeping last.pt a separate file (no hard link back into `full`)
        dst = damaged / src.relative_to(full)
        if src.is_dir():
            dst.mkdir(exist_ok=True)
        else:
            dst.write_bytes(src.read_bytes())
    ckpts = damaged / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("ckpt-*.pt")) == [f"ckpt-00000000{i}.pt" for i in (2, 3, 4)]
    _truncate(ckpts / "ckpt-000000004.pt")
    _truncate(ckpts / "last.pt")
    return full, damaged


def test_resume_skips_truncated_checkpoint_and_matches_uninterrupted(damaged_run: tuple[Path, Path]) -> None:
    full, damaged = damaged_run
    assert main_pretrain.main([*ARGS, f"run.output_dir={damaged}", "run.resume=true"]) == 0
    log = (damaged / "train.log").read_text()
    assert "ckpt-000000004.pt is truncated or corrupt; falling back to the previous one" in log
    assert f"resumed from {damaged / 'checkpoints' / 'ckpt-000000003.pt'} at step 3" in log
    assert read_json(damaged / "summary.json")["steps"] == 4
    assert load_checkpoint(damaged / "checkpoints" / "last.pt")["step"] == 4  # rewritten, verifies again
    assert_same_weights(final_weights(damaged), final_weights(full))


def test_eval_of_run_dir_falls_back_and_damaged_file_is_a_clear_error(
    damaged_run: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, damaged = damaged_run
    logging.getLogger("ssl_art").propagate = True  # the run in the fixture turned it off (restored after the test)
    with caplog.at_level(logging.WARNING, logger="ssl_art"):
        method, cfg = load_method(str(damaged))
    assert "last.pt is missing, truncated or corrupt; using" in caplog.text
    assert "ckpt-000000003.pt" in caplog.text and cfg.model.backbone == "test_resnet"
    step3 = load_checkpoint(damaged / "checkpoints" / "ckpt-000000003.pt")["model"]
    assert_same_weights(method.state_dict(), step3)
    with pytest.raises(CheckpointError, match="truncated or corrupt.*use an earlier ckpt-\\*.pt"):
        load_method(str(damaged / "checkpoints" / "last.pt"))
