"""Loading configs: YAML files (with ``_base_``), dotted CLI overrides and strict, typed dataclass building.

``load_config(PretrainConfig, ["--config", "configs/pretrain/simclr.yaml", "optim.lr=0.1"])`` merges the dataclass
defaults, the YAML file and the overrides, in that order. Unknown keys and values of the wrong type raise
:class:`~ssl_art.config.schema.ConfigError` naming the key and the valid choices, so a typo never silently trains
the wrong model (the nanoGPT configurator idea, made strict and nested). ``--help`` lists every key with its default.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ssl_art.config.choices import _CHOICES
from ssl_art.config.schema import ConfigError
from ssl_art.config.validate import validate


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans, which
    would turn ``run.amp=off`` into ``False``."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


_SCI_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        elem = args[0]
        return tuple(_coerce(key, v, elem) for v in value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string; on the command line it means a float
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str and value is None:
        return ""
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # data.path=2024: a folder named by a number is still a path
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from a nested dict, strictly."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{full}'.{hint} Valid keys: {', '.join(prefix + n for n in names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a section (mapping), got {value!r}")
            kwargs[key] = _build(tp, value, prefix=f"{full}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(full, value, tp)
            if full in _CHOICES and kwargs[key] not in _CHOICES[full]:
                raise ConfigError(f"{full}: {value!r} is not one of {', '.join(_CHOICES[full])}")
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, recursively for nested mappings; neither input is modified."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "model.gram.layers=[1,2]"]`` -> nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. optim.lr=0.1)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}': '{key}' is not a dotted key (e.g. optim.lr=0.1)")
        try:
            value = _yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw  # not YAML: take it as a plain string (type-checked against the field later)
        _set_dotted(tree, key, value)
    return tree


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Strictly build ``cls`` from a (possibly partial) nested dict; missing keys keep their defaults."""
    return _build(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config, for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    result: dict[str, Any] = plain(dataclasses.asdict(cfg))
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; ``_base_: other.yaml`` (relative path) is merged underneath."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = _yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).split("\n")[0]
        raise ConfigError(
            f"{p}: YAML syntax error{where}: {problem}; fix the file (sections as 'key: value', lists as [a, b])"
        ) from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base:
        data = deep_merge(load_yaml(p.parent / base), data)
    return data


def load_config(cls: type[T], argv: list[str] | None = None, description: str = "") -> T:
    """Parse ``--config FILE`` and ``key=value`` overrides into ``cls``; ``--help`` lists every key with its default.

    The help is :func:`ssl_art.config.help.options_help` of ``cls()``: this config's real defaults and the schema's
    comments (``ssl-art`` stages use the same text, limited to the keys each stage reads).
    """
    from ssl_art.config.help import options_help  # help reads this module's choice table

    parser = argparse.ArgumentParser(
        description=description or cls.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=options_help(cls()),
    )
    parser.add_argument("--config", default="", help="YAML config file (keys as below)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    try:
        values: dict[str, Any] = load_yaml(args.config) if args.config else {}
        values = deep_merge(values, parse_overrides(args.overrides))
        cfg = _build(cls, values)
        validate(cfg)
        return cfg
    except ConfigError as e:
        parser.error(str(e))  # usage + one clear message, exit status 2 (no traceback)
        raise  # unreachable; keeps type checkers happy


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (next to every run)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
