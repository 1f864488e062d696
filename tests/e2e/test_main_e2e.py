"""Tiny end-to-end runs of the thin entry points on synthetic images: pretrain -> linear evaluation."""

from __future__ import annotations

import json

import pytest

import main_linear
import main_pretrain


@pytest.mark.parametrize("method", ["simclr", "art_ssl"])
def test_pretrain_then_linear(tmp_path, method):
    run = tmp_path / method
    extra = ["model.fusion.enabled=true", "model.gram.enabled=true"] if method == "art_ssl" else []
    assert (
        main_pretrain.main(["--config", "configs/tiny.yaml", f"method={method}", f"run.output_dir={run}", *extra]) == 0
    )
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.yaml").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["stopped"] == "done"

    main_linear.main(
        [
            f"eval.checkpoint={run}",
            "data.synthetic_size=140",
            "data.num_workers=0",
            "eval.folds=2",
            "eval.knn_k=5",
            "eval.linear_epochs=5",
            f"run.output_dir={run / 'eval'}",
            "run.progress=false",
        ]
    )
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for key in ("knn_top1", "knn_top5", "linear_top1", "linear_top5", "n_train", "n_eval", "classes"):
        assert key in metrics, key
    assert 0.0 <= metrics["knn_top1"] <= metrics["knn_top5"] <= 1.0
    assert metrics["n_train"] + metrics["n_eval"] == 140 and len(metrics["classes"]) == 7
    assert "random_init" in metrics and "knn_top1" in metrics["random_init"]
