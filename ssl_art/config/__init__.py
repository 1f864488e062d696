"""One config schema for every entry point: frozen dataclasses, YAML files and dotted CLI overrides.

``load_config(PretrainConfig, ["--config", "configs/pretrain/simclr.yaml", "optim.lr=0.1"])`` merges the dataclass
defaults, the YAML file and the overrides, in that order. Unknown keys and values of the wrong type raise
:class:`ConfigError` naming the key and the valid choices, so a typo never silently trains the wrong model.
The sections live in :mod:`~ssl_art.config.schema`, loading in :mod:`~ssl_art.config.load` and range checks in
:mod:`~ssl_art.config.validate`; every public name is re-exported here (``from ssl_art.config import DataCfg``).
"""

from ssl_art.config.choices import register_choices, registered_choices
from ssl_art.config.load import (
    config_from_dict,
    config_to_dict,
    deep_merge,
    load_config,
    load_yaml,
    parse_overrides,
    save_config,
)
from ssl_art.config.schema import (
    AugCfg,
    ConfigError,
    DataCfg,
    DistCfg,
    EvalCfg,
    FinetuneConfig,
    FtCfg,
    FusionCfg,
    GateCfg,
    GramCfg,
    LinearConfig,
    LossCfg,
    ModelCfg,
    MonitorCfg,
    OptimCfg,
    PretrainConfig,
    RetrievalCfg,
    RetrievalConfig,
    RunCfg,
    SplitCfg,
)
from ssl_art.config.validate import validate

__all__ = [
    "AugCfg",
    "ConfigError",
    "DataCfg",
    "DistCfg",
    "EvalCfg",
    "FinetuneConfig",
    "FtCfg",
    "FusionCfg",
    "GateCfg",
    "GramCfg",
    "LinearConfig",
    "LossCfg",
    "ModelCfg",
    "MonitorCfg",
    "OptimCfg",
    "PretrainConfig",
    "RetrievalCfg",
    "RetrievalConfig",
    "RunCfg",
    "SplitCfg",
    "config_from_dict",
    "config_to_dict",
    "deep_merge",
    "load_config",
    "load_yaml",
    "parse_overrides",
    "register_choices",
    "registered_choices",
    "save_config",
    "validate",
]
