"""Checkpoints are atomic and verified; schedules and the resumable sampler match plain formulas."""

import math

import pytest
import torch

from ssl_art import checkpoint as C
from ssl_art.engine.sampler import ResumableSampler
from ssl_art.runtime.schedules import cosine_schedule


def test_save_load_round_trip(tmp_path):
    obj = {"model": {"w": torch.arange(5.0)}, "step": 3}
    C.save_checkpoint(tmp_path / "a.pt", obj)
    back = C.load_checkpoint(tmp_path / "a.pt")
    assert back["step"] == 3 and torch.equal(back["model"]["w"], obj["model"]["w"])


def test_truncated_checkpoint_detected_and_previous_used(tmp_path, caplog):
    for step in (1, 2, 3):
        C.save_rolling(tmp_path, step, {"step": step, "pad": torch.zeros(1000)}, keep_last=3)
    newest = tmp_path / "ckpt-000000003.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a crash mid-write without the atomic rename
    assert not C.verify_checkpoint(newest)
    with pytest.raises(C.CheckpointError, match="truncated or corrupt"):
        C.load_checkpoint(newest)
    found = C.find_resumable(tmp_path)
    assert found is not None and found.name == "ckpt-000000002.pt"
    assert "falling back" in caplog.text


def test_keep_last_and_last_link(tmp_path):
    for step in range(1, 6):
        C.save_rolling(tmp_path, step, {"step": step}, keep_last=2)
    names = sorted(p.name for p in tmp_path.glob("ckpt-*.pt"))
    assert names == ["ckpt-000000004.pt", "ckpt-000000005.pt"]
    assert C.load_checkpoint(tmp_path / "last.pt")["step"] == 5


def test_no_temp_files_left(tmp_path):
    C.save_rolling(tmp_path, 1, {"x": 1}, keep_last=1)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("total, warmup", [(100, 10), (50, 0), (7, 3)])
def test_cosine_schedule_matches_formula(total, warmup):
    base, final = 1.0, 0.1
    for step in range(total + 2):
        got = cosine_schedule(step, total, base, final, warmup)
        if step < warmup:
            ref = base * (step + 1) / warmup
        elif step >= total:
            ref = final
        else:
            t = (step - warmup) / max(1, total - warmup)
            ref = final + (base - final) * (1 + math.cos(math.pi * t)) / 2
        assert got == pytest.approx(ref)
    assert cosine_schedule(warmup, total, base, final, warmup) == pytest.approx(base)


def test_sampler_resume_continues_same_order():
    s = ResumableSampler(20, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=8)
    assert list(s) == full[8:]
    assert sorted(k - 40 for k in full) == list(range(20))  # epoch 2 keys are 2 * n + i
    s.set_epoch(3)
    assert list(s) != [k + 20 for k in full]
