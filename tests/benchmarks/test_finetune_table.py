"""The fine-tuning benchmark's table: the expensive row names the ``ft.mode`` it was trained with, and the goal
check (gated within 1 point of expensive-only top-1 while routing <= 40%) follows the numbers."""

from __future__ import annotations

from typing import Any

from benchmarks.finetune import table


def _mode(top1: float, **extra: float) -> dict[str, float]:
    m = {"top1": top1, "top3": 0.7, "top5": 0.9, "macro_f1": top1 - 0.01, "gflops_per_image": 0.3}
    return m | {"images_per_s": 100.0, "images_per_s_median": 90.0} | extra


def _rows(gated_top1: float, routed: float) -> dict[str, dict[str, Any]]:
    gated = _mode(gated_top1, expensive_fraction=routed, selector_fraction=routed, fallback_fraction=0.0)
    cal = {"calibration": "shmnet", "rule_name": "shmnet/selector", "threshold": 0.9, "within_budget": True}
    test = {"cheap_only": _mode(0.36), "expensive_only": _mode(0.40), "gated": gated}
    return {"full_b0.3": {"gate": {"test": test, "calibration": cal}}, "linear": {"test": {"label": _mode(0.31)}}}


def test_expensive_row_names_its_mode_and_the_goal_follows_the_numbers() -> None:
    full = table(_rows(0.395, 0.35), [0.3])
    assert any(line.startswith("| full = expensive only | all | 40.0") for line in full)
    assert "- budget 30%, shmnet: gated 39.5 vs expensive 40.0 top-1, 35.0% routed: goal met" in full
    last_n = table(_rows(0.385, 0.35), [0.3], expensive_mode="last_n")
    assert any(line.startswith("| last_n = expensive only | last 2 stages + heads | 40.0") for line in last_n)
    assert any("goal NOT met" in line for line in last_n)  # 1.5 points below the expensive branch
    assert any("goal NOT met" in line for line in table(_rows(0.40, 0.45), [0.3]))  # over 40% routed


def test_one_gated_row_per_calibration_rule_each_checked_and_named() -> None:
    rows = _rows(0.40, 1.0)  # SHMNet's 0.9 fall-back sends everything to the expensive branch
    best = _rows(0.405, 0.32)["full_b0.3"]
    cal = {"calibration": "best", "rule_name": "selector", "threshold": 0.0, "within_budget": True}
    best["gate"]["calibration"] = cal
    lines = table(rows | {"full_b0.3_best": best}, [0.3], calibrations=["shmnet", "best"])
    gated = [line for line in lines if line.startswith("| gated")]
    assert len(gated) == 2 and "fall-back < 0.90" in gated[0] and "best: selector, fall-back off" in gated[1]
    assert "- budget 30%, shmnet: gated 40.0 vs expensive 40.0 top-1, 100.0% routed: goal NOT met" in lines
    assert "- budget 30%, best: gated 40.5 vs expensive 40.0 top-1, 32.0% routed: goal met" in lines
