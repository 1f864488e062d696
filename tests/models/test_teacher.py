"""EMATeacher: no gradients ever, closed-form EMA after one update, buffers copied, state_dict round trip."""

import copy

import pytest
import torch
from torch import nn

from ssl_art.models.teacher import EMATeacher


def _student():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_frozen_and_no_grad():
    student = _student()
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(5, 4)
    out = teacher(x)
    assert not out.requires_grad
    (student(x) - out).pow(2).sum().backward()  # a loss mixing both must not reach the teacher
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_is_a_copy_not_an_alias():
    student = _student()
    teacher = EMATeacher(student)
    for (n, s), t in zip(student.named_parameters(), teacher.module.parameters()):
        torch.testing.assert_close(s, t, msg=n)
        assert s.data_ptr() != t.data_ptr()


@pytest.mark.parametrize("m", [0.0, 0.5, 0.9, 0.996, 1.0])
def test_closed_form_ema(m):
    student = _student()
    teacher = EMATeacher(student)
    t0 = [p.clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student[1].running_mean.fill_(3.0)
        student[1].num_batches_tracked.fill_(7)
    teacher.update(student, m)
    for t, t_old, s in zip(teacher.module.parameters(), t0, student.parameters()):
        torch.testing.assert_close(t, m * t_old + (1 - m) * s)
    # buffers are copied, not averaged (documented choice)
    torch.testing.assert_close(teacher.module[1].running_mean, torch.full((8,), 3.0))
    assert int(teacher.module[1].num_batches_tracked) == 7


def test_two_updates_compose():
    student = _student()
    teacher = EMATeacher(student)
    t0 = [p.clone() for p in teacher.module.parameters()]
    s1 = [p.detach().clone() + 1.0 for p in student.parameters()]
    with torch.no_grad():
        for p, v in zip(student.parameters(), s1):
            p.copy_(v)
    teacher.update(student, 0.8)
    teacher.update(student, 0.5)
    for t, a, s in zip(teacher.module.parameters(), t0, s1):
        torch.testing.assert_close(t, 0.5 * (0.8 * a + 0.2 * s) + 0.5 * s)


def test_optimizer_does_not_move_teacher():
    student = _student()
    teacher = EMATeacher(student)
    params = [p for p in list(student.parameters()) + list(teacher.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.clone() for p in teacher.parameters()]
    student(torch.randn(6, 4)).sum().backward()
    opt.step()
    for a, b in zip(before, teacher.parameters()):
        torch.testing.assert_close(a, b)


def test_state_dict_round_trip():
    student = _student()
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(2.0)
    teacher.update(student, 0.3)
    other = EMATeacher(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)))
    other.load_state_dict(copy.deepcopy(teacher.state_dict()))
    for a, b in zip(teacher.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert all(not p.requires_grad for p in other.parameters())


def test_validation():
    teacher = EMATeacher(_student())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        teacher.update(_student(), 1.5)
    with pytest.raises(ValueError, match="do not match"):
        teacher.update(nn.Linear(4, 3), 0.9)
