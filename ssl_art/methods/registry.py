"""The pretraining-method registry: each method name maps to the function that builds it from a ``PretrainConfig``.

Registering a method is one entry in :data:`METHODS` (or one :func:`register_method` call from outside the
package): ``"name": module.from_config``. ``from_config`` lives in the method's own file and is the one place its
options become constructor keyword arguments: the ``model.*`` parts it uses, its own loss options,
``data.image_size`` and ``dist.gather``. Adding a method is therefore one file, one line here, and its options.

How a method owns its options: a new method gets a frozen dataclass section of its own in
:mod:`ssl_art.config.schema` (a field of ``PretrainConfig``), read only by its ``from_config``. The two built-in
methods share the ``loss`` section, kept as it is so existing YAML, overrides and stored checkpoint configs load
unchanged: ``simclr`` reads only ``loss.temperature``, ``art_ssl`` reads every ``loss.*`` field (each field's comment
in :class:`~ssl_art.config.LossCfg` says so).

The valid values of ``method`` come from here: the registry pushes its names into the config's choice table with
:func:`ssl_art.config.register_choices`, so the config stays a leaf that imports no method, and ``method=byol``
fails on load with the registered names. :func:`build_pretrain_model` checks again, for configs built before a
method was unregistered or without importing the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from ssl_art.config import ConfigError, PretrainConfig, register_choices
from ssl_art.methods import art_ssl, simclr
from ssl_art.methods.base import PretrainMethod

__all__ = ["METHODS", "MethodBuilder", "build_pretrain_model", "register_method", "unregister_method"]

MethodBuilder = Callable[[PretrainConfig], PretrainMethod]

METHODS: dict[str, MethodBuilder] = {
    "simclr": simclr.from_config,
    "art_ssl": art_ssl.from_config,
}


def _publish() -> None:
    register_choices("method", tuple(METHODS))


def register_method(name: str, builder: MethodBuilder) -> None:
    """Add a method from outside the package (plugins, tests); ``method=name`` becomes valid in every config.

    Raises:
        ValueError: ``name`` is already registered.
    """
    if name in METHODS:
        raise ValueError(f"method '{name}' is already registered (have {', '.join(METHODS)})")
    METHODS[name] = builder
    _publish()


def unregister_method(name: str) -> None:
    """Remove a method added by :func:`register_method` (its name stops being a valid ``method``).

    Raises:
        KeyError: ``name`` is not registered.
    """
    del METHODS[name]
    _publish()


def build_pretrain_model(cfg: PretrainConfig) -> PretrainMethod:
    """The pretraining method named by ``cfg.method``, built by its registry entry.

    Raises:
        ConfigError: no method of that name is registered (the message lists those that are).
    """
    if cfg.method not in METHODS:
        raise ConfigError(f"method: {cfg.method!r} is not one of {', '.join(METHODS)}")
    return METHODS[cfg.method](cfg)


_publish()
