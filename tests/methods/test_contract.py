"""Contracts every registered pretraining method keeps (timm ``test_model_backward`` / lightly style).

Parametrised over :data:`ssl_art.methods.registry.METHODS` at collection time, so a method registered before the
tests are collected (one more line in the registry, or a plugin such as ``toy_method.py``) is checked too: every
student parameter gets a gradient, the teacher gets none and moves only through ``after_optimizer_step``, the state
dict round-trips, ``embed()`` returns exactly the advertised embedding kinds, and one CPU step changes the weights.
"""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import tiny_config, unzero_bn, views

from ssl_art.methods.base import PretrainMethod
from ssl_art.methods.registry import METHODS, build_pretrain_model

NAMES = sorted(METHODS)


def _build(name: str, seed: int = 0) -> PretrainMethod:
    torch.manual_seed(seed)
    m = build_pretrain_model(tiny_config(name))
    unzero_bn(m)
    return m.train()


def _teacher_ids(m: PretrainMethod) -> set[int]:
    teacher = getattr(m, "teacher", None)
    return {id(p) for p in teacher.parameters()} if isinstance(teacher, torch.nn.Module) else set()


@pytest.mark.parametrize("name", NAMES)
def test_every_student_parameter_gets_a_gradient_teacher_none(name: str) -> None:
    m = _build(name)
    out = m.training_step(views(), 0.3)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.metrics.values()), out.metrics
    out.loss.backward()
    teacher = _teacher_ids(m)
    student = [(n, p) for n, p in m.named_parameters() if id(p) not in teacher]
    assert student
    no_grad = [n for n, p in student if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    zero = [n for n, p in student if not p.grad.abs().sum() > 0]
    assert not zero, zero
    frozen = [p for p in m.parameters() if id(p) in teacher or not p.requires_grad]
    assert all(p.grad is None for p in frozen)
    assert all(not p.requires_grad for p in m.parameters() if id(p) in teacher)


@pytest.mark.parametrize("name", NAMES)
def test_one_cpu_step_changes_the_student_and_the_teacher_only_through_update(name: str) -> None:
    m = _build(name)
    teacher = _teacher_ids(m)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05)
    m.training_step(views(), 0.5).loss.backward()
    opt.step()
    after_opt = {n: p.detach().clone() for n, p in m.named_parameters()}
    for n, p in m.named_parameters():
        moved = not torch.equal(before[n], after_opt[n])
        assert moved == (id(p) not in teacher), f"{n}: moved={moved} after optimizer.step()"
    m.after_optimizer_step(0.0)  # progress 0: the start momentum (< 1), so a teacher must move now
    for n, p in m.named_parameters():
        if id(p) in teacher:
            assert not torch.equal(after_opt[n], p.detach()), f"teacher {n} did not move in after_optimizer_step"
        else:
            assert torch.equal(after_opt[n], p.detach()), f"student {n} moved in after_optimizer_step"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips(name: str) -> None:
    a, b = _build(name, seed=0), _build(name, seed=1)
    a.training_step(views(seed=3), 0.1)  # fills queues / step counters, so buffers round-trip too
    state = a.state_dict()
    differ_before = [k for k, v in b.state_dict().items() if not torch.equal(v, state[k])]
    assert differ_before, "two seeds gave identical weights: the round trip would prove nothing"
    b.load_state_dict(state, strict=True)
    differ = [k for k, v in b.state_dict().items() if not torch.equal(v, state[k])]
    assert not differ, differ
    a.eval(), b.eval()
    x = views(b=3, n=1, seed=5)[0]
    ea, eb = a.embed(x), b.embed(x)
    for kind in ea:
        torch.testing.assert_close(ea[kind], eb[kind])


@pytest.mark.parametrize("name", NAMES)
def test_embed_returns_each_advertised_kind(name: str) -> None:
    m = _build(name).eval()
    kinds = m.embedding_kinds
    assert "pooled" in kinds and m.default_embedding in kinds
    out = m.embed(views(b=3, n=1)[0])
    assert set(out) == set(kinds)
    for kind, e in out.items():
        assert e.ndim == 2 and e.shape[0] == 3 and e.shape[1] > 0, (kind, e.shape)
        assert torch.isfinite(e).all() and not e.requires_grad, kind
