"""Self-supervised pretraining: ``ssl-art pretrain --config simclr [key=value ...]`` (this script is the same command).

Methods: ``simclr`` (baseline) and ``art_ssl`` (multi-scale fusion + EMA self-distillation + soft positives +
learnable Gram style head). ``--help`` lists every option with its default. Resume with ``run.resume=true``.
"""

from __future__ import annotations

import sys

from ssl_art.cli.stages import main_for
from ssl_art.runtime.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    """``ssl-art pretrain ARGS`` (user errors raise here; run as a script they are one ``error:`` line)."""
    return main_for("pretrain", argv, prog="main_pretrain.py")


if __name__ == "__main__":
    sys.exit(run_cli(main))
