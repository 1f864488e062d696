"""The one-line CLI wrapper: a user-facing error becomes ``error: ...`` on stderr and an exit status, not a traceback.

Every exception type it maps is imported from a leaf (:mod:`ssl_art.config`, :mod:`ssl_art.checkpoint`,
:mod:`ssl_art.runtime.errors`), so wrapping an entry point pulls in no model, data or engine code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ssl_art import distributed
from ssl_art.checkpoint import CheckpointError
from ssl_art.config import ConfigError
from ssl_art.runtime.errors import NonFiniteLossError, RunDirError, TooManyBadFilesError

__all__ = ["run_cli"]


def run_cli(main: Callable[[], int]) -> int:
    """Run an entry point; a user-facing error becomes one ``error: ...`` line on stderr instead of a traceback.

    Configuration and argument errors (bad values, missing files, a refused run dir) exit with status 2 like
    argparse; data and numerical faults that stop a run (too many bad files, non-finite losses, a corrupt
    checkpoint) exit with 1. Anything else is a bug and keeps its traceback. Under ``torchrun`` only rank 0 prints
    the line: every rank stops with the same error (decisions are global, and a one-rank failure is shared with
    :func:`ssl_art.distributed.raise_together`), so one event gives one line.
    """
    try:
        return main()
    except (ConfigError, RunDirError, FileExistsError, FileNotFoundError) as e:
        _print_error(e)
        return 2
    except (TooManyBadFilesError, NonFiniteLossError, CheckpointError) as e:
        _print_error(e)
        return 1


def _print_error(e: BaseException) -> None:
    rank = distributed.rank() if distributed.is_initialized() else int(os.environ.get("RANK", "0") or 0)
    if rank == 0:
        print(f"error: {e}", file=sys.stderr)
