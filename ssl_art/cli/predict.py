"""``ssl-art predict CKPT [CKPT ...] INPUT``: top-k labels of fine-tuned checkpoints as CSV or JSON.

A thin wrapper of :func:`ssl_art.predict.predict` (soft-voted ensembles, gated routing reported per image);
The old ``python -m ssl_art.predict`` prints one line naming this command.
"""

from __future__ import annotations

import argparse
from typing import Any

from ssl_art.cli.errors import UsageError
from ssl_art.cli.retrieval import positive_int, resolve_device


def _cmd_predict(args: argparse.Namespace) -> None:
    from ssl_art.predict import predict, top_k_rows, write_rows

    if len(args.checkpoints) < 2:
        raise UsageError("give at least one checkpoint and the input (image, folder or CSV)")
    *ckpts, source = args.checkpoints
    device = str(resolve_device(args.device))
    pred = predict(ckpts, source, args.batch_size, args.weighting, device)
    write_rows(top_k_rows(pred, args.topk), args.out, args.topk)


def add_parsers(sub: Any) -> None:
    """Add ``predict`` to ``sub``."""
    summary = "top-k labels of fine-tuned checkpoints (soft-voted) for an image, folder or CSV"
    p = sub.add_parser("predict", help=summary, description=summary)
    p.add_argument("checkpoints", nargs="+", help="fine-tune checkpoints (.pt) or run folders, then the input")
    p.add_argument("-k", "--topk", dest="topk", type=positive_int, default=5, help="labels per head and image")
    p.add_argument("--out", default="-", help="output .csv or .json file; '-' = CSV on stdout")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--weighting", default="uniform", choices=("uniform", "val"), help="ensemble weights")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | mps")
    p.set_defaults(func=_cmd_predict)
