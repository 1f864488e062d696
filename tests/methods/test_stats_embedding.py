"""The built-in methods' ``stats`` embedding is the parameter-free per-stage statistics of their own backbone."""

from __future__ import annotations

import pytest
import torch
from method_helpers import tiny_config, views

from ssl_art.methods.registry import build_pretrain_model
from ssl_art.models.stats import style_stats


@pytest.mark.parametrize("name", ["simclr", "art_ssl"])
def test_stats_embedding_is_the_backbone_stage_statistics(name: str) -> None:
    """``stats`` is :func:`style_stats` of the same backbone's intermediate maps, unit-norm, one block per stage."""
    torch.manual_seed(0)
    m = build_pretrain_model(tiny_config(name)).eval()
    x = views(b=3, n=1, seed=7)[0]
    with torch.no_grad():
        maps = m.backbone.features(x).intermediates
        out = m.embed(x)
    assert "stats" in m.embedding_kinds
    torch.testing.assert_close(out["stats"], style_stats(maps))
    assert out["stats"].shape[1] == 2 * sum(f.shape[1] for f in maps)
    torch.testing.assert_close(out["stats"].norm(dim=1), torch.ones(3))
