"""DistillLoss against a loop reference; cross-view pairing (swap test); stop-gradient on the teacher."""

import pytest
import torch
import torch.nn.functional as F

from ssl_art.losses.distill import DistillLoss


def naive_distill(student, teacher, weights):
    ws = [w / sum(weights) for w in weights]
    total, pairs = 0.0, 0
    for i in range(len(student)):
        for j in range(len(teacher)):
            if i == j:
                continue
            for w, p in zip(ws, student[i]):
                cos = [float(F.cosine_similarity(p[n : n + 1], teacher[j][n : n + 1])) for n in range(p.shape[0])]
                total += w * -sum(cos) / len(cos)
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n_views", [2, 3])
@pytest.mark.parametrize("weights", [(1.0,), (0.25, 0.5, 1.0), (0.0, 2.0)])
@pytest.mark.parametrize("b, d", [(1, 4), (6, 16)])
def test_matches_naive(n_views, weights, b, d):
    torch.manual_seed(len(weights) + b)
    student = [[torch.randn(b, d) for _ in weights] for _ in range(n_views)]
    teacher = [torch.randn(b, d) for _ in range(n_views)]
    ref = naive_distill(student, teacher, weights)
    assert float(DistillLoss(weights)(student, teacher)) == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_pairs_student_view_with_other_teacher_view():
    """Swap test: predicting the OTHER view's teacher reaches the minimum -1; predicting the same view does not."""
    torch.manual_seed(0)
    t_a, t_b = torch.randn(4, 8), torch.randn(4, 8)
    loss = DistillLoss([1.0, 1.0])
    cross = loss([[t_b, 2 * t_b], [t_a, t_a]], [t_a, t_b])
    same = loss([[t_a, t_a], [t_b, t_b]], [t_a, t_b])
    assert float(cross) == pytest.approx(-1.0, abs=1e-6)
    assert float(same) > -0.9


def _neg_cos(p, t):
    return -sum(float(F.cosine_similarity(p[n : n + 1], t[n : n + 1])) for n in range(p.shape[0])) / p.shape[0]


def test_teacher_subset_pairs_only_other_views():
    """teacher_views=[j]: every student view != j is paired with that one teacher entry, and nothing else."""
    torch.manual_seed(5)
    student = [[torch.randn(4, 6)] for _ in range(3)]
    teacher = [torch.randn(4, 6) for _ in range(3)]
    loss = DistillLoss([1.0])
    got = loss(student, [teacher[1]], teacher_views=[1])
    ref = (_neg_cos(student[0][0], teacher[1]) + _neg_cos(student[2][0], teacher[1])) / 2
    assert float(got) == pytest.approx(ref, rel=1e-5)
    got2 = loss(student[:2], [teacher[0]], teacher_views=[0])
    assert float(got2) == pytest.approx(_neg_cos(student[1][0], teacher[0]), rel=1e-5)
    with pytest.raises(ValueError, match="no \\(student view"):
        loss(student[:2], [], teacher_views=[])


def test_stop_gradient_on_teacher():
    p = torch.randn(3, 5, requires_grad=True)
    q = torch.randn(3, 5, requires_grad=True)
    t = [torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)]
    DistillLoss([1.0])([[p], [q]], t).backward()
    assert p.grad is not None and q.grad is not None
    assert all(x.grad is None for x in t)


def test_validation():
    for bad in ([], [-1.0, 2.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="layer_weights"):
            DistillLoss(bad)
    loss = DistillLoss([1.0, 1.0])
    with pytest.raises(ValueError, match="2 student views"):
        loss([[torch.randn(2, 3)] * 2], [torch.randn(2, 3)])
    with pytest.raises(ValueError, match="expected 2 layer"):
        loss([[torch.randn(2, 3)], [torch.randn(2, 3)]], [torch.randn(2, 3)] * 2)
