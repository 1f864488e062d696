"""Fine-tune a pretrained backbone on a small labelled collection, optionally with the gated two-branch head.

``ssl-art finetune --config wikiart7 --checkpoint runs/simclr ft.mode=full`` (this script is the same command)

Makes (or reuses) a seeded stratified split saved as ``<run.output_dir>/splits.json``, trains with model selection
on val, evaluates the selected model once on test (``test.json``, confusion PNGs, TensorBoard under ``tb/``) and,
with ``gate.enabled=true``, trains the gate and writes the measured gated / expensive-only / cheap-only comparison
(``gate_compare.json``). A killed run continues exactly with ``run.resume=true``. ``--help`` lists every option with
its default.
"""

from __future__ import annotations

import sys

from ssl_art.cli.stages import main_for
from ssl_art.runtime.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    """``ssl-art finetune ARGS`` (user errors raise here; run as a script they are one ``error:`` line)."""
    return main_for("finetune", argv, prog="main_finetune.py")


if __name__ == "__main__":
    sys.exit(run_cli(main))
