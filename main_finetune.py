"""Fine-tune a pretrained backbone on a small labelled collection, optionally with the gated two-branch head.

``python main_finetune.py --config configs/finetune/wikiart7.yaml ft.checkpoint=runs/simclr ft.mode=full``

Makes (or reuses) a seeded stratified split saved as ``<run.output_dir>/splits.json``, trains with model selection
on val, evaluates the selected model once on test (``test.json``, confusion PNGs, TensorBoard under ``tb/``) and,
with ``gate.enabled=true``, trains the gate and writes the measured gated / expensive-only / cheap-only comparison
(``gate_compare.json``). A killed run continues exactly with ``run.resume=true``. ``--help`` lists every option with
its default.
"""

from __future__ import annotations

import sys

import ssl_art.finetune  # noqa: F401  (registers the ft.* choices before the config is checked)
from ssl_art.config import FinetuneConfig, load_config
from ssl_art.finetune.run import run_finetune
from ssl_art.runtime.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(FinetuneConfig, argv, description=__doc__)
    run_finetune(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))  # user errors: one "error: ..." line, no traceback
