"""Linear probe: learns a separable problem, stays at chance on shuffled labels, never looks at the eval labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_art.eval.linear import Standardizer, linear_probe, train_linear, train_linear_many


def _blobs(n: int, c: int, d: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * sep
    y = np.arange(n) % c
    x = centres[y] + rng.normal(size=(n, d))
    # an offset and a scale the standardiser has to remove, plus a constant dimension
    x = x * 50.0 + 1000.0
    x[:, 0] = 7.0
    return x.astype(np.float32), y


@pytest.mark.parametrize("optimizer", ["adamw", "lbfgs"])
def test_probe_learns_separable_problem(optimizer: str) -> None:
    x, y = _blobs(600, 4, 32, sep=1.5, seed=0)
    res = linear_probe(x[:400], y[:400], x[400:], y[400:], n_classes=4, epochs=30, optimizer=optimizer)
    assert res.top1 > 0.95
    assert res.top5 == 1.0  # 4 classes
    assert res.scores.shape == (200, 4)
    assert set(res.sweep) == {(lr, wd) for lr in (0.1, 0.01, 0.001) for wd in (0.0, 1e-4)}
    assert res.val_top1 == res.sweep[(res.best_lr, res.best_wd)] == max(res.sweep.values())


def test_probe_is_near_chance_on_shuffled_labels() -> None:
    x, y = _blobs(600, 4, 32, sep=1.5, seed=1)
    y_shuffled = np.random.default_rng(0).permutation(y)
    res = linear_probe(x[:400], y_shuffled[:400], x[400:], y_shuffled[400:], n_classes=4, epochs=30)
    assert res.top1 < 0.40  # chance is 0.25
    assert max(res.sweep.values()) < 0.45


def test_selection_never_uses_eval_labels() -> None:
    x, y = _blobs(300, 3, 16, sep=0.5, seed=2)
    a = linear_probe(x[:200], y[:200], x[200:], y[200:], n_classes=3, epochs=10)
    b = linear_probe(x[:200], y[:200], x[200:], (y[200:] + 1) % 3, n_classes=3, epochs=10)
    assert (a.best_lr, a.best_wd) == (b.best_lr, b.best_wd)
    np.testing.assert_allclose(a.scores, b.scores)
    assert a.top1 != b.top1
    no_labels = linear_probe(x[:200], y[:200], x[200:], None, n_classes=3, epochs=10)
    assert np.isnan(no_labels.top1)
    np.testing.assert_allclose(no_labels.scores, a.scores)


def test_standardizer_uses_train_stats_and_handles_constant_dims() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    s = Standardizer.fit(x)
    out = s(np.array([[2.0, 5.0], [5.0, 6.0]], dtype=np.float32)).numpy()
    np.testing.assert_allclose(out, [[0.0, 0.0], [3.0, 1.0]])  # mean (2, 5), std (1, 0 -> 1)


def test_weight_decay_shrinks_weights() -> None:
    x, y = _blobs(200, 2, 8, sep=2.0, seed=3)
    xt = Standardizer.fit(x)(x)
    yt = torch.from_numpy(y)
    small = train_linear(xt, yt, 2, lr=0.05, wd=0.0, epochs=50, batch_size=0)
    big = train_linear(xt, yt, 2, lr=0.05, wd=1.0, epochs=50, batch_size=0)
    assert big.weight.norm() < 0.5 * small.weight.norm()


def test_probe_errors() -> None:
    x, y = _blobs(40, 2, 4, sep=1.0, seed=4)
    with pytest.raises(ValueError, match="missing"):
        linear_probe(x, np.where(y == 0, -1, y), x, y)
    with pytest.raises(ValueError, match="at least one lr"):
        linear_probe(x, y, x, y, lrs=())
    with pytest.raises(ValueError, match="optimizer"):
        linear_probe(x, y, x, y, optimizer="sgd")


def _naive_adam_fit(
    x: torch.Tensor, y: torch.Tensor, c: int, lr: float, wd: float, epochs: int, bs: int
) -> torch.Tensor:
    """Reference: one plain nn.Linear, CE + wd/2 ||W||^2, Adam with a cosine lr, same seeded batch order."""
    model = torch.nn.Linear(x.shape[1], c)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), bs):
            i = perm[s : s + bs]
            loss = torch.nn.functional.cross_entropy(model(x[i]), y[i]) + 0.5 * wd * (model.weight**2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.weight.detach()


def test_batched_sweep_equals_separate_fits() -> None:
    x, y = _blobs(120, 3, 10, sep=1.0, seed=5)
    xt, yt = Standardizer.fit(x)(x), torch.from_numpy(y)
    settings = [(0.1, 0.0), (0.01, 0.01), (0.003, 1.0)]
    many = train_linear_many(xt, yt, 3, settings, epochs=4, batch_size=32, seed=0)
    for (lr, wd), model in zip(settings, many):
        ref = _naive_adam_fit(xt, yt, 3, lr, wd, epochs=4, bs=32)
        torch.testing.assert_close(model.weight.detach(), ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(many[0].weight, many[1].weight)
