"""The model card (``README.md``) written next to an export: data, method, epochs, held-in metrics, the command.

Metrics are the held-in numbers the run folder already holds (``metrics.json`` / ``eval/metrics.json`` of
``ssl-art linear``, ``summary.json`` of fine-tuning); nothing is recomputed here. The command is the run's
``command.txt`` (written by ``ssl-art``) or, failing that, the command that reproduces the stored ``config.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssl_art.config import PretrainConfig

METRIC_FILES = ("metrics.json", "eval/metrics.json", "summary.json")


def run_folder(path: str | Path) -> Path:
    """The run folder of a run folder or of a checkpoint inside ``<run>/checkpoints/``."""
    p = Path(path)
    if p.is_dir():
        return p
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def held_in_metrics(run: Path) -> dict[str, Any]:
    """Scalar metrics found in the run folder (``{file: {name: value}}``), empty when there are none."""
    out: dict[str, Any] = {}
    for name in METRIC_FILES:
        f = run / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        flat = {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if flat:
            out[name] = flat
    return out


def made_by(run: Path) -> str:
    """The command that made the run (``command.txt``), else one that reproduces its ``config.yaml``."""
    f = run / "command.txt"
    if f.is_file():
        return f.read_text().strip()
    return f"ssl-art pretrain --config {run / 'config.yaml'}"


def trained(run: Path, cfg: PretrainConfig) -> str:
    """``optim.epochs`` as configured, and what the run's ``summary.json`` says was trained."""
    text = f"{cfg.optim.epochs} configured"
    f = run / "summary.json"
    try:
        s = json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        s = {}
    if "steps" in s and "epochs" in s:
        text += f"; trained {s['steps']} steps ({float(s['epochs']):.3g} epochs)"
    return text


def model_card(cfg: PretrainConfig, run: Path, arch: str, files: list[str]) -> str:
    """Markdown model card of an exported backbone."""
    data = cfg.data.path or f"the packaged synthetic art collection ({cfg.data.synthetic_size} images)"
    metrics = held_in_metrics(run)
    lines = [
        f"# {arch}: ssl_art `{cfg.method}` backbone",
        "",
        f"Backbone weights only (no projection head), exported by `ssl-art export` from `{run}`.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{arch}` (timm) |",
        f"| method | `{cfg.method}` |",
        f"| data | {data} |",
        f"| image size | {cfg.data.image_size} |",
        f"| epochs | {trained(run, cfg)} |",
        f"| files | {', '.join(f'`{f}`' for f in files)} |",
        "",
        "## Held-in metrics",
        "",
    ]
    if metrics:
        for name, vals in metrics.items():
            lines.append(f"`{name}`: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(vals.items())))
            lines.append("")
    else:
        lines += ["None in the run folder (run `ssl-art linear --checkpoint RUN` to measure kNN / linear probe).", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import timm",
        'model = timm.create_model("local-dir:PATH_TO_THIS_FOLDER", pretrained=True)  # reads config.json',
        "# or, with the weights file alone:",
        f'model = timm.create_model("{arch}", pretrained=True, num_classes=0,',
        '                          pretrained_cfg_overlay=dict(file="model.safetensors"))',
        "```",
        "",
        "## Made by",
        "",
        "```",
        made_by(run),
        "```",
        "",
    ]
    return "\n".join(lines)
