"""The embedding probe's feature statistics against plain loops, and the probe end to end on the synthetic set."""

from __future__ import annotations

import torch

from benchmarks import embedding_probe as ep


def test_channel_stats_and_gram_match_plain_loops() -> None:
    f = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    stats = ep.channel_stats(f)
    gram = ep.channel_gram(f)
    for b in range(3):
        for c in range(4):
            vals = f[b, c].flatten()
            assert torch.isclose(stats[b, c], vals.mean()) and torch.isclose(stats[b, 4 + c], vals.std())
        k = 0
        for i in range(4):
            for j in range(i, 4):
                assert torch.isclose(gram[b, k], (f[b, i] * f[b, j]).sum() / 30)
                k += 1
    assert gram.shape == (3, 10)


def test_probe_end_to_end_on_synthetic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    md = tmp_path / "t.md"
    args = ["random", "--labelled", "", "--synthetic-size", "140", "--backbone", "test_resnet", "--image-size", "32"]
    res = ep.main([*args, "--md", str(md)])
    kinds = set(res["random"])
    assert {"pooled", "ms0", "gram0", "ms_all", "pooled+ms_all"} <= kinds
    assert all(0.0 <= m <= 100.0 and s >= 0.0 for m, s in res["random"].values())
    assert "| random |" in md.read_text()
