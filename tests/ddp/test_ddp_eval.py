"""Issue 12, cases 6, 9, 10 and the pieces behind 2 and 5: sharded embed and feature extraction under torchrun
equal one process row for row; fine-tuning refuses several processes in one line; lightly's gradient fix is
required; untrained parameters are frozen; whole-batch shards; bad samples substituted, never dropped."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from ssl_art import distributed
from ssl_art.data.dataset import BadSample
from ssl_art.data.loaders import collate
from ssl_art.engine.sampler import ResumableSampler, SeededDataset

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(args: list[str], timeout: float = 120) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


# ---------------------------------------------------------------------------------------------------- case 10


@pytest.mark.ddp
def test_sharded_embed_equals_single_process_row_for_row(tmp_path: Path, image_tree: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(image_tree, tree)
    (tree / "red" / "broken.png").write_text("not an image")  # 13 rows, one bad: shards of 7 and 6
    common = ["embed", "--collection", str(tree), "--backbone", "resnet10t", "--image-size", "32", "--batch-size", "2",
              "--chunk-rows", "5", "--num-workers", "0", "--dtype", "float32"]  # fmt: skip
    from ssl_art.cli import main as cli_main

    cli_main([*common, "--out", str(tmp_path / "one")])
    rc, log = _torchrun(["-m", "ssl_art.cli", *common, "--out", str(tmp_path / "two")])
    assert rc == 0, log[-3000:]
    assert log.count('"complete": true') == 1, log  # the result printed once, by rank 0
    a, b = np.load(tmp_path / "one" / "embeddings.npy"), np.load(tmp_path / "two" / "embeddings.npy")
    assert a.shape == b.shape == (13, a.shape[1])
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)  # row for row
    meta_a = json.loads((tmp_path / "one" / "meta.json").read_text())
    meta_b = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta_a == meta_b and len(meta_b["bad_rows"]) == 1
    assert (tmp_path / "one" / "manifest.csv").read_text() == (tmp_path / "two" / "manifest.csv").read_text()
    assert json.loads((tmp_path / "two" / "progress.json").read_text())["done"] == 13


@pytest.mark.ddp
def test_main_linear_under_torchrun_shards_features_and_writes_once(tmp_path: Path, image_tree: Path) -> None:
    common = ["main_linear.py", f"eval.train_path={image_tree}", "model.backbone=resnet10t", "data.image_size=32",
              "data.num_workers=0", "data.batch_size=5", "run.device=cpu", "run.progress=false",
              "eval.compare_random=false", "eval.knn_k=3", "eval.folds=2", "eval.linear_epochs=2",
              "eval.linear_lrs=[0.1]", "eval.linear_wds=[0.0]"]  # fmt: skip
    import main_linear

    assert main_linear.main([*common[1:], f"run.output_dir={tmp_path / 'one'}"]) == 0
    rc, log = _torchrun([*common, f"run.output_dir={tmp_path / 'two'}"])
    assert rc == 0, log[-3000:]
    assert log.count("metrics: ") == 1, log  # printed (and written) by rank 0 only
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for k in ("knn_top1", "linear_top1", "n_train", "classes"):
        assert two[k] == pytest.approx(one[k], abs=1e-6) if isinstance(one[k], float) else two[k] == one[k], k


def test_finetune_refuses_several_processes_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import main_finetune
    from ssl_art.runtime.cli import run_cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "ft"
    code = run_cli(lambda: main_finetune.main(["run.device=cpu", f"run.output_dir={out}"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: main_finetune.py runs in one process"), err
    assert "WORLD_SIZE=2" in err[0] and not out.exists()


# ------------------------------------------------------------------------------------------------------ case 6


def test_lightly_requirement_has_the_gather_gradient_fix() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = [Requirement(r) for r in cfg["options"]["install_requires"].split("\n") if r.strip()]
    lightly = next(r for r in reqs if r.name == "lightly")
    need = Version(".".join(map(str, distributed.LIGHTLY_GATHER_MIN)))
    assert need == Version("1.5.4")
    assert not lightly.specifier.contains("1.5.3") and lightly.specifier.contains(str(need))
    from importlib.metadata import version

    assert Version(version("lightly")) >= need  # what is installed here passes the run-time check
    distributed.check_lightly_gather()


def test_old_lightly_is_refused_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "version", lambda name: "1.5.3")
    with pytest.raises(RuntimeError, match=r"lightly 1\.5\.3 .* needs lightly>=1\.5\.4"):
        distributed.check_lightly_gather()


# ------------------------------------------------------------------------------------------------------ case 9


def test_untrained_gram_head_is_frozen_and_never_optimised() -> None:
    from ssl_art.config import PretrainConfig, load_config
    from ssl_art.engine.ddp import freeze_unused
    from ssl_art.engine.optim import build_optimizer
    from ssl_art.methods.registry import build_pretrain_model

    tiny = ["--config", str(ROOT / "configs" / "tiny.yaml"), "method=art_ssl", "model.backbone=test_resnet"]
    cfg = load_config(PretrainConfig, [*tiny, "model.gram.enabled=true", "loss.w_gram=0"])
    method = build_pretrain_model(cfg)
    method.train()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    rng = torch.get_rng_state()
    frozen = freeze_unused(method, views)
    assert frozen and all(n.startswith("gram_head.") for n in frozen)
    assert {n for n, p in method.named_parameters() if n.startswith("gram_head.")} == set(frozen)
    assert torch.equal(torch.get_rng_state(), rng)  # the probe leaves no trace: RNG and buffers as before
    for k, v in method.state_dict().items():
        assert torch.equal(v, before[k]), k
    opt = build_optimizer(method, "adamw", 1e-3, 0.5)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    gram = [p for n, p in method.named_parameters() if n.startswith("gram_head.")]
    assert not any(id(p) in in_opt for p in gram)  # AdamW's decay can never move them


# ---------------------------------------------------------------------------------------------- cases 2 and 5


def test_sampler_cuts_each_epoch_to_whole_global_batches() -> None:
    n, b, world = 47, 4, 2
    keep = (n // (b * world)) * b * world  # 40
    shards = [list(ResumableSampler(n, 0, rank=r, world_size=world, keep=keep)) for r in range(world)]
    assert [len(s) for s in shards] == [20, 20]  # 5 batches of 4 on both ranks
    order = ResumableSampler(n, 0).order()
    assert sorted(shards[0] + shards[1]) == sorted(order[:keep])
    for start in (8, 24):  # resume positions (whole global batches) keep both ranks even
        s = [ResumableSampler(n, 0, rank=r, world_size=world, keep=keep) for r in range(world)]
        for x in s:
            x.set_epoch(0, start)
        assert [len(list(x)) for x in s] == [(keep - start) // 2] * 2 == [len(x) for x in s]


class _Items(torch.utils.data.Dataset):  # type: ignore[type-arg]
    bad = {1, 2, 5}

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> object:
        if i in self.bad:
            return BadSample(i, "not_an_image", f"/x/{i}.jpg")
        return [torch.full((3, 2, 2), float(i)) + torch.rand(3, 2, 2) * 0, torch.full((3, 2, 2), float(i))], 0, i


def test_bad_samples_are_substituted_so_a_batch_keeps_its_size() -> None:
    from ssl_art.data.dataset import Substitute

    ds = SeededDataset(_Items(), seed=0)
    items = [ds[i] for i in range(6)]
    assert isinstance(items[1], Substitute) and items[1].sample[2] == 3  # next readable after 1 is 3
    assert isinstance(items[5], Substitute) and items[5].sample[2] == 0  # wraps around
    batch = collate(items)
    assert len(batch) == 6 and batch.views[0].shape[0] == 6
    assert batch.indices.tolist() == [0, 3, 3, 3, 4, 0]
    assert sorted(i for i, _, _ in batch.bad) == [1, 2, 5]
    assert [ds[i].sample[2] if isinstance(ds[i], Substitute) else i for i in range(6)] == [0, 3, 3, 3, 4, 0]
