"""The embedding probe's raw Gram against a plain loop, and the probe end to end on the synthetic set."""

from __future__ import annotations

import torch

from benchmarks import embedding_probe as ep


def test_channel_gram_matches_a_plain_loop() -> None:  # channel_stats: tests/models/test_style_stats.py
    f = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    gram = ep.channel_gram(f)
    for b in range(3):
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
