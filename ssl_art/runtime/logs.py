"""Logging for the ``ssl_art`` logger tree: console on rank 0 only, plus a ``train.log`` file in the run dir.

Library code logs through ``logging.getLogger("ssl_art....")`` and never prints; entry points call
:func:`setup_logging` once (again when the run dir exists) so the file mirrors the console.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["setup_logging"]


def setup_logging(out: Path | None = None, rank: int = 0) -> None:
    """Console (rank 0 only) and ``train.log`` logging for the ``ssl_art`` logger tree."""
    root = logging.getLogger("ssl_art")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        root.addHandler(console)
        if out is not None:
            fh = logging.FileHandler(out / "train.log")
            fh.setFormatter(fmt)
            root.addHandler(fh)
    else:  # other ranks stay silent (not even Python's last-resort stderr handler): rank 0 logs every event once
        root.addHandler(logging.NullHandler())
    root.propagate = False
