"""Config strictness: unknown keys and wrong types are named; every YAML in configs/ loads."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ssl_art.methods.registry  # noqa: F401  (registers the valid method names)
from ssl_art.config import (
    ConfigError,
    LinearConfig,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    load_yaml,
    parse_overrides,
)

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_nested_and_typed():
    cfg = load_config(
        PretrainConfig, ["optim.lr=0.1", "model.gram.layers=[1,2]", "data.aug.preset=art", "optim.epochs=3"]
    )
    assert cfg.optim.lr == 0.1 and cfg.model.gram.layers == (1, 2)
    assert cfg.data.aug.preset == "art" and cfg.optim.epochs == 3


def test_int_accepted_for_float():
    assert load_config(PretrainConfig, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    "override, needle",
    [
        (["optim.lrr=0.1"], "Did you mean 'optim.lr'"),
        (["optim.epochs=abc"], "optim.epochs: expected int"),
        (["run.resume=3"], "run.resume: expected true/false"),
        (["method=byol"], "method: 'byol' is not one of simclr, art_ssl"),
        (["data.aug.preset=fancy"], "not one of simclr, art, none"),
        (["optim=3"], "optim: expected a section"),
        (["nolabel"], "must look like key=value"),
    ],
)
def test_bad_values_are_named(override, needle, capsys):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(PretrainConfig, parse_overrides(override))


def test_cli_error_is_one_clean_message(capsys):
    with pytest.raises(SystemExit) as exc:
        load_config(PretrainConfig, ["optim.lrr=0.1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lrr'" in err and "Traceback" not in err


def test_round_trip_through_dict():
    cfg = load_config(PretrainConfig, ["model.gram.layers=[0,3]", "optim.lr=0.5"])
    assert config_from_dict(PretrainConfig, config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_loads_strictly(path):
    from ssl_art import config as C

    data = load_yaml(path)
    classes = [getattr(C, n) for n in dir(C) if n.endswith("Config") and isinstance(getattr(C, n), type)]
    errors = []
    for cls in classes:
        try:
            config_from_dict(cls, data)
            return
        except ConfigError as e:
            errors.append(str(e))
    pytest.fail(f"{path} matches no config class: {errors}")


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        load_config(LinearConfig, ["--help"])
    out = capsys.readouterr().out
    assert "eval.knn_k=20" in out and "run.output_dir=runs/linear" in out


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=20)
_values = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=10), st.booleans(), st.none())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_loader_never_crashes_unexpectedly(tree):
    """Random keys/values either build a valid config or raise ConfigError, never anything else."""
    items = [f"{k}={v}" for k, v in tree.items()]
    try:
        cfg = config_from_dict(PretrainConfig, parse_overrides(items))
    except ConfigError:
        return
    assert isinstance(cfg, PretrainConfig)


def test_parse_overrides_yaml_scalars():
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=true", "e="]) == {"a": {"b": 1, "c": [1, 2]}, "d": True, "e": ""}


def test_yaml_11_words_stay_strings(tmp_path):
    """YAML 1.1 reads off/on/yes/no as booleans; string options must keep them (run.amp=off)."""
    cfg = load_config(PretrainConfig, ["run.amp=off", "data.path=2024"])
    assert cfg.run.amp == "off" and cfg.data.path == "2024"
    f = tmp_path / "c.yaml"
    f.write_text("run:\n  amp: off\n  resume: true\n")
    cfg = load_config(PretrainConfig, ["--config", str(f)])
    assert cfg.run.amp == "off" and cfg.run.resume is True
