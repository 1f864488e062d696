"""``ssl-art``: one command line for every stage, installed by pip (``ssl-art --help`` lists the subcommands).

``pretrain``, ``linear`` and ``finetune`` take ``--config`` (packaged preset or file), dotted ``key=value``
overrides and flag aliases (:mod:`ssl_art.cli.stages`); ``predict`` (:mod:`ssl_art.cli.predict`); ``embed``,
``index``, ``query``, ``analyse``, ``metrics``, ``plot`` and ``serve`` (:mod:`ssl_art.cli.retrieval`); ``export``
(:mod:`ssl_art.cli.export`). Every user error is one ``error: ...`` line with exit status 2 (configuration) or 1
(data, checkpoints) (:mod:`ssl_art.cli.errors`). Only this package reads argparse; library code raises.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import ssl_art
from ssl_art.cli import export as export_cmd
from ssl_art.cli import predict as predict_cmd
from ssl_art.cli import retrieval
from ssl_art.cli.errors import Parser
from ssl_art.cli.stages import STAGES, main_for
from ssl_art.runtime.cli import run_cli

DESCRIPTION = "ssl_art: self-supervised representation learning for art (pretrain, evaluate, fine-tune, retrieve)."
EXAMPLES = """examples (the packaged synthetic collection: no download, CPU minutes):
  ssl-art pretrain --config demo --out runs/demo                  # SimCLR on 1400 synthetic artworks
  ssl-art linear --checkpoint runs/demo --out runs/demo/eval      # kNN + linear probe vs random init
  ssl-art finetune --config finetune/tiny --checkpoint runs/demo --out runs/ft
  ssl-art predict runs/ft photo.jpg -k 3                          # top-3 labels
  ssl-art export runs/demo --format timm --out export/demo        # timm.create_model(..., pretrained=True)
  ssl-art export runs/demo --format onnx --out export/demo-onnx   # the embedder for onnxruntime
retrieval on a folder of images:
  ssl-art embed --collection photos/ --checkpoint runs/demo --out emb/demo
  ssl-art index build --embeddings emb/demo --out idx/demo
  ssl-art query --index idx/demo --checkpoint runs/demo photo.jpg -k 8 --grid grid.png
  ssl-art analyse --embeddings emb/demo --out analysis/demo
  ssl-art metrics --embeddings emb/demo -k 10
  ssl-art plot map --embeddings emb/demo --out umap.png
  ssl-art serve --index idx/demo --checkpoint runs/demo --port 8000
`ssl-art COMMAND --help` shows each command's options; pretrain/linear/finetune list every key with its default.
"""


def _global_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--version", action="version", version=f"ssl-art {ssl_art.__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument(
        "--threads", type=retrieval.nonneg_int, default=0,
        help="cap FAISS OpenMP, BLAS and torch threads (0 = library defaults); 1 is fastest for single queries "
        "on a busy machine (docs/benchmarks_retrieval.md)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``ssl-art`` argument parser (exposed for tests and docs)."""
    fmt = argparse.RawDescriptionHelpFormatter
    ap = Parser("ssl-art", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=fmt)
    _global_options(ap)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for stage in STAGES.values():  # parsed by stages.main_for (intermixed flags and key=value); listed here for help
        sub.add_parser(stage.name, help=stage.summary, add_help=False)
    predict_cmd.add_parsers(sub)
    retrieval.add_parsers(sub)
    export_cmd.add_parsers(sub)
    return ap


def set_threads(n: int) -> None:
    """Cap every thread pool retrieval uses at ``n``: FAISS's OpenMP, the BLAS libraries (threadpoolctl), torch."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(n)
    threadpool_limits(n)  # applied now, kept for the process (not used as a context manager)
    torch.set_num_threads(n)


def _split_global(argv: list[str]) -> tuple[list[str], list[str]]:
    """Leading global options (``-v``, ``--threads N``) and the rest (``COMMAND ...``)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-h", "--help", "--version"):
        i += 2 if argv[i] == "--threads" else 1
    return argv[:i], argv[i:]


def _dispatch(argv: list[str]) -> int:
    front, rest = _split_global(argv)
    if rest and rest[0] in STAGES:
        gp = Parser("ssl-art")
        _global_options(gp)
        _setup(gp.parse_args(front))
        return main_for(rest[0], rest[1:])
    args = build_parser().parse_args(argv)
    _setup(args)
    out: Any = args.func(args)
    return int(out or 0)


def _setup(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.INFO
    if os.environ.get("RANK", "0") not in ("", "0"):  # under torchrun only rank 0 reports progress
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    # faiss-cpu >= 1.12 wheels are one dynamic-dispatch build; the loader still probes the old per-ISA modules and
    # logs harmless "Could not load" lines
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.threads:
        set_threads(args.threads)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``ssl-art``: returns 0, or raises ``SystemExit`` with 1 (data, checkpoint) or 2 (config).

    A failed command has already printed its one ``error: ...`` line; ``SystemExit`` (as argparse does) lets
    callers in the same process tell failure from success without parsing stderr.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    code = run_cli(lambda: _dispatch(argv))
    if code:
        raise SystemExit(code)
    return 0


__all__ = ["EXAMPLES", "build_parser", "main", "set_threads"]
