"""Two gloo processes on CPU under real ``torchrun``, against the same run in one process (issue 12).

Each launch is a few steps of ``configs/tiny.yaml`` with timm's tiny test models. One process at batch ``2B`` is the
reference for two processes at ``B`` each: the sampler interleaves the ranks so the global batch holds the same
images, augmented with the same per-image seeds, so weights and logged losses must agree (exactly up to float
reduction order without BatchNorm; within a tolerance with SyncBatchNorm against plain BatchNorm).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import main_pretrain
from ssl_art.checkpoint import find_resumable, load_checkpoint
from ssl_art.runtime.cli import run_cli

pytestmark = pytest.mark.ddp

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")
TINY = ["--config", str(ROOT / "configs" / "tiny.yaml"), "run.device=cpu", "run.deterministic=true"]


def _launch(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(DRIVER), *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


def _kill_all(p: subprocess.Popen[str], pids: Path) -> None:
    """SIGKILL the workers (each runs in a session of its own) and then the launcher."""
    for f in pids.glob("*"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(f.read_text()), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)


def _torchrun(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    pids = Path(tempfile.mkdtemp(prefix="ssl_art_pids_"))
    p = _launch(args, {"SSL_ART_TEST_PIDS": str(pids), **(env or {})})
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_all(p, pids)
        out, _ = p.communicate()
        pytest.fail(f"torchrun hung (a rank left the others waiting):\n{out[-3000:]}")
    finally:
        shutil.rmtree(pids, ignore_errors=True)
    return p.returncode, out


def _one(args: list[str]) -> int:
    return run_cli(lambda: main_pretrain.main(args))


def _model(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


# ------------------------------------------------------------------------------------------- cases 1, 7, 8, 9


def test_new_run_dir_logs_once_and_matches_one_process_without_batchnorm(tmp_path: Path) -> None:
    """Cases 1, 8, 9: a fresh run dir; one log line per event; global metrics; weights equal to one process; a
    Gram head with w_gram=0 never moves (no decay of untrained weights)."""
    common = [*TINY, "method=art_ssl", "model.backbone=test_convnext", "model.gram.enabled=true", "loss.w_gram=0",
              "optim.max_steps=3", "optim.name=sgd", "optim.lr=2.0", "optim.weight_decay=0.05"]  # fmt: skip
    # SGD, not AdamW, for the comparison: Adam's first step is lr * sign(g), so a float-noise gradient (a bias
    # that barely trains) flips sign between reduction orders; SGD moves by g. Decay applies to SGD too.
    assert _one([*common, "data.batch_size=8", f"run.output_dir={tmp_path / 'one'}"]) == 0
    rc, log = _torchrun([*common, "data.batch_size=4", f"run.output_dir={tmp_path / 'two'}"])
    assert rc == 0, log[-3000:]
    two = tmp_path / "two"
    assert "already holds a run" not in log
    assert log.count("INFO ssl_art.pretrain: collection <synthetic>") == 1, log
    assert log.count("done after 3 steps") == 1, log
    assert log.count("frozen (never optimised)") == 1, log
    assert sorted(p.name for p in two.iterdir()) == sorted(
        [
            "bad_files.json",
            "checkpoints",
            "command.txt",
            "config.yaml",
            "metrics.jsonl",
            "summary.json",
            "tb",
            "train.log",
        ]
    )
    assert json.loads((two / "summary.json").read_text())["steps"] == 3
    one_m, two_m = _metrics(tmp_path / "one"), _metrics(two)
    assert [m["step"] for m in two_m] == [1, 2, 3]
    for a, b in zip(one_m, two_m):  # the global loss, not rank 0's half
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
    w1, w2 = _model(tmp_path / "one"), _model(two)
    _close(w1, w2, rtol=1e-4, atol=1e-5)
    from ssl_art.config import PretrainConfig, load_config
    from ssl_art.methods.registry import build_pretrain_model
    from ssl_art.runtime.seeding import seed_everything

    seed_everything(0)
    init = build_pretrain_model(load_config(PretrainConfig, common)).state_dict()
    gram = [k for k in init if k.startswith("gram_head.")]
    assert gram
    for k in gram:  # frozen: exactly the initial values, in both runs
        torch.testing.assert_close(w2[k], init[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(w1[k], init[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(w2["backbone.model.stem.0.weight"], init["backbone.model.stem.0.weight"])


def test_sync_batchnorm_matches_one_process_batchnorm(tmp_path: Path) -> None:
    """Case 7: with dist.sync_bn=auto the two processes normalise over the global batch, like one process does."""
    common = [*TINY, "model.backbone=test_resnet", "optim.max_steps=2", "optim.lr=0.05"]
    assert _one([*common, "data.batch_size=8", f"run.output_dir={tmp_path / 'one'}"]) == 0
    rc, log = _torchrun([*common, "data.batch_size=4", f"run.output_dir={tmp_path / 'two'}"])
    assert rc == 0, log[-3000:]
    w1, w2 = _model(tmp_path / "one"), _model(tmp_path / "two")
    _close(w1, w2, rtol=1e-3, atol=1e-4)
    # running statistics too: the global batch's, not rank 0's half
    bn = [k for k in w1 if k.endswith("running_var")]
    assert bn
    for k in bn:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-3, atol=1e-5, msg=k)


# --------------------------------------------------------------------------------------------- cases 2, 3, 4


def _folder_with_bad(root: Path, n: int = 48, n_bad: int = 6) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    bad = set(np.linspace(3, n - 2, n_bad).astype(int).tolist())
    for i in range(n):
        p = root / f"img{i:02d}.png"
        if i in bad:
            p.write_text("<html>403 Forbidden</html>\n")  # not an image
        else:
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(p)
    return root


@pytest.mark.parametrize("cache", ["auto", "off"])  # the cached batched input path and the per-image PIL path
def test_bad_files_counted_globally_threshold_as_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cache: str
) -> None:
    """Cases 2 and 4: 6 of 48 unreadable. 0.11 refuses in one and in two processes (global count, 6 listed);
    0.2 trains through in two processes (substituted samples: no short batch, no crash) and lists all 6."""
    folder = _folder_with_bad(tmp_path / "imgs")
    common = [*TINY, "model.backbone=test_resnet", f"data.path={folder}", "optim.max_steps=0", "optim.epochs=1",
              f"data.cache={cache}", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip

    assert _one([*common, "data.batch_size=8", "data.max_bad_fraction=0.11", f"run.output_dir={tmp_path / 'one'}"]) == 1
    one_err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(one_err) == 1 and "6 of 48 files" in one_err[0]

    rc, log = _torchrun(
        [*common, "data.batch_size=4", "data.max_bad_fraction=0.11", f"run.output_dir={tmp_path / 'r'}"]
    )
    errors = [ln for ln in log.splitlines() if ln.startswith("error: ")]
    assert rc != 0 and errors == one_err, log[-3000:]  # the same single line as one process
    assert "[rank0]: Traceback" not in log and "[rank1]: Traceback" not in log  # (torchrun prints its own)
    report = json.loads((tmp_path / "r" / "bad_files.json").read_text())
    assert report["counts"] == {"not_an_image": 6}
    assert report == json.loads((tmp_path / "one" / "bad_files.json").read_text())  # the same files listed

    rc, log = _torchrun(
        [*common, "data.batch_size=4", "data.max_bad_fraction=0.2", f"run.output_dir={tmp_path / 'ok'}"]
    )
    assert rc == 0, log[-3000:]
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["stopped"] == "done" and summary["steps"] == 6  # 48 // 8: every batch full
    assert json.loads((tmp_path / "ok" / "bad_files.json").read_text())["total"] == 6


def _last_step(out: Path) -> int:
    found = find_resumable(out / "checkpoints")
    assert found is not None
    return int(load_checkpoint(found)["step"])


def test_time_budget_on_one_rank_stops_both_at_the_same_step(tmp_path: Path) -> None:
    """Case 3: only rank 1's clock runs out; both ranks stop together, cleanly, and the checkpoint is that step."""
    out = tmp_path / "run"
    args = [*TINY, "model.backbone=test_resnet", "data.batch_size=4", "optim.max_steps=20",
            "run.time_budget_s=1000", "run.budget_clock=process", f"run.output_dir={out}"]  # fmt: skip
    steps = tmp_path / "steps"
    steps.mkdir()
    rc, log = _torchrun(args, env={"SSL_ART_TEST_FAULT": "budget", "SSL_ART_TEST_STEPS": str(steps)})
    assert rc == 0, log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "time_budget" and 1 <= summary["steps"] < 20
    per_rank = [json.loads((steps / f"{r}.json").read_text()) for r in (0, 1)]
    assert per_rank[0] == per_rank[1] == {"steps": summary["steps"], "stopped": "time_budget"}
    assert _last_step(out) == summary["steps"]


def test_nonfinite_loss_on_one_rank_is_skipped_by_both(tmp_path: Path) -> None:
    """Stop decisions: a NaN loss on rank 1 alone makes every rank skip that step (no hang, no divergence)."""
    out, steps = tmp_path / "run", tmp_path / "steps"
    steps.mkdir()
    args = [*TINY, "model.backbone=test_resnet", "data.batch_size=4", "optim.max_steps=3", f"run.output_dir={out}"]
    rc, log = _torchrun(args, env={"SSL_ART_TEST_FAULT": "nan", "SSL_ART_TEST_STEPS": str(steps)})
    assert rc == 0, log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["nonfinite_skipped"] == 1
    assert log.count("non-finite loss at step 1: step skipped (1 in a row)") == 1, log
    per_rank = [json.loads((steps / f"{r}.json").read_text()) for r in (0, 1)]
    assert per_rank[0] == per_rank[1] == {"steps": 3, "stopped": "done"}


def test_sigterm_to_one_rank_stops_both_at_the_same_step(tmp_path: Path) -> None:
    """Case 3: SIGTERM reaches rank 1 only; both ranks save at the same step boundary and exit (143), no crash."""
    out, pids, steps = tmp_path / "run", tmp_path / "pids", tmp_path / "steps"
    pids.mkdir()
    steps.mkdir()
    args = [*TINY, "model.backbone=test_resnet", "data.batch_size=4", "optim.max_steps=0", "optim.epochs=50",
            "run.ckpt_every_steps=1", f"run.output_dir={out}"]  # fmt: skip
    p = _launch(args, env={"SSL_ART_TEST_PIDS": str(pids), "SSL_ART_TEST_STEPS": str(steps)})
    deadline = time.time() + 120
    while not (out / "checkpoints" / "ckpt-000000002.pt.sha256").exists():
        assert p.poll() is None and time.time() < deadline, p.communicate()[0][-3000:] if p.poll() is not None else ""
        time.sleep(0.05)
    os.kill(int((pids / "1").read_text()), signal.SIGTERM)
    try:
        log, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        _kill_all(p, pids)
        pytest.fail("a rank kept waiting after the other stopped")
    assert "[rank0]: Traceback" not in log and "[rank1]: Traceback" not in log, log[-3000:]
    assert "Connection closed" not in log, log[-3000:]
    assert "exitcode  : 143" in log, log[-3000:]  # rank 0 too stops 'by a signal' (torchrun then ends the rest)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "signal" and summary["steps"] >= 2
    per_rank = [json.loads((steps / f"{r}.json").read_text()) for r in (0, 1)]
    assert per_rank[0] == per_rank[1] == {"steps": summary["steps"], "stopped": "signal"}
    assert _last_step(out) == summary["steps"]


# --------------------------------------------------------------------------------------------------- case 5


def test_uneven_dataset_resume_after_sigkill_is_exact(tmp_path: Path) -> None:
    """Case 5: 47 images on 2 ranks x 4: 5 whole global batches per epoch on both ranks; SIGKILL in epoch 2 and
    resume give the weights of the uninterrupted run."""
    args = [*TINY, "model.backbone=test_resnet", "data.synthetic_size=47", "data.batch_size=4", "optim.max_steps=0",
            "optim.epochs=3", "run.ckpt_every_steps=1", "run.keep_last=20", "data.cache=off"]  # fmt: skip
    # (the per-image PIL DataLoader path here; the other launches in this file take the default cached path)
    rc, log = _torchrun([*args, f"run.output_dir={tmp_path / 'full'}"])
    assert rc == 0, log[-3000:]
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["steps"] == 15  # 3 x (47 // 8)

    part, pids = tmp_path / "part", tmp_path / "pids"
    pids.mkdir()
    p = _launch([*args, f"run.output_dir={part}"], env={"SSL_ART_TEST_PIDS": str(pids)})
    deadline = time.time() + 120
    while not (part / "checkpoints" / "ckpt-000000006.pt.sha256").exists():
        assert p.poll() is None and time.time() < deadline, "exited before the kill"
        time.sleep(0.02)
    _kill_all(p, pids)  # kill -9 of the whole job (a dead node)
    p.communicate()
    assert 6 <= _last_step(part) < 15
    rc, log = _torchrun([*args, f"run.output_dir={part}", "run.resume=true"])
    assert rc == 0, log[-3000:]
    _close(_model(tmp_path / "full"), _model(part), rtol=1e-5, atol=1e-6)
