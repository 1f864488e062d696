"""Tiny end-to-end fine-tune on the synthetic collection (gated head on), then an ensemble run and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import main_finetune
import ssl_art.finetune  # noqa: F401
from ssl_art.cli import main as cli_main
from ssl_art.config import ConfigError, FinetuneConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs" / "finetune").glob("*.yaml")))
def test_configs_load_strictly(name: str) -> None:
    cfg = load_config(FinetuneConfig, ["--config", str(ROOT / "configs" / "finetune" / name)])
    assert cfg.ft.mode in ("linear", "last_n", "full")


def test_bad_choice_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_config(FinetuneConfig, ["ft.mode=lineal"])
    assert "linear, last_n, full" in capsys.readouterr().err


def test_tiny_finetune_gate_ensemble_predict(tmp_path: Path) -> None:
    tiny = str(ROOT / "configs" / "finetune" / "tiny.yaml")
    run1 = tmp_path / "run1"
    main_finetune.main(["--config", tiny, f"run.output_dir={run1}"])
    for f in (
        "splits.json",
        "config.yaml",
        "test.json",
        "test_label_confusion.png",
        "summary.json",
        "gate_compare.json",
        "checkpoints/best.pt",
        "checkpoints/gated.pt",
    ):
        assert (run1 / f).is_file(), f
    split = json.loads((run1 / "splits.json").read_text())
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, parts)) == 70
    summary = json.loads((run1 / "summary.json").read_text())
    assert summary["test"]["label"]["n"] == len(parts[2])
    gate = summary["gate"]
    calib = gate["calibration"]
    assert calib["calibration"] == "shmnet" and calib["threshold"] == 0.9  # SHMNet's fall-back kept as configured
    assert calib["within_budget"] == (calib["val_expensive_fraction"] <= 0.4 + 1e-6)
    table = gate["test"]
    g = table["gated"]
    assert g["expensive_fraction"] == pytest.approx(g["selector_fraction"] + g["fallback_fraction"])
    gated_line = next(line for line in (run1 / "gate_compare.txt").read_text().splitlines() if line.startswith("gated"))
    assert "shmnet" in gated_line  # the calibration rule is printed next to the gated row
    assert table["cheap_only"]["expensive_fraction"] == 0 and table["expensive_only"]["expensive_fraction"] == 1
    assert table["cheap_only"]["gflops_per_image"] < table["expensive_only"]["gflops_per_image"]
    # measured gated FLOPs = cheap + routed share of (expensive + gate MLPs): between the two extremes
    lo = table["cheap_only"]["gflops_per_image"]
    hi = lo + g["expensive_fraction"] * table["expensive_only"]["gflops_per_image"]
    assert lo <= g["gflops_per_image"] <= hi * 1.05
    if g["expensive_fraction"] < 1:  # shared trunk: the routed rows continue from it, nothing is recomputed
        assert g["gflops_per_image"] < table["expensive_only"]["gflops_per_image"]
    assert list(run1.glob("tb/events.*"))

    # linear mode reusing run1's split, soft-voted with run1
    run2 = tmp_path / "run2"
    main_finetune.main(
        [
            "--config",
            tiny,
            f"run.output_dir={run2}",
            "ft.mode=linear",
            "gate.enabled=false",
            f"split.file={run1 / 'splits.json'}",
            f"ft.ensemble=[{run1 / 'checkpoints' / 'best.pt'}]",
        ]
    )
    s2 = json.loads((run2 / "summary.json").read_text())
    assert s2["test_ensemble"]["label"]["n"] == len(parts[2]) and s2["test_ensemble"]["members"] == 2
    assert json.loads((run2 / "splits.json").read_text())["test"] == split["test"]

    # a member trained on another split may have seen this run's test images: refused
    with pytest.raises(ConfigError, match="was trained on .* of this run's test images"):
        main_finetune.main(
            ["--config", tiny, f"run.output_dir={tmp_path / 'run3'}", "ft.mode=linear", "gate.enabled=false",
             "split.seed=7", f"ft.ensemble=[{run1 / 'checkpoints' / 'best.pt'}]"]
        )  # fmt: skip
    assert not (tmp_path / "run3" / "checkpoints").exists()  # refused before any training

    # predict: folder of images -> top-k CSV / JSON, with a plain and a gated checkpoint
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    out_json = tmp_path / "pred.json"
    cli_main(["predict", str(run1 / "checkpoints" / "best.pt"), str(folder), "--topk", "3", "--out", str(out_json)])
    rows = json.loads(out_json.read_text())
    assert len(rows) == 3 and len(rows[0]["label"]) == 3
    probs = [e["prob"] for e in rows[0]["label"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    out_csv = tmp_path / "pred.csv"
    cli_main(
        ["predict", str(run1 / "checkpoints" / "gated.pt"), str(folder / "0.png"), "--topk", "2", "--out", str(out_csv)]
    )
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "path,label_top1,label_p1,label_top2,label_p2,expensive" and len(lines) == 2


def test_stage2_trains_a_copy_so_expensive_only_is_the_saved_classifier(tmp_path: Path) -> None:
    tiny = str(ROOT / "configs" / "finetune" / "tiny.yaml")
    run = tmp_path / "s2"
    main_finetune.main(
        ["--config", tiny, f"run.output_dir={run}", "gate.stage2_epochs=2", "optim.lr=0.5", "gate.exit_width=16"]
    )  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    saved = summary["test"]["label"]  # best.pt, the expensive classifier, scored once on test
    row = summary["gate"]["test"]["expensive_only"]
    for k in ("n", "top1", "top3", "top5", "macro_f1"):
        assert row[k] == pytest.approx(saved[k]), k
    assert summary["gate"]["stage2"]  # stage 2 really ran, and changed the gated model's expensive head
    gated = torch.load(run / "checkpoints" / "gated.pt", weights_only=False)["model"]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)["model"]
    assert not torch.allclose(gated["rest.fc.weight"], best["heads.0.weight"])
    assert gated["cheap_head.body.proj.0.weight"].shape[0] == 16  # gate.exit_width reaches the exit head
