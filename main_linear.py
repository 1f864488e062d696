"""Frozen-feature evaluation: ``python main_linear.py --config configs/linear/default.yaml eval.checkpoint=RUN_DIR``.

Extracts frozen features of ``eval.train_path`` (and ``eval.eval_path`` when set, else stratified k-fold CV) with the
checkpoint's model, then reports FAISS kNN (weighted vote) and linear-probe top-1/top-5 beside a randomly initialised
model of the same architecture. Writes ``<run.output_dir>/metrics.json`` and the resolved ``config.yaml`` and prints
a table. ``--help`` lists every option with its default.
"""

from __future__ import annotations

import sys

from ssl_art.config import LinearConfig, load_config
from ssl_art.eval.run import run_linear_eval
from ssl_art.runtime.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(LinearConfig, argv, description=__doc__)
    run_linear_eval(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))  # user errors: one "error: ..." line, no traceback
