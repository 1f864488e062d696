"""Self-supervised pretraining: ``python main_pretrain.py --config configs/pretrain/simclr.yaml [key=value ...]``.

Methods: ``simclr`` (baseline) and ``art_ssl`` (multi-scale fusion + EMA self-distillation + soft positives +
learnable Gram style head). ``--help`` lists every option with its default. Resume with ``run.resume=true``.
"""

from __future__ import annotations

import sys

from ssl_art.config import PretrainConfig, load_config
from ssl_art.engine.pretrain import run_pretrain
from ssl_art.runtime.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(PretrainConfig, argv, description=__doc__)
    result = run_pretrain(cfg)
    return 143 if result.stopped == "signal" else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))  # user errors: one "error: ..." line, no traceback
