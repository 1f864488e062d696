"""Every user error on every ``ssl-art`` command is one ``error:`` line naming the fix, with status 2 or 1.

Table-driven: (command line, expected status, expected message). Status 2 = configuration/arguments, 1 = data or
checkpoint. Each case runs in-process through :func:`ssl_art.cli.main` (the console script's function) and checks
that stderr holds exactly one ``error:`` line, no traceback, and (for training stages) that no run folder was left.
A couple of cases run as real processes. Before issue 15 most of these were tracebacks.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssl_art.cli import main

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "--device", "cpu", "data.synthetic_size=24", "data.batch_size=8", "data.num_workers=0", "data.image_size=32",
    "data.synthetic_image_size=32",
]  # fmt: skip

LIN = [*FAST, "eval.folds=2", "eval.knn_k=5"]
BB = "unknown timm backbone 'resnet99'"


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def ctx(
    tmp_path: Path, pretrain_run: Path, truncated_ckpt: Path, index_dir: Path, image_tree: Path, busy_port: int
) -> dict[str, str]:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("optim:\n  lr: [0.1,\n")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    return {
        "out": str(tmp_path / "out"),
        "run": str(pretrain_run),
        "trunc": str(truncated_ckpt),
        "missing": str(tmp_path / "nothing" / "last.pt"),
        "idx": str(index_dir),
        "emb": str(index_dir.parent / "emb"),
        "img": str(next(image_tree.rglob("*.png"))),
        "txt": str(text),
        "yaml": str(bad_yaml),
        "busy": str(busy_port),
        "free": str(_free_port()),
    }


# (id, argv template, status, message fragment, out must not exist)
CASES = [
    ("pretrain-yaml", ["pretrain", "--config", "{yaml}", "--out", "{out}"], 2, "YAML syntax error at line 3", True),
    ("linear-yaml", ["linear", "--config", "{yaml}", "--out", "{out}"], 2, "YAML syntax error at line 3", True),
    ("finetune-yaml", ["finetune", "--config", "{yaml}", "--out", "{out}"], 2, "YAML syntax error at line 3", True),
    ("pretrain-preset", ["pretrain", "--config", "simclrr", "--out", "{out}"], 2, "packaged preset (pretrain/", True),
    ("pretrain-key", ["pretrain", "optim.lrr=1", "--out", "{out}"], 2, "Did you mean 'optim.lr'?", True),
    ("pretrain-list", ["pretrain", "model.gram.layers=(2,3)", "--out", "{out}"], 2, "model.gram.layers", True),
    ("pretrain-flag", ["pretrain", "--epochz", "1"], 2, "unrecognized arguments: --epochz", False),
    ("pretrain-backbone", ["pretrain", *FAST, "--backbone", "resnet99", "--out", "{out}"], 2, BB, True),
    ("linear-backbone", ["linear", *LIN, "--backbone", "resnet99", "--out", "{out}"], 2, BB, True),
    ("finetune-backbone", ["finetune", *FAST, "--backbone", "resnet99", "--out", "{out}"], 2, BB, True),
    ("finetune-data", ["finetune", *FAST, "--data", "/no/such/dir", "--out", "{out}"], 2, "data path does not", True),
    ("linear-data", ["linear", *LIN, "eval.train_path=/no/such/dir", "--out", "{out}"], 2, "does not exist", True),
    ("linear-trunc", ["linear", *LIN, "--checkpoint", "{trunc}", "--out", "{out}"], 1, "truncated or corrupt", True),
    ("finetune-trunc", ["finetune", *FAST, "--checkpoint", "{trunc}", "--out", "{out}"], 1, "truncated or", True),
    ("finetune-missing", ["finetune", *FAST, "--checkpoint", "{missing}", "--out", "{out}"], 1, "not found", True),
    ("embed-missing", ["embed", "--collection", "{img}", "--checkpoint", "{missing}", "--out", "{out}"], 1,
     "checkpoint not found", True),
    ("embed-trunc", ["embed", "--collection", "{img}", "--checkpoint", "{trunc}", "--out", "{out}"], 1,
     "truncated or corrupt", True),
    ("embed-size", ["embed", "--collection", "{img}", "--image-size", "-1", "--out", "{out}"], 2,
     "--image-size: must be >= 1, got -1", True),
    ("embed-collection", ["embed", "--collection", "/no/such/dir", "--out", "{out}"], 2, "/no/such/dir", True),
    ("query-missing", ["query", "--index", "{idx}", "--checkpoint", "{missing}", "{img}"], 1, "checkpoint not found",
     False),
    ("query-trunc", ["query", "--index", "{idx}", "--checkpoint", "{trunc}", "{img}"], 1, "truncated or corrupt",
     False),
    ("query-nonimage", ["query", "--index", "{idx}", "--backbone", "resnet10t", "{txt}"], 1,
     "not a recognised image format); give image files", False),
    ("query-k0", ["query", "--index", "{idx}", "{img}", "-k", "0"], 2, "-k: must be >= 1, got 0", False),
    ("query-noindex", ["query", "--index", "{out}", "{img}"], 2, "build one with `ssl-art index build`", False),
    ("query-model", ["query", "--index", "{idx}", "--checkpoint", "{run}", "{img}"], 2, "model", False),
    ("serve-busy", ["serve", "--index", "{idx}", "--port", "{busy}"], 2, "is in use; pick another with --port", False),
    ("serve-k0", ["serve", "--index", "{idx}", "-k", "0"], 2, "-k: must be >= 1", False),
    ("serve-missing", ["serve", "--index", "{idx}", "--checkpoint", "{missing}", "--port", "{free}"], 1,
     "checkpoint not found", False),
    ("serve-trunc", ["serve", "--index", "{idx}", "--checkpoint", "{trunc}", "--port", "{free}"], 1,
     "truncated or corrupt", False),
    ("index-missing", ["index", "build", "--embeddings", "/no/such/emb", "--out", "{out}"], 2, "/no/such/emb", True),
    ("index-nlist", ["index", "build", "--embeddings", "{emb}", "--nlist", "-2", "--out", "{out}"], 2, "--nlist", True),
    ("metrics-k0", ["metrics", "--embeddings", "{emb}", "-k", "0"], 2, "-k: must be >= 1", False),
    ("metrics-missing", ["metrics", "--embeddings", "/no/such/emb"], 2, "/no/such/emb", False),
    ("analyse-dup", ["analyse", "--embeddings", "{emb}", "--dup-threshold", "2", "--out", "{out}"], 2,
     "must be in [0, 1]", True),
    ("plot-missing", ["plot", "map", "--embeddings", "/no/such/emb", "--out", "{out}"], 2, "/no/such/emb", True),
    ("gradcam-missing", ["plot", "gradcam", "--checkpoint", "{missing}", "{img}", "--out", "{out}"], 1, "not found",
     True),
    ("predict-missing", ["predict", "{missing}", "{img}"], 1, "not found", False),
    ("predict-one", ["predict", "{img}"], 2, "give at least one checkpoint and the input", False),
    ("predict-k0", ["predict", "{run}", "{img}", "-k", "0"], 2, "must be >= 1", False),
    ("export-missing", ["export", "{missing}", "--out", "{out}"], 1, "checkpoint not found", True),
    ("export-trunc", ["export", "{trunc}", "--out", "{out}"], 1, "truncated or corrupt", True),
    ("export-kind", ["export", "{run}", "--format", "onnx", "--embedding", "gram", "--out", "{out}"], 2,
     "provides pooled", True),
    ("export-format", ["export", "{run}", "--format", "pickle", "--out", "{out}"], 2, "invalid choice", True),
    ("unknown-command", ["pretrian"], 2, "invalid choice: 'pretrian'", False),
]  # fmt: skip


@pytest.mark.parametrize("name, argv, status, fragment, no_out", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(
    name: str,
    argv: list[str],
    status: int,
    fragment: str,
    no_out: bool,
    ctx: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    filled = [a.format(**ctx) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(filled)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: ") and err.rstrip().endswith(errors[0]), err
    assert fragment in errors[0], errors[0]
    assert e.value.code == status, errors[0]
    if no_out:
        assert not Path(ctx["out"]).exists(), f"{name} left {ctx['out']} behind"


def test_real_processes_print_one_line(tmp_path: Path) -> None:
    """``python main_finetune.py``, ``python -m ssl_art.cli predict`` and the old ``python -m ssl_art.predict`` as
    processes: status and one line on stderr."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: \n  - x\n")
    cases = [
        ([sys.executable, "main_finetune.py", "--config", str(bad), f"run.output_dir={tmp_path / 'o'}"], 2),
        ([sys.executable, "-m", "ssl_art.cli", "predict", str(tmp_path / "none.pt"), str(bad)], 1),
        ([sys.executable, "-m", "ssl_art.predict", str(tmp_path / "none.pt"), str(bad)], 1),  # old style: names the new
    ]
    for cmd, status in cases:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == status, res.stderr
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert not (tmp_path / "o").exists()
