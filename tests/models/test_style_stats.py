"""channel_stats / style_stats against a plain loop, plus the properties a style statistic must have."""

import math

import pytest
import torch

from ssl_art.models.stats import channel_stats, style_stats


def naive_stats(f):
    b, c, h, w = f.shape
    out = torch.zeros(b, 2 * c, dtype=torch.float64)
    for n in range(b):
        for i in range(c):
            vals = [float(f[n, i, y, x]) for y in range(h) for x in range(w)]
            mean = sum(vals) / len(vals)
            out[n, i] = mean
            out[n, c + i] = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return out


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 6, 3, 3), (3, 2, 1, 7)])
def test_channel_stats_matches_loop(shape):
    torch.manual_seed(0)
    f = torch.randn(shape)
    torch.testing.assert_close(channel_stats(f).double(), naive_stats(f), rtol=1e-5, atol=1e-5)


def test_one_by_one_map_is_finite():
    s = channel_stats(torch.randn(2, 4, 1, 1))
    assert torch.isfinite(s).all() and (s[:, 4:] == 0).all()


def test_layout_is_discarded():
    """Shuffling the spatial positions (the same way for every channel) changes nothing: content layout is gone."""
    torch.manual_seed(2)
    f = torch.randn(2, 5, 4, 6)
    perm = torch.randperm(24)
    shuffled = f.flatten(2)[:, :, perm].reshape(f.shape)
    torch.testing.assert_close(channel_stats(shuffled), channel_stats(f))


def test_style_stats_shape_norm_and_stage_balance():
    torch.manual_seed(3)
    maps = [torch.randn(3, 4, 8, 8), 100 * torch.randn(3, 16, 2, 2)]
    s = style_stats(maps)
    assert s.shape == (3, 2 * (4 + 16))
    torch.testing.assert_close(s.norm(dim=1), torch.ones(3))
    # each stage is normalised before concatenation: the 100x louder late stage gets the same share of the norm
    early, late = s[:, :8].norm(dim=1), s[:, 8:].norm(dim=1)
    torch.testing.assert_close(early, late)


def test_float32_under_autocast_and_errors():
    f = torch.randn(2, 3, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert channel_stats(f).dtype == torch.float32
    with pytest.raises(ValueError, match="B, C, H, W"):
        channel_stats(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="at least one"):
        style_stats([])
