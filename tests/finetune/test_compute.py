"""Timing is honest: every mode is warmed up before any is timed, each timed pass is synchronised on both ends, and
the gated mode's selector / fall-back shares are those of the model's own routing."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_gated import make

import ssl_art.finetune.compute as compute
from ssl_art.runtime.device import synchronize


def test_sync_helper_is_a_noop_on_cpu() -> None:
    synchronize(torch.device("cpu"))  # must not raise without CUDA / MPS


def test_each_timed_pass_is_synchronised_and_every_mode_warmed_up(monkeypatch: pytest.MonkeyPatch) -> None:
    g, _, _, _ = make()
    g.eval()
    torch.manual_seed(0)
    x = torch.randn(12, 3, 8, 8)
    with torch.no_grad():
        logit = g.hard_logit(*g.cheap(x)[1:])
    g.decision_bias.fill_(float(torch.quantile(logit, 0.75)))
    g.threshold.fill_(float(torch.quantile(compute_conf(g, x), 0.5)))
    events: list[str] = []
    real_run = compute.run_batches
    names = {}

    def run(fn: Any, images: torch.Tensor, bs: int) -> Any:
        events.append(f"run:{names.get(fn, '?')}")
        return real_run(fn, images, bs)

    real_modes = compute.mode_functions

    def modes(*a: Any) -> Any:
        fns = real_modes(*a)
        names.update({fn: name for name, fn in fns.items()})
        return fns

    monkeypatch.setattr(compute, "synchronize", lambda d: events.append("sync"))
    monkeypatch.setattr(compute, "run_batches", run)
    monkeypatch.setattr(compute, "mode_functions", modes)
    res = compute.measure_modes(g, x, batch_size=5, repeats=2, warmup=1)

    modes_ = ["cheap_only", "expensive_only", "gated"]
    first_timed = events.index("sync")
    assert events[:first_timed] == [f"run:{m}" for m in modes_] * 2  # FLOP pass, then a warm-up pass each
    timed = events[first_timed + 1 :]  # after the sync that ends the warm-ups
    assert timed == [e for m in modes_ * 2 for e in ("sync", f"run:{m}", "sync")]
    with torch.no_grad():
        out = g(x, sample=False)
    r = res["gated"]
    assert r["selector_fraction"] == pytest.approx(float(out.action.float().mean()))
    assert r["fallback_fraction"] == pytest.approx(float(out.fallback.float().mean()))
    assert r["expensive_fraction"] == pytest.approx(r["selector_fraction"] + r["fallback_fraction"])
    assert 0 < r["fallback_fraction"] and res["expensive_only"]["expensive_fraction"] == 1


def compute_conf(g: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(g.cheap(x)[2], 1).amax(1)
