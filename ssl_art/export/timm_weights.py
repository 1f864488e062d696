"""The backbone alone as timm weights: ``model.safetensors`` + ``config.json`` (timm's ``pretrained_cfg``) + card.

Written with timm's own ``save_for_hf`` (``safe_serialization=True``), so the folder loads as any timm hub checkpoint:
``timm.create_model(arch, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=".../model.safetensors"))``.
The ``pretrained_cfg`` records ssl_art's eval preprocessing (input size, ImageNet mean/std, centre crop), so
``timm.data.resolve_data_config`` rebuilds the transform the model was evaluated with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssl_art.config import PretrainConfig
from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ssl_art.export.card import model_card, run_folder


def load_run(path: str) -> tuple[Any, PretrainConfig]:
    """The pretraining method (eval mode, CPU) and config of a run folder or checkpoint."""
    from ssl_art.methods.load import load_method

    method, cfg = load_method(path)
    return method, cfg


def export_timm(path: str, out: str | Path, card: bool = True) -> dict[str, str]:
    """Write ``model.safetensors`` + ``config.json`` (+ ``README.md``) of the run's backbone into ``out``.

    Returns:
        ``{"dir", "arch", "weights", "config"}`` (and ``"card"``) paths as strings.
    """
    from timm.models import save_for_hf

    method, cfg = load_run(path)
    timm_model = method.backbone.model  # the bare timm model (num_classes=0): no ssl_art key prefixes
    arch = str(method.backbone.name)
    size = cfg.data.image_size
    data_config = {
        "input_size": (3, size, size),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "crop_pct": 1.0,  # ssl_art's eval transform: resize the short side to S, centre-crop S
        "interpolation": "bilinear",
    }
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    model_config = {"pretrained_cfg": {"tag": f"ssl_art_{cfg.method}", "license": "", "origin_url": str(path)}}
    save_for_hf(timm_model, str(dest), model_config, safe_serialization=True, data_config=data_config)
    res = {"dir": str(dest), "arch": arch, "weights": str(dest / "model.safetensors")}
    res["config"] = str(dest / "config.json")
    if card:
        text = model_card(cfg, run_folder(path), arch, ["model.safetensors", "config.json"])
        (dest / "README.md").write_text(text)
        res["card"] = str(dest / "README.md")
    return res
