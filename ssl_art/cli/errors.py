"""Command-line argument errors as one line: an ``ArgumentParser`` that raises instead of printing usage and exiting.

:func:`ssl_art.runtime.cli.run_cli` turns the :class:`UsageError` (a ``ConfigError``) into ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from ssl_art.config import ConfigError


class UsageError(ConfigError):
    """A command-line argument is wrong (raised by :class:`Parser` instead of argparse's usage + exit)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` (one line, the command's ``--help`` named)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")
