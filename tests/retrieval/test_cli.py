"""``ssl-art`` end to end on a tiny generated image tree with a random-init resnet10t (CPU, a few seconds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_art.cli import build_parser, main, set_threads
from ssl_art.retrieval.embed import open_embeddings

MODEL = ["--backbone", "resnet10t"]


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("ssl-art embed", "ssl-art index build", "ssl-art query", "ssl-art analyse", "ssl-art serve"):
        assert cmd in out
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"embed", "index", "query", "analyse", "metrics", "plot", "serve"} <= set(sub or ())


def test_set_threads_caps_faiss_blas_and_torch() -> None:
    import faiss
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    before = (faiss.omp_get_max_threads(), torch.get_num_threads(), threadpool_info())
    try:
        set_threads(1)
        assert faiss.omp_get_max_threads() == 1
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])
        for pool in before[2]:
            threadpool_limits({pool["prefix"]: pool["num_threads"]})


def test_config_file_is_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("nprobe: 8\nnprobee: 3\n")
    with pytest.raises(SystemExit):
        main(["index", "build", "--embeddings", "x", "--out", "y", "--config", str(cfg)])
    assert "unknown config key 'nprobee'. Did you mean 'nprobe'" in capsys.readouterr().err


def test_configs_retrieval_yaml_loads() -> None:
    from ssl_art.config import RetrievalCfg, config_from_dict, load_yaml

    root = Path(__file__).resolve().parents[2] / "configs" / "retrieval"
    for f in root.glob("*.yaml"):
        assert isinstance(config_from_dict(RetrievalCfg, load_yaml(f)), RetrievalCfg)


def test_embed_index_query_analyse_metrics_plot(
    tmp_path: Path, image_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    main(["embed", "--collection", str(image_tree), "--out", str(emb), *MODEL, "--image-size", "32",
          "--batch-size", "5", "--num-workers", "0", "--dtype", "float32"])  # fmt: skip
    meta = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert meta["n"] == 12 and meta["complete"] and meta["kind"] == "pooled"
    main(["index", "build", "--embeddings", str(emb), "--out", str(idx)])
    assert json.loads(capsys.readouterr().out)["kind"] == "flat"

    red = sorted((image_tree / "red").glob("*.png"))
    main(["query", "--index", str(idx), *MODEL, str(red[0]), "-k", "3", "--json", "--grid", str(tmp_path / "g.png")])
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 1 and len(res[0]["hits"]) == 3
    top = res[0]["hits"][0]
    assert top["path"] == str(red[0]) and top["score"] == pytest.approx(1.0, abs=1e-3)  # the image itself
    assert Image.open(tmp_path / "g.png").format == "PNG"

    main(["index", "query", "--index", str(idx), *MODEL, str(image_tree / "blue"), "-k", "2", "--where", "label=green"])
    table = capsys.readouterr().out
    assert table.count("query:") == 4 and "green" in table and "red" not in table.replace(str(image_tree), "")

    with pytest.raises(SystemExit):  # another model: refused with a clear message
        main(["query", "--index", str(idx), "--backbone", "resnet10t", "--model-seed", "1", str(red[0])])
    assert "differs from the index's model" in capsys.readouterr().err
    main(["analyse", "--embeddings", str(emb), "--out", str(tmp_path / "an"), "-k", "3"])
    out = json.loads(capsys.readouterr().out)
    with open(out["atypical"]) as f:
        assert len(list(csv.DictReader(f))) == 12
    main(["metrics", "--embeddings", str(emb), "-k", "3", "--index", str(idx)])
    m = json.loads(capsys.readouterr().out)
    assert set(m["per_label"]) == {"red", "green", "blue"} and 0 <= m["overall"]["map@k"] <= 1
    assert m["index_recall@3"] == pytest.approx(1.0)  # exact index
    main(
        [
            "plot",
            "map",
            "--embeddings",
            str(emb),
            "--out",
            str(tmp_path / "m.png"),
            "--method",
            "tsne",
            "--tsne-iter",
            "300",
        ]
    )
    assert Image.open(tmp_path / "m.png").format == "PNG"
    x, _ = open_embeddings(emb)
    assert np.isfinite(np.asarray(x)).all()
