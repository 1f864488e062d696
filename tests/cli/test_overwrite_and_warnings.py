"""``run.overwrite=true`` only clears an ssl_art run; fine-tuning from random init warns once in the log and report.

Before issue 15 ``run.overwrite=true`` deleted whatever folder ``run.output_dir`` named, and ``ft.checkpoint=''``
trained from random init without a word.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_art.cli import main
from ssl_art.config import FinetuneConfig, config_from_dict
from ssl_art.engine.rundir import RunDirError, prepare_run_dir
from ssl_art.finetune.run import RANDOM_INIT_WARNING, random_init


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"not mine to delete")
    with pytest.raises(RunDirError, match="only replaces an ssl_art run"):
        prepare_run_dir(str(precious), resume=False, overwrite=True, config={"a": 1})
    assert (precious / "holiday.jpg").read_bytes() == b"not mine to delete"


def test_overwrite_replaces_an_ssl_art_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run_dir(str(run), resume=False, overwrite=False, config={"a": 1})
    (run / "old.txt").write_text("stale")
    prepare_run_dir(str(run), resume=False, overwrite=True, config={"a": 2})
    assert not (run / "old.txt").exists() and "a: 2" in (run / "config.yaml").read_text()


def test_overwrite_refusal_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "thesis.tex").write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--config", "tiny", "--device", "cpu", "--out", str(folder), "--overwrite"])
    assert e.value.code == 2 and "only replaces an ssl_art run" in capsys.readouterr().err
    assert (folder / "thesis.tex").exists()


def test_random_init_rule() -> None:
    assert random_init(FinetuneConfig())
    assert not random_init(config_from_dict(FinetuneConfig, {"ft": {"checkpoint": "runs/x"}}))
    assert not random_init(config_from_dict(FinetuneConfig, {"model": {"init_checkpoint": "w.safetensors"}}))
    assert not random_init(config_from_dict(FinetuneConfig, {"model": {"pretrained": True}}))


def test_finetune_from_random_init_warns_once(tmp_path: Path) -> None:
    out = tmp_path / "ft"
    argv = [
        "finetune", "--config", "finetune/tiny", "--device", "cpu", "--out", str(out), "gate.enabled=false",
        "data.synthetic_size=35", "data.batch_size=8", "optim.max_steps=1",
    ]  # fmt: skip
    assert main(argv) == 0
    log = (out / "train.log").read_text()
    assert log.count("FINE-TUNING FROM RANDOM INIT") == 1 and "WARNING" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] == [RANDOM_INIT_WARNING]
    assert (out / "command.txt").read_text().startswith("ssl-art finetune --config finetune/tiny")


def test_finetune_from_a_checkpoint_does_not_warn(tmp_path: Path, pretrain_run: Path) -> None:
    out = tmp_path / "ft"
    argv = [
        "finetune", "--config", "finetune/tiny", "--device", "cpu", "--out", str(out), "gate.enabled=false",
        "data.synthetic_size=35", "data.batch_size=8", "optim.max_steps=1", "--checkpoint", str(pretrain_run),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "RANDOM INIT" not in (out / "train.log").read_text()
    assert json.loads((out / "summary.json").read_text())["warnings"] == []
