"""The method registry: one entry per method maps the config to its constructor, and feeds config validation.

Covers the ``dist.gather`` defect (``dist.gather=false`` was silently ignored for ``art_ssl``: the old builder never
passed it), and shows that a toy method registered with one line is accepted by the config, built by
``build_pretrain_model`` and picked up by the parametrised contract tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import toy_method
from method_helpers import tiny_config

from ssl_art.config import ConfigError, PretrainConfig, config_from_dict, load_config
from ssl_art.methods.registry import METHODS, build_pretrain_model, register_method, unregister_method

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _gather_flags(m: object) -> list[bool]:
    """``gather_distributed`` of every loss module inside ``m`` (lightly NTXentLoss, SoftPositiveLoss, ...)."""
    import torch

    assert isinstance(m, torch.nn.Module)
    return [bool(mod.gather_distributed) for mod in m.modules() if hasattr(mod, "gather_distributed")]


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("gather", [False, True])
def test_dist_gather_reaches_every_loss(name: str, gather: bool) -> None:
    m = build_pretrain_model(tiny_config(name, {"dist": {"gather": gather}}))
    flags = _gather_flags(m)
    assert flags, f"{name}: no loss with a gather_distributed switch found"
    assert all(f is gather for f in flags), f"{name}: dist.gather={gather} but the losses have {flags}"


def test_builtin_names_are_the_config_choices() -> None:
    assert set(METHODS) >= {"simclr", "art_ssl"}
    with pytest.raises(ConfigError, match=r"method: 'byol' is not one of simclr, art_ssl"):
        config_from_dict(PretrainConfig, {"method": "byol"})


def test_toy_method_is_one_registry_line() -> None:
    with pytest.raises(ConfigError, match="'toy' is not one of"):
        config_from_dict(PretrainConfig, {"method": "toy"})
    register_method("toy", toy_method.from_config)
    try:
        assert load_config(PretrainConfig, ["method=toy"]).method == "toy"
        with pytest.raises(ConfigError, match=r"'byol' is not one of simclr, art_ssl, toy"):
            config_from_dict(PretrainConfig, {"method": "byol"})
        with pytest.raises(ValueError, match="already registered"):
            register_method("toy", toy_method.from_config)
        m = build_pretrain_model(tiny_config("toy", {"dist": {"gather": False}}))
        assert isinstance(m, toy_method.ToyMethod) and _gather_flags(m) and not any(_gather_flags(m))
    finally:
        unregister_method("toy")
    with pytest.raises(ConfigError, match="'toy' is not one of"):
        config_from_dict(PretrainConfig, {"method": "toy"})
    with pytest.raises(ConfigError, match="'toy' is not one of"):  # a config built while it was registered
        build_pretrain_model(PretrainConfig(method="toy"))


def test_contract_tests_pick_up_a_registered_toy_method() -> None:
    """Run the contract tests with the toy plugin loaded: each contract is collected and passes for ``[toy]``."""
    contracts = [n for n in dir(__import__("test_contract")) if n.startswith("test_")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "toy_method", "-p", "no:cacheprovider"]
    cmd += [str(HERE / "test_contract.py"), "-k", "toy"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    passed = [line for line in res.stdout.splitlines() if line.startswith("PASSED") and "[toy]" in line]
    assert len(passed) == len(contracts) == 4, res.stdout[-3000:]
