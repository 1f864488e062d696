"""Packaged config presets: ``--config simclr``, ``--config pretrain/simclr`` or a path, in a clone or a pip install.

The YAML presets have one home, the repository's ``configs/`` folder; ``setup.py`` installs that folder as the
package data ``ssl_art/configs/`` so an installed ``ssl-art`` finds the same files with no clone on the path.
:func:`resolve_config` accepts an existing file, a preset name (looked up first in the command's stage folder), or a
``configs/...`` path that does not exist locally (README commands run from any folder).
"""

from __future__ import annotations

from pathlib import Path

from ssl_art.config.schema import ConfigError

_PKG = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The presets folder: ``ssl_art/configs`` when installed, else the clone's ``configs/``."""
    installed = _PKG / "configs"
    return installed if installed.is_dir() else _PKG.parent / "configs"


def list_presets(stage: str = "") -> list[str]:
    """Preset names (``pretrain/simclr``, ``tiny``) under :func:`config_dir`, those of ``stage`` first."""
    root = config_dir()
    names = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
    return sorted(names, key=lambda n: (not n.startswith(f"{stage}/"), n)) if stage else names


def resolve_config(name: str, stage: str = "") -> Path:
    """The YAML file meant by ``name``: an existing path, else a packaged preset (``simclr`` in ``stage``'s folder).

    Raises:
        ConfigError: naming the presets there are.
    """
    p = Path(name)
    if p.is_file():
        return p
    root = config_dir()
    rel = name.removeprefix("./").removeprefix("configs/")
    stem = rel[: -len(".yaml")] if rel.endswith(".yaml") else rel
    candidates = ([root / stage / f"{stem}.yaml"] if stage else []) + [root / f"{stem}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    shown = ", ".join(list_presets(stage)[:12])
    raise ConfigError(f"config file not found: {name}; give a YAML path or a packaged preset ({shown})")
