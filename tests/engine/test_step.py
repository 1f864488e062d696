"""The shared optimiser step: GradScaler exactly under fp16, accumulation equal to the big batch, clipping, the
non-finite skip policy and the checkpoint cadence, each against a plain reference written here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_art.engine.step import OptimStep, checkpoint_due
from ssl_art.runtime.errors import NonFiniteLossError

CPU = torch.device("cpu")


def _model_and_data() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(5, 3), torch.randn(8, 5), torch.randint(0, 3, (8,))


def _step(model: nn.Module, accum: int, clip: float = 0.0, max_nonfinite: int = 5) -> OptimStep:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return OptimStep(opt, model.parameters(), CPU, None, accum, clip, max_nonfinite)


@pytest.mark.parametrize(("dtype", "enabled"), [(torch.float16, True), (torch.bfloat16, False), (None, False)])
def test_grad_scaler_enabled_exactly_under_fp16(dtype: torch.dtype | None, enabled: bool) -> None:
    m = nn.Linear(2, 2)
    s = OptimStep(torch.optim.SGD(m.parameters(), lr=0.1), m.parameters(), CPU, dtype)
    assert s.scaler.is_enabled() is enabled


def test_accumulation_equals_one_big_batch() -> None:
    big, x, y = _model_and_data()
    small = nn.Linear(5, 3)
    small.load_state_dict(big.state_dict())
    ref = [p.detach().clone() for p in big.parameters()]
    # reference: one SGD step on the mean loss of all 8 rows, by hand
    loss = nn.functional.cross_entropy(big(x), y)
    grads = torch.autograd.grad(loss, list(big.parameters()))
    expected = [p - 0.1 * g for p, g in zip(ref, grads)]

    s = _step(small, accum=2)
    first = s.backward(nn.functional.cross_entropy(small(x[:4]), y[:4]), 0)
    assert first.status == "accumulating"
    assert all(torch.equal(p, r) for p, r in zip(small.parameters(), ref))  # nothing applied yet
    second = s.backward(nn.functional.cross_entropy(small(x[4:]), y[4:]), 0)
    assert second.stepped
    for p, e in zip(small.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in small.parameters())  # zeroed for the next accumulation


def test_clipping_caps_the_norm() -> None:
    m, x, y = _model_and_data()
    before = [p.detach().clone() for p in m.parameters()]
    loss = 100 * nn.functional.cross_entropy(m(x), y)
    grads = torch.autograd.grad(loss, list(m.parameters()), retain_graph=True)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    res = _step(m, 1, clip=0.5).backward(loss, 0)
    assert res.grad_norm == pytest.approx(float(norm), rel=1e-5)  # the norm before clipping is reported
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(m.parameters(), before)))
    assert float(moved) == pytest.approx(0.1 * 0.5, rel=1e-4)  # lr * clipped norm


def test_nonfinite_losses_skipped_then_stop_at_max() -> None:
    m, x, y = _model_and_data()
    s = _step(m, accum=2, max_nonfinite=3)
    before = [p.detach().clone() for p in m.parameters()]
    assert s.backward(nn.functional.cross_entropy(m(x), y), 0).status == "accumulating"
    nan = torch.tensor(float("nan"), requires_grad=True)
    assert s.backward(nan * 1.0, 0).status == "skipped"
    assert s.micro == 0 and all(p.grad is None for p in m.parameters())  # the partial accumulation is dropped
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    assert s.backward(nan * 1.0, 0).status == "skipped"
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row at step 7"):
        s.backward(nan * 1.0, 7)
    assert s.nonfinite_total == 3


def test_a_good_step_resets_the_run_of_bad_ones() -> None:
    m, x, y = _model_and_data()
    s = _step(m, accum=1, max_nonfinite=2)
    nan = torch.tensor(float("nan"))
    s.backward(nan, 0)
    assert s.backward(nn.functional.cross_entropy(m(x), y), 0).stepped
    s.backward(nan, 1)  # one in a row again: no stop
    assert s.consecutive_bad == 1 and s.nonfinite_total == 2
    assert s.state_dict()["nonfinite"] == 2 and "scaler" in s.state_dict()


def test_nonfinite_gradients_are_skipped() -> None:
    m, x, y = _model_and_data()
    s = _step(m, accum=1)
    before = [p.detach().clone() for p in m.parameters()]
    loss = nn.functional.cross_entropy(m(x), y) + torch.sqrt((m.weight * 0).sum())  # finite loss, NaN gradients
    assert s.backward(loss, 0).status == "skipped"
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))


def test_checkpoint_due() -> None:
    assert [s for s in range(0, 10) if checkpoint_due(s, 3)] == [3, 6, 9]
    assert not any(checkpoint_due(s, 0) for s in range(10))
