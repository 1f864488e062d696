"""Property-based tests (hypothesis) of the config loader and the CSV manifest parser.

Config: random well-typed values for every leaf key survive the command line and a YAML round trip exactly; a
wrongly typed value or an unknown key is a :class:`ConfigError` naming that key; any YAML document either loads or
exits with status 2 -- never a traceback. Manifest: random headers, cells, quoting and malformed rows either parse
to what a naive re-implementation expects or raise a ``ValueError`` naming the file; random bytes never crash.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import ssl_art.methods.registry  # noqa: F401  (registers the valid method names)
from ssl_art import config as C
from ssl_art.config import ConfigError, PretrainConfig, config_from_dict, load_config, parse_overrides, save_config
from ssl_art.data.collection import read_manifest

FIXTURE_OK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _leaves(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> annotation for every non-section field of ``cls``."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_leaves(tp, f"{prefix}{f.name}."))  # type: ignore[arg-type]
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


LEAVES = _leaves(PretrainConfig)
_word = st.from_regex(r"[a-z][a-z0-9_/.-]{0,10}", fullmatch=True).filter(lambda s: yaml.safe_load(s) == s)
_float = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _value(key: str, tp: Any) -> st.SearchStrategy[Any]:
    if key in C.registered_choices():
        return st.sampled_from(C.registered_choices()[key])
    if typing.get_origin(tp) is tuple:
        return st.lists(_value(key, typing.get_args(tp)[0]), max_size=3).map(tuple)
    return {bool: st.booleans(), int: st.integers(-(10**9), 10**9), float: _float, str: _word}[tp]


def _render(v: Any) -> str:
    """A value as a user would type it after ``key=`` (floats in repr form, e.g. 1e-05: YAML 1.1 reads a string)."""
    if isinstance(v, tuple):
        return "[" + ", ".join(_render(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


_assignments = st.lists(st.sampled_from(sorted(LEAVES)), min_size=1, max_size=8, unique=True).flatmap(
    lambda keys: st.tuples(*[_value(k, LEAVES[k]) for k in keys]).map(lambda vals: dict(zip(keys, vals)))
)


@FIXTURE_OK
@given(values=_assignments)
def test_typed_values_round_trip_cli_and_yaml(tmp_path: Path, values: dict[str, Any]) -> None:
    cfg = config_from_dict(PretrainConfig, parse_overrides([f"{k}={_render(v)}" for k, v in values.items()]))
    for key, v in values.items():
        got = _get(cfg, key)
        assert got == v and type(got) is type(v), (key, v, got)
    save_config(cfg, tmp_path / "c.yaml")
    again = config_from_dict(PretrainConfig, C.load_yaml(tmp_path / "c.yaml"))
    assert again == cfg


@given(key=st.sampled_from(sorted(LEAVES)), junk=st.sampled_from(["{a: 1}", "{x: [1, 2]}"]))
@settings(max_examples=80, deadline=None)
def test_wrong_type_names_the_key(key: str, junk: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(PretrainConfig, parse_overrides([f"{key}={junk}"]))
    assert str(info.value).startswith(f"{key}: "), str(info.value)


_sections = sorted({k.rsplit(".", 1)[0] + "." if "." in k else "" for k in LEAVES})


@given(section=st.sampled_from(_sections), name=st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True))
@settings(max_examples=80, deadline=None)
def test_unknown_key_is_named_with_valid_keys(section: str, name: str) -> None:
    key = f"{section}{name}"
    assume(key not in LEAVES and not any(k.startswith(key + ".") for k in LEAVES))
    with pytest.raises(ConfigError) as info:
        config_from_dict(PretrainConfig, parse_overrides([f"{key}=1"]))
    msg = str(info.value)
    assert msg.startswith(f"unknown config key '{key}'.") and "Valid keys: " in msg


_scalar = st.one_of(st.none(), st.booleans(), st.integers(), _float, st.text(max_size=8))
_tree = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from([*_sections, "data", "optim", "run", "aug", "lr", "x", "path"]).map(
                lambda s: s.rstrip(".").split(".")[-1] or "method"
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@FIXTURE_OK
@given(doc=_tree)
def test_any_yaml_document_loads_or_exits_cleanly(tmp_path: Path, doc: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(PretrainConfig, ["--config", str(path)])
    except SystemExit as e:
        assert e.code == 2
        assert "error: " in capsys.readouterr().err
        return
    C.validate(cfg)  # whatever loads is also in range


# ---------------------------------------------------------------------------------------------- manifest

_safe_path = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_ .-]{0,8}\.jpg", fullmatch=True)
_any_text = st.text(st.characters(exclude_characters="\ufeff", exclude_categories=["Cs"]), max_size=8)


def _oracle(header: list[str], rows: list[list[str]], base: Path) -> tuple[str, Any]:
    """Naive expectation: ("ok", (paths, labels)) or ("error", what)."""
    names = [h.strip() for h in header]
    if "path" not in names:
        return "error", "no 'path' column"
    if len(set(names)) != len(names) or "" in names:
        return "error", "empty or duplicate column names"
    pcol = names.index("path")
    paths: list[str] = []
    labels: dict[str, list[str | None]] = {n: [] for n in names if n != "path"}
    for row in rows:
        if all(not c.strip() for c in row):
            continue
        if len(row) != len(names):
            return "error", "cells, expected"
        cells = [c.strip() for c in row]
        if not cells[pcol]:
            return "error", "empty 'path' cell"
        paths.append(str((base / cells[pcol]).resolve()))
        for k, n in enumerate(names):
            if k != pcol:
                labels[n].append(cells[k] or None)
    return "ok", (paths, labels)


@FIXTURE_OK
@given(
    labels=st.lists(_any_text, max_size=3),
    header_path=st.sampled_from(["path", " path ", "PATH", None]),
    rows=st.lists(st.tuples(_safe_path, st.lists(_any_text, max_size=4)), max_size=8),
)
def test_manifest_matches_naive_parser(
    tmp_path: Path, labels: list[str], header_path: str | None, rows: list[tuple[str, list[str]]]
) -> None:
    header = ([header_path] if header_path is not None else []) + labels
    assume(header)
    table = [[p, *cells] for p, cells in rows] if header_path is not None else [cells for _, cells in rows]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(table)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(buf.getvalue(), encoding="utf-8")
    status, expected = _oracle(header, table, tmp_path)
    if status == "error":
        with pytest.raises(ValueError) as info:
            read_manifest(str(csv_path))
        assert str(info.value).startswith(str(csv_path)) and expected in str(info.value)
        return
    assert read_manifest(str(csv_path)) == expected


@FIXTURE_OK
@given(header=st.lists(_any_text, min_size=1, max_size=4), rows=st.lists(st.lists(_any_text, max_size=5), max_size=6))
@example(header=["style"], rows=[["~nosuchuser_xyz/a.jpg", "x"]])  # expanduser raises RuntimeError
@example(header=["style"], rows=[["a\x00b.jpg", "x"]])  # embedded NUL in a path
@example(header=["style"], rows=[["a" * 140_000, "x"]])  # csv.Error: field larger than the field limit
def test_manifest_with_arbitrary_cells_never_crashes(tmp_path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Unicode, NUL, quotes, newlines, '~user' paths: a result or a ValueError naming the file, nothing else."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", *header])
    w.writerows(rows)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(buf.getvalue(), encoding="utf-8")
    try:
        paths, labels = read_manifest(str(csv_path))
    except ValueError as e:
        assert str(e).startswith(str(csv_path)), str(e)
        return
    assert all(len(v) == len(paths) for v in labels.values())
    assert all(Path(p).is_absolute() for p in paths)


@FIXTURE_OK
@given(data=st.binary(max_size=200))
def test_manifest_from_random_bytes_never_crashes(tmp_path: Path, data: bytes) -> None:
    csv_path = tmp_path / "m.csv"
    csv_path.write_bytes(data)
    try:
        read_manifest(str(csv_path))
    except ValueError as e:
        assert str(e).startswith(str(csv_path)), str(e)


def test_scientific_floats_on_the_command_line() -> None:
    """``optim.lr=3e-4`` is a float (PyYAML alone reads it as a string); a word is still a named type error."""
    cfg = load_config(PretrainConfig, ["optim.lr=3e-4", "loss.temperature=1E-1", "optim.min_lr=1e-6"])
    assert (cfg.optim.lr, cfg.loss.temperature, cfg.optim.min_lr) == (3e-4, 0.1, 1e-6)
    with pytest.raises(ConfigError, match="optim.lr: expected float, got str '3e'"):
        config_from_dict(PretrainConfig, parse_overrides(["optim.lr=3e"]))
