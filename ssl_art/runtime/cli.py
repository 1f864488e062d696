"""The one-line CLI wrapper: a user-facing error becomes ``error: ...`` on stderr and an exit status, not a traceback.

Configuration and argument errors exit with 2 (like argparse): a bad key or value, a missing file a flag names, an
unknown backbone, a refused run folder, a busy port. Data and checkpoint faults exit with 1: a missing, truncated or
corrupt checkpoint, too many unreadable images, a file that is not an image, non-finite losses. Anything else is a
bug and keeps its traceback; ``SSL_ART_TRACEBACK=1`` shows the traceback of user errors too. Under ``torchrun``
only rank 0 prints the line: every rank stops with the same error (stop decisions are global, and a one-rank failure
is shared with :func:`ssl_art.distributed.raise_together`), so one event gives one line.

Every exception type it maps is imported from a leaf (:mod:`ssl_art.config`, :mod:`ssl_art.checkpoint`,
:mod:`ssl_art.runtime.errors`), so wrapping an entry point pulls in no model, data or engine code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from PIL import UnidentifiedImageError

from ssl_art import distributed
from ssl_art.checkpoint import CheckpointError
from ssl_art.config import ConfigError
from ssl_art.runtime.errors import BadInputError, NonFiniteLossError, RunDirError, TooManyBadFilesError

__all__ = ["CONFIG_ERRORS", "DATA_ERRORS", "message", "run_cli"]

CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    RunDirError,
    FileExistsError,
    FileNotFoundError,
    NotADirectoryError,
    ValueError,
)
DATA_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    TooManyBadFilesError,
    NonFiniteLossError,
    UnidentifiedImageError,
    BadInputError,
)


def message(e: BaseException) -> str:
    """The one-line text of a user error, with the fix named where the exception alone does not."""
    text = str(e).strip().replace("\n", " ")
    if isinstance(e, (UnidentifiedImageError, BadInputError)):
        text += "; give image files (jpg, png, webp, ...) or folders of them"
    if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in text:
        text = f"{text}: {e.filename}"
    return text


def run_cli(main: Callable[[], int]) -> int:
    """Run an entry point; a user error prints one ``error: ...`` line on stderr and returns 1 (data) or 2 (config)."""
    try:
        return main()
    except DATA_ERRORS as e:
        if os.environ.get("SSL_ART_TRACEBACK"):
            raise
        _print_error(e)
        return 1
    except CONFIG_ERRORS as e:
        if os.environ.get("SSL_ART_TRACEBACK"):
            raise
        _print_error(e)
        return 2


def _print_error(e: BaseException) -> None:
    rank = distributed.rank() if distributed.is_initialized() else int(os.environ.get("RANK", "0") or 0)
    if rank == 0:
        print(f"error: {message(e)}", file=sys.stderr)
