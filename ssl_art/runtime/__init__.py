"""ssl_art.runtime: leaf helpers every room may import (device and AMP, seeding and RNG state, logging, schedules,
user-facing errors and the one-line CLI wrapper).

Nothing here imports a model, a method, data or the engine, so evaluation, fine-tuning and serving share these
helpers without pulling in the training loop. ``device`` picks the device and autocast dtype, ``seeding`` seeds and
snapshots every RNG, ``logs`` sets up the ``ssl_art`` logger tree, ``schedules`` holds the pure per-step schedules,
``errors`` the exception types a user can cause and ``cli`` maps them to one ``error:`` line and an exit status.
"""
