"""User errors as one ``error: ...`` line: the exception classes each command may raise and their exit status.

Configuration and argument errors exit with 2 (like argparse): a bad key or value, a missing file a flag names, an
unknown backbone, a refused run folder, a busy port. Data and checkpoint faults exit with 1: a missing, truncated or
corrupt checkpoint, too many unreadable images, a file that is not an image, non-finite losses. Anything else is a
bug and keeps its traceback; ``SSL_ART_TRACEBACK=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from ssl_art.config import ConfigError


class UsageError(ConfigError):
    """A command-line argument is wrong (raised by :class:`Parser` instead of argparse's usage + exit)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` (one line, the command's ``--help`` named)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _config_errors() -> tuple[type[BaseException], ...]:
    from ssl_art.engine.rundir import RunDirError

    return (ConfigError, RunDirError, FileExistsError, FileNotFoundError, NotADirectoryError, ValueError)


def _data_errors() -> tuple[type[BaseException], ...]:
    from PIL import UnidentifiedImageError

    from ssl_art.checkpoint import CheckpointError
    from ssl_art.data.decode import TooManyBadFilesError
    from ssl_art.engine.loop import NonFiniteLossError

    return (CheckpointError, TooManyBadFilesError, NonFiniteLossError, UnidentifiedImageError)


def message(e: BaseException) -> str:
    """The one-line text of a user error, with the fix named where the exception alone does not."""
    from PIL import UnidentifiedImageError

    text = str(e).strip().replace("\n", " ")
    if isinstance(e, UnidentifiedImageError):
        text += "; give image files (jpg, png, webp, ...) or folders of them"
    if isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in text:
        text = f"{text}: {e.filename}"
    return text


def guarded(fn: Callable[[], int]) -> int:
    """Run ``fn``; a user error prints one ``error: ...`` line on stderr and returns 2 (config) or 1 (data)."""
    try:
        return fn()
    except _data_errors() as e:
        if os.environ.get("SSL_ART_TRACEBACK"):
            raise
        print(f"error: {message(e)}", file=sys.stderr)
        return 1
    except _config_errors() as e:
        if os.environ.get("SSL_ART_TRACEBACK"):
            raise
        print(f"error: {message(e)}", file=sys.stderr)
        return 2
