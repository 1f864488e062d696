"""Done-when of issue 15: ``pip install .`` with no clone on the path runs pretrain, linear, export, and timm loads it.

The package is installed with ``pip install --no-deps --target DIR`` from a copy of the working tree (no
reinstall of torch: the dependencies come from the current environment), then the installed ``DIR/bin/ssl-art``
script runs from an empty folder with ``PYTHONPATH=DIR``, so only the installed files (code and packaged presets)
can be found. It checks that the imported ``ssl_art`` is the installed one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".*_cache", "docs")


def test_pip_installed_ssl_art_runs_every_stage_outside_a_clone(tmp_path: Path) -> None:
    src, target, work = tmp_path / "src", tmp_path / "site", tmp_path / "work"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    subprocess.run([*pip, str(src)], check=True, timeout=300, capture_output=True)
    shutil.rmtree(src)  # nothing of the source tree is left to import from
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    exe = [sys.executable, str(target / "bin" / "ssl-art")]

    def run(*args: str) -> str:
        res = subprocess.run([*exe, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout

    where = subprocess.run(
        [sys.executable, "-c", "import ssl_art, ssl_art.config.presets as p; print(ssl_art.__file__, p.config_dir())"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert where[0].startswith(str(target)) and where[1] == str(target / "ssl_art" / "configs")
    assert run("--version").startswith("ssl-art ")

    tiny = ["--backbone", "resnet10t", "--device", "cpu", "--image-size", "32", "--batch-size", "8"]
    small = ["data.synthetic_size=24", "data.synthetic_image_size=32", "data.num_workers=0", "run.progress=false"]
    run("pretrain", "--config", "demo", *tiny, *small, "--max-steps", "2", "run.time_budget_s=0", "--out", "runs/demo")
    assert (work / "runs" / "demo" / "checkpoints" / "last.pt").is_file()
    run("linear", "--checkpoint", "runs/demo", *tiny, *small, "eval.folds=2", "eval.knn_k=5", "eval.linear_epochs=2",
        "eval.compare_random=false", "--out", "runs/demo/eval")  # fmt: skip
    assert (work / "runs" / "demo" / "eval" / "metrics.json").is_file()
    run("export", "runs/demo", "--format", "timm", "--out", "export/demo")
    check = (
        "import timm, torch, ssl_art.methods.load as b\n"
        "m = timm.create_model('local-dir:export/demo', pretrained=True).eval()\n"
        "ref, _ = b.load_method('runs/demo')\n"
        "x = torch.randn(2, 3, 32, 32)\n"
        "with torch.no_grad(): d = (m(x) - ref.embed(x)['pooled']).abs().max().item()\n"
        "assert d < 1e-5, d\nprint('ok', d)\n"
    )
    res = subprocess.run([sys.executable, "-c", check], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr[-2000:]
    assert "knn_top1" in (work / "export" / "demo" / "README.md").read_text()
