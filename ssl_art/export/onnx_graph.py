"""The embedder as ONNX: ``(B, 3, S, S)`` normalised images -> ``(B, D)`` embedding (pooled, fused, gram or stats).

Exported with torch's ``dynamo`` ONNX exporter (needs the ``export`` extra: onnx, onnxscript, onnxruntime) with a
dynamic batch axis; :func:`parity` runs the file in onnxruntime beside PyTorch and returns the max abs difference.
Inputs are preprocessed as in ssl_art's eval transform (resize + centre crop to S, ImageNet mean/std).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_art.config import ConfigError
from ssl_art.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class EmbedOne(nn.Module):
    """``method.embed(x)[kind]``: one embedding of an ssl_art method as a plain ``forward``."""

    def __init__(self, method: Any, kind: str):
        super().__init__()
        self.method, self.kind = method, kind

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S) -> (B, D)``."""
        out: Tensor = self.method.embed(x)[self.kind]
        return out


def resolve_embedding(method: Any, kind: str) -> str:
    """``auto`` -> the method's default; other kinds are checked against what the method provides."""
    kind = str(method.default_embedding) if kind == "auto" else kind
    have = sorted(method.embed(torch.zeros(1, 3, 32, 32)).keys())
    if kind not in have:
        raise ConfigError(f"--embedding {kind}: this model provides {', '.join(have)}; choose one of them")
    return kind


def export_onnx(path: str, out: str | Path, kind: str = "auto") -> dict[str, Any]:
    """Write ``embedder.onnx`` (+ ``embedder.json``: kind, input size, mean/std) of the run's method into ``out``."""
    from ssl_art.export.timm_weights import load_run

    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        raise ConfigError("ONNX export needs the export extra: pip install 'ssl_art[export]'") from e
    method, cfg = load_run(path)
    kind = resolve_embedding(method, kind)
    size = cfg.data.image_size
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    model = EmbedOne(method, kind).eval()
    x = torch.randn(2, 3, size, size)
    file = dest / "embedder.onnx"
    quiet = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)  # the exporter's pass-by-pass INFO lines are not for users
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "[torch.onnx] Obtain model graph ..." progress lines
            torch.onnx.export(
                model,
                (x,),
                str(file),
                input_names=["images"],
                output_names=["embedding"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                dynamo=True,
                external_data=False,  # one self-contained file (backbones here are far below ONNX's 2 GB limit)
                verbose=False,
            )
    finally:
        for q, lv in zip(quiet, levels):
            q.setLevel(lv)
    info = {"embedding": kind, "input_size": [3, size, size], "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    (dest / "embedder.json").write_text(json.dumps(info, indent=1))
    return {"dir": str(dest), "onnx": str(file), **info}


def parity(onnx_file: str | Path, model: nn.Module, x: Tensor) -> float:
    """Max abs difference between onnxruntime's and PyTorch's outputs on batch ``x``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    return float(np.abs(got - ref).max())
