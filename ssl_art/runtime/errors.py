"""The exception types a user can cause while a run works, shared by every room that raises them.

They live in this leaf (not beside the code that raises them) so :mod:`ssl_art.runtime.cli` can map each to an exit
status without importing data, the engine or anything above them. Configuration errors are
:class:`ssl_art.config.ConfigError` and damaged checkpoints :class:`ssl_art.checkpoint.CheckpointError`, each in its
own leaf.
"""

from __future__ import annotations

__all__ = ["BadInputError", "NonFiniteLossError", "RunDirError", "TooManyBadFilesError"]


class RunDirError(RuntimeError):
    """The output directory cannot be used as asked."""


class NonFiniteLossError(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is kept."""


class TooManyBadFilesError(RuntimeError):
    """More of the collection is unreadable than ``max_bad_fraction`` allows."""


class BadInputError(Exception):
    """A file the user gave cannot be used (not an image, truncated, too large); the data layer's ``BadImageError``."""
