"""Frozen-feature evaluation: ``ssl-art linear --checkpoint RUN_DIR`` (this script is the same command).

Extracts frozen features of ``eval.train_path`` (and ``eval.eval_path`` when set, else stratified k-fold CV) with the
checkpoint's model, then reports FAISS kNN (weighted vote) and linear-probe top-1/top-5 beside a randomly initialised
model of the same architecture. Writes ``<run.output_dir>/metrics.json`` and the resolved ``config.yaml`` and prints
a table. ``--help`` lists every option with its default.
"""

from __future__ import annotations

import sys

from ssl_art.cli.stages import main_for
from ssl_art.runtime.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    """``ssl-art linear ARGS`` (user errors raise here; run as a script they are one ``error:`` line)."""
    return main_for("linear", argv, prog="main_linear.py")


if __name__ == "__main__":
    sys.exit(run_cli(main))
