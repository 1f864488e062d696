"""``ssl-art export RUN --format timm|safetensors|onnx --out DIR``: the trained backbone for other tools.

``timm`` (default): ``model.safetensors`` + ``config.json`` + ``README.md``, loadable with ``timm.create_model``.
``safetensors``: the backbone's state dict alone (what ``model.init_checkpoint`` takes) + ``README.md``.
``onnx``: the embedder (``--embedding pooled|fused|gram``, default the method's) as ``embedder.onnx``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ssl_art.config.choices import EMBEDDINGS


def _cmd_export(args: argparse.Namespace) -> None:
    if args.format == "onnx":
        from ssl_art.export import export_onnx

        print(json.dumps(export_onnx(args.run, args.out, args.embedding)))
        return
    from ssl_art.export import export_timm

    res = export_timm(args.run, args.out)
    if args.format == "safetensors":
        from safetensors.torch import load_file

        Path(res.pop("config")).unlink()  # raw state dict only: model.safetensors (+ README.md)
        res["tensors"] = str(len(load_file(res["weights"])))
    print(json.dumps(res))


def add_parsers(sub: Any) -> None:
    """Add ``export`` to ``sub``."""
    summary = "export a pretraining run's backbone: timm/safetensors weights + model card, or the ONNX embedder"
    p = sub.add_parser(
        "export", help=summary, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", help="pretraining run folder or checkpoint (.pt)")
    p.add_argument("--format", default="timm", choices=("timm", "safetensors", "onnx"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--embedding", default="auto", choices=EMBEDDINGS, help="onnx only")
    p.set_defaults(func=_cmd_export)
