"""SoftPositiveLoss against a loop reference, its properties, the queue, and a 2-process gloo equivalence test."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp

from ssl_art.losses.soft_positive import SoftPositiveLoss, soft_targets


def _unit(x):
    x = x.double()
    return x / x.norm(dim=1, keepdim=True)


def naive_pair(student, teacher, queue, lam, tau, tau_t):
    """Per-row loops: candidates = teacher keys of the batch then the queue; positive = own key."""
    s, t = _unit(student), _unit(teacher)
    cands = list(t) + list(queue.double())
    b = s.shape[0]
    total = 0.0
    for i in range(b):
        logits = [float(s[i] @ c) / tau for c in cands]
        log_z = math.log(sum(math.exp(v) for v in logits))
        others = {j: math.exp(float(t[i] @ c) / tau_t) for j, c in enumerate(cands) if j != i}
        norm = sum(others.values())
        for j in range(len(cands)):
            target = lam * (j == i) + (1 - lam) * others.get(j, 0.0) / norm
            total -= target * (logits[j] - log_z)
    return total / b


def naive_loss(student, teacher, queue, lam, tau, tau_t):
    pairs = [(i, j) for i in range(len(student)) for j in range(len(teacher)) if i != j]
    return sum(naive_pair(student[i], teacher[j], queue, lam, tau, tau_t) for i, j in pairs) / len(pairs)


def _filled(loss, n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    loss.enqueue(torch.randn(n, d, generator=g))
    return loss.queue[: int(loss.queue_len)].clone()


@pytest.mark.parametrize("b, d, queue_fill", [(2, 4, 0), (5, 8, 7), (8, 16, 16)])
@pytest.mark.parametrize("lam, tau, tau_t", [(0.5, 0.1, 0.05), (0.0, 0.2, 0.1), (1.0, 0.1, 0.05), (0.8, 1.0, 0.5)])
def test_matches_naive(b, d, queue_fill, lam, tau, tau_t):
    torch.manual_seed(b + d)
    loss = SoftPositiveLoss(lam, tau, tau_t, queue_size=16, dim=d)
    queue = _filled(loss, queue_fill, d) if queue_fill else torch.zeros(0, d)
    student = [torch.randn(b, d), torch.randn(b, d)]
    teacher = [torch.randn(b, d), torch.randn(b, d)]
    got = loss(student, teacher, update_queue=False)
    assert float(got) == pytest.approx(naive_loss(student, teacher, queue, lam, tau, tau_t), rel=1e-5, abs=1e-5)


def test_soft_targets_properties():
    torch.manual_seed(0)
    logits = torch.randn(6, 10) / 0.05
    pos = torch.tensor([0, 3, 2, 9, 4, 5])
    for lam in (0.0, 0.3, 0.5, 1.0):
        t = soft_targets(logits, pos, lam)
        torch.testing.assert_close(t.sum(dim=1), torch.ones(6))
        assert (t >= 0).all()
        torch.testing.assert_close(t[torch.arange(6), pos], torch.full((6,), lam))  # self masked in the soft part
    torch.testing.assert_close(soft_targets(logits, pos, 1.0), torch.eye(10)[pos])


def test_lambda_one_is_infonce_against_teacher():
    """lambda = 1: plain cross entropy of student logits over [batch keys, queue] with the own key as the label."""
    torch.manual_seed(1)
    b, d = 6, 8
    loss = SoftPositiveLoss(1.0, 0.1, 0.05, queue_size=5, dim=d)
    queue = _filled(loss, 5, d)
    s, t = torch.randn(b, d), torch.randn(b, d)
    keys = torch.cat([torch.nn.functional.normalize(t, dim=1), queue])
    logits = torch.nn.functional.normalize(s, dim=1) @ keys.T / 0.1
    ref = torch.nn.functional.cross_entropy(logits, torch.arange(b))
    torch.testing.assert_close(loss.pair_loss(s, t, queue), ref)


def test_teacher_similarity_shapes_target():
    """With lambda < 1 the student is rewarded for matching the teacher's neighbours: moving it there lowers loss."""
    torch.manual_seed(2)
    loss = SoftPositiveLoss(0.5, 0.1, 0.05, queue_size=0, dim=4)
    t = torch.eye(4)
    t[1] = torch.tensor([0.9, 0.1, 0.0, 0.0])  # key 1 is the teacher's neighbour of key 0
    s_close = t.clone()
    s_far = t.clone()
    s_far[0] = torch.tensor([1.0, -2.0, 0.0, 0.0])  # same positive side, away from the neighbour
    assert loss.pair_loss(s_close, t, torch.zeros(0, 4)) < loss.pair_loss(s_far, t, torch.zeros(0, 4))


def test_gradient_only_to_student():
    s = [torch.randn(4, 6, requires_grad=True) for _ in range(2)]
    t = [torch.randn(4, 6, requires_grad=True) for _ in range(2)]
    SoftPositiveLoss(dim=6, queue_size=8)(s, t).backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in s)
    assert all(x.grad is None for x in t)


def test_queue_fifo_and_wrap():
    loss = SoftPositiveLoss(queue_size=5, dim=2)
    keys = torch.stack([torch.tensor([float(i + 1), 0.0]) for i in range(3)])
    loss.enqueue(keys)
    assert int(loss.queue_len) == 3 and int(loss.queue_ptr) == 3
    loss.enqueue(-keys)  # 6 keys into 5 slots: wraps, overwriting the oldest
    assert int(loss.queue_len) == 5 and int(loss.queue_ptr) == 1
    assert loss.queue[:, 0].tolist() == [-1.0, 1.0, 1.0, -1.0, -1.0]
    big = torch.randn(12, 2)
    loss.enqueue(big)
    assert int(loss.queue_len) == 5
    assert set(map(tuple, loss.queue.round(decimals=5).tolist())) == set(
        map(tuple, torch.nn.functional.normalize(big[-5:], dim=1).round(decimals=5).tolist())
    )


def test_forward_enqueues_view0_once_and_uses_snapshot():
    torch.manual_seed(3)
    loss = SoftPositiveLoss(0.5, 0.1, 0.05, queue_size=32, dim=4)
    s = [torch.randn(3, 4) for _ in range(2)]
    t = [torch.randn(3, 4) for _ in range(2)]
    expected = naive_loss(s, t, torch.zeros(0, 4), 0.5, 0.1, 0.05)  # both pairs see the empty queue
    assert float(loss(s, t)) == pytest.approx(expected, rel=1e-5)
    assert int(loss.queue_len) == 3
    torch.testing.assert_close(loss.queue[:3], torch.nn.functional.normalize(t[0], dim=1))


def test_teacher_subset_uses_only_cross_view_pairs():
    torch.manual_seed(6)
    loss = SoftPositiveLoss(0.5, 0.1, 0.05, queue_size=8, dim=4)
    s = [torch.randn(3, 4) for _ in range(2)]
    t1 = torch.randn(3, 4)
    got = loss(s, [t1], teacher_views=[1])  # student view 0 against the teacher's view 1 only
    assert float(got) == pytest.approx(naive_pair(s[0], t1, torch.zeros(0, 4), 0.5, 0.1, 0.05), rel=1e-5)
    torch.testing.assert_close(loss.queue[:3], torch.nn.functional.normalize(t1, dim=1))
    with pytest.raises(ValueError, match="no \\(student view"):
        loss(s, [], teacher_views=[])


def test_state_dict_round_trip():
    a = SoftPositiveLoss(queue_size=8, dim=4)
    a.enqueue(torch.randn(11, 4))
    assert {"queue", "queue_ptr", "queue_len"} <= set(a.state_dict())
    b = SoftPositiveLoss(queue_size=8, dim=4)
    b.load_state_dict(a.state_dict())
    s, t = [torch.randn(3, 4) for _ in range(2)], [torch.randn(3, 4) for _ in range(2)]
    torch.testing.assert_close(a(s, t), b(s, t))
    torch.testing.assert_close(a.queue, b.queue)
    assert int(a.queue_ptr) == int(b.queue_ptr) == 3  # 11 keys fill the 8 slots (ptr back to 0), then 3 more


def test_validation():
    with pytest.raises(ValueError, match="lambda_"):
        SoftPositiveLoss(lambda_=1.5)
    with pytest.raises(ValueError, match="tau"):
        SoftPositiveLoss(tau=0.0)
    with pytest.raises(ValueError, match="queue_size"):
        SoftPositiveLoss(queue_size=-1)
    with pytest.raises(ValueError, match="candidate"):
        SoftPositiveLoss(queue_size=0, dim=3).pair_loss(torch.randn(1, 3), torch.randn(1, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="2 student views"):
        SoftPositiveLoss(dim=3)([torch.randn(2, 3)], [torch.randn(2, 3)])


# ------------------------------------------------------------------------------------------ distributed (gloo)


def _ddp_worker(rank, world, init_file, data, out_dir):
    import torch.distributed as dist

    from ssl_art import distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        assert distributed.rank() == rank and distributed.world_size() == world and distributed.is_main() == (rank == 0)
        b = data["s0"].shape[0] // world
        sl = slice(rank * b, (rank + 1) * b)
        loss = SoftPositiveLoss(0.5, 0.1, 0.05, queue_size=16, dim=data["s0"].shape[1])
        loss.load_state_dict(data["state"])
        s = [data["s0"][sl].clone().requires_grad_(True), data["s1"][sl].clone().requires_grad_(True)]
        t = [data["t0"][sl].clone(), data["t1"][sl].clone()]
        value = loss(s, t)
        value.backward()
        torch.save(
            {"loss": value.detach(), "g0": s[0].grad, "g1": s[1].grad, "queue": loss.queue, "ptr": loss.queue_ptr},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_gathered_loss_equals_single_process(tmp_path):
    """Mean over 2 ranks of the per-rank loss (and per-rank grad / world) equals the single-process full batch."""
    torch.manual_seed(4)
    n, d = 8, 6
    ref = SoftPositiveLoss(0.5, 0.1, 0.05, queue_size=16, dim=d)
    ref.enqueue(torch.randn(5, d))
    data = {k: torch.randn(n, d) for k in ("s0", "s1", "t0", "t1")}
    data["state"] = {k: v.clone() for k, v in ref.state_dict().items()}
    s = [data["s0"].clone().requires_grad_(True), data["s1"].clone().requires_grad_(True)]
    full = ref(s, [data["t0"], data["t1"]])
    full.backward()

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "pg"), data, str(tmp_path)), nprocs=2, join=True)
    outs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close((outs[0]["loss"] + outs[1]["loss"]) / 2, full.detach())
    for key, grad in (("g0", s[0].grad), ("g1", s[1].grad)):
        torch.testing.assert_close(torch.cat([o[key] for o in outs]) / 2, grad)
    for o in outs:  # every rank enqueued the gathered keys in rank order, like the full batch
        torch.testing.assert_close(o["queue"], ref.queue)
        assert int(o["ptr"]) == int(ref.queue_ptr)


def test_autocast_computes_in_fp32():
    torch.manual_seed(7)
    loss = SoftPositiveLoss(0.5, 0.1, 0.05, queue_size=0, dim=16)
    s, t = [torch.randn(8, 16) for _ in range(2)], [torch.randn(8, 16) for _ in range(2)]
    ref = loss(s, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss([x.bfloat16() for x in s], t)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(ref), rel=2e-2)
