"""Run directories: refuse to overwrite a finished run by accident, and write the resolved config into each one.

A new run refuses to write into a non-empty output directory unless ``run.resume`` or ``run.overwrite`` is set, so
results are never overwritten by accident. The resolved config is written as ``config.yaml`` in every run dir.
Device, seeding, logging and the CLI wrapper live in the leaf package :mod:`ssl_art.runtime`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from ssl_art.runtime.errors import RunDirError

__all__ = ["check_run_dir", "prepare_run_dir"]


def check_run_dir(output_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work starts, a non-empty ``output_dir`` unless ``resume`` or ``overwrite`` is asked.

    Raises:
        RunDirError: naming the three ways out.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"run.output_dir={out} is a file, not a folder; choose another run.output_dir")
    if out.exists() and any(out.iterdir()) and not resume and not overwrite:
        raise RunDirError(
            f"output dir {out} already holds a run. Use run.resume=true to continue it, "
            f"run.overwrite=true to replace it, or choose another run.output_dir."
        )
    if out.exists() and any(out.iterdir()) and overwrite and not resume and not (out / "config.yaml").is_file():
        raise RunDirError(
            f"run.overwrite=true only replaces an ssl_art run (a folder with config.yaml); {out} holds other files. "
            "Choose another run.output_dir or empty it yourself."
        )


def prepare_run_dir(output_dir: str, resume: bool, overwrite: bool, config: dict[str, Any]) -> Path:
    """Create (or reuse, on resume) the run directory and write the resolved ``config.yaml``.

    Raises:
        RunDirError: see :func:`check_run_dir`.
    """
    out = Path(output_dir)
    check_run_dir(output_dir, resume, overwrite)
    if out.exists() and any(out.iterdir()) and not resume:
        shutil.rmtree(out)  # run.overwrite=true (check_run_dir refused everything else)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out
