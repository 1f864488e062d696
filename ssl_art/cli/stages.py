"""``ssl-art pretrain | linear | finetune``: ``--config`` preset or file, dotted ``key=value`` overrides, flag aliases.

Each stage parses the same way: the config class's defaults, then the YAML (``--config simclr`` finds the packaged
preset, a path works too), then ``key=value`` overrides, then the stage's flags (``--out DIR`` is
``run.output_dir=DIR``), strictly typed and range-checked before any work. ``--help`` is generated from the schema
(:mod:`ssl_art.config.help`): only the keys the stage reads, each with this stage's real default, its override
type and the schema's comment. ``main_pretrain.py`` and friends call :func:`run_stage` too.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_art import distributed
from ssl_art.cli.errors import Parser
from ssl_art.config import FinetuneConfig, LinearConfig, PretrainConfig, config_from_dict, validate
from ssl_art.config.help import options_help
from ssl_art.config.load import deep_merge, load_yaml, parse_overrides
from ssl_art.config.presets import resolve_config


@dataclass(frozen=True)
class Flag:
    """A stage flag that is an alias of a dotted key: ``--out DIR`` -> ``run.output_dir=DIR``."""

    names: tuple[str, ...]
    key: str
    help: str
    const: str = ""  # set: a switch that writes this value (``--resume`` -> ``run.resume=true``)


_COMMON = (
    Flag(("--out", "--output-dir"), "run.output_dir", "run folder"),
    Flag(("--data",), "data.path", 'images: folder, ImageFolder tree or CSV ("" = packaged synthetic collection)'),
    Flag(("--device",), "run.device", "auto (default) | cpu | cuda | mps"),
    Flag(("--seed",), "run.seed", "seed of everything"),
    Flag(("--backbone",), "model.backbone", "timm model name"),
    Flag(("--image-size",), "data.image_size", "input side in pixels"),
    Flag(("--batch-size",), "data.batch_size", "images per batch"),
    Flag(("--overwrite",), "run.overwrite", "reuse a run folder that holds an ssl_art run", const="true"),
)
_TRAIN = (
    Flag(("--epochs",), "optim.epochs", "training epochs"),
    Flag(("--max-steps",), "optim.max_steps", "stop after this many steps (wins over epochs)"),
    Flag(("--resume",), "run.resume", "continue the run in the run folder", const="true"),
)


@dataclass(frozen=True)
class Stage:
    """One training/evaluation stage: its config class, the keys it never reads, its flags, examples and runner."""

    name: str
    cls: type
    summary: str
    exclude: tuple[str, ...]
    flags: tuple[Flag, ...]
    examples: str
    run: Callable[[Any], int] = field(repr=False)


def _run_pretrain(cfg: PretrainConfig) -> int:
    from ssl_art.engine.pretrain import run_pretrain

    return 143 if run_pretrain(cfg).stopped == "signal" else 0


def _run_linear(cfg: LinearConfig) -> int:
    from ssl_art.eval.run import run_linear_eval

    run_linear_eval(cfg)
    return 0


def _run_finetune(cfg: FinetuneConfig) -> int:
    from ssl_art.finetune.run import run_finetune

    run_finetune(cfg)
    return 0


_RUN_UNREAD: tuple[str, ...] = ("run.amp", "run.ckpt_every_steps", "run.keep_last", "run.log_every")
_RUN_UNREAD += ("run.time_budget_s", "run.budget_clock", "run.max_nonfinite")

STAGES: dict[str, Stage] = {
    "pretrain": Stage(
        "pretrain",
        PretrainConfig,
        "self-supervised pretraining (simclr | art_ssl) -> run folder with checkpoints/",
        ("eval.*",),
        (*_COMMON, *_TRAIN, Flag(("--method",), "method", "simclr | art_ssl")),
        "  ssl-art pretrain --config demo --out runs/demo             # packaged synthetic collection, CPU minutes\n"
        "  ssl-art pretrain --config simclr optim.epochs=1 optim.max_steps=20 data.image_size=64 --out runs/try\n"
        "  ssl-art pretrain --config art_ssl --data photos/ --out runs/art    # your own images",
        _run_pretrain,
    ),
    "linear": Stage(
        "linear",
        LinearConfig,
        "frozen-feature evaluation: FAISS kNN + linear probe, pretrained vs random init -> metrics.json",
        ("data.aug.*", "dist.*", "run.resume", *_RUN_UNREAD),
        (*_COMMON, Flag(("--checkpoint",), "eval.checkpoint", "pretraining run folder or .pt")),
        "  ssl-art linear --checkpoint runs/demo --out runs/demo/eval      # packaged synthetic collection\n"
        "  ssl-art linear --config linear/default --checkpoint runs/demo eval.folds=3 --out runs/demo/eval",
        _run_linear,
    ),
    "finetune": Stage(
        "finetune",
        FinetuneConfig,
        "fine-tune a pretrained backbone (optionally the gated two-branch head) -> test.json, checkpoints/best.pt",
        ("dist.*", "run.ckpt_every_steps", "run.keep_last", "run.log_every", "run.budget_clock", "run.max_nonfinite"),
        (*_COMMON, *_TRAIN, Flag(("--checkpoint",), "ft.checkpoint", "pretraining run folder or .pt")),
        "  ssl-art finetune --config finetune/tiny --checkpoint runs/demo --out runs/ft   # packaged synthetic data\n"
        "  ssl-art finetune --config wikiart7 --data labels.csv --checkpoint runs/art ft.mode=last_n --out runs/ft",
        _run_finetune,
    ),
}


def _register_stage_choices(name: str) -> None:
    if name == "finetune":
        import ssl_art.finetune  # noqa: F401  (registers the ft.* choices before the config is checked)


def add_arguments(p: argparse.ArgumentParser, stage: Stage) -> None:
    """``--config``, the ``key=value`` overrides and the stage's flag aliases on parser ``p``."""
    p.add_argument("--config", default="", help="YAML file or packaged preset (simclr, demo, finetune/tiny, ...)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.1")
    g = p.add_argument_group("flags (aliases of the keys below)")
    for f in stage.flags:
        if f.const:
            g.add_argument(*f.names, dest=f.key, action="store_const", const=f.const, help=f"{f.help} ({f.key})")
        else:
            g.add_argument(*f.names, dest=f.key, metavar="V", help=f"{f.help} ({f.key})")


def describe(stage: Stage) -> dict[str, Any]:
    """``add_parser`` keyword arguments of a stage: description, the schema-generated options and the examples."""
    _register_stage_choices(stage.name)
    epilog = f"{options_help(stage.cls(), stage.exclude)}\n\nexamples:\n{stage.examples}"
    return {"help": stage.summary, "description": stage.summary, "epilog": epilog}


def config_from_args(stage: Stage, args: argparse.Namespace) -> Any:
    """The validated config of ``stage``: class defaults < ``--config`` < ``key=value`` < flags."""
    _register_stage_choices(stage.name)
    values: dict[str, Any] = load_yaml(resolve_config(args.config, stage.name)) if args.config else {}
    items = list(args.overrides) + [f"{f.key}={v}" for f in stage.flags if (v := getattr(args, f.key)) is not None]
    cfg: Any = config_from_dict(stage.cls, deep_merge(values, parse_overrides(items)))
    validate(cfg)
    return cfg


def stage_parser(name: str, prog: str = "") -> argparse.ArgumentParser:
    """A standalone parser for one stage (``main_pretrain.py`` uses it; ``ssl-art`` adds the same as a subparser)."""
    stage = STAGES[name]
    kw = describe(stage)
    kw.pop("help")
    p = Parser(prog=prog or f"ssl-art {name}", formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    add_arguments(p, stage)
    return p


def run_stage(name: str, args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Build the config from parsed ``args`` and run the stage; the command line is kept as ``command.txt``."""
    stage = STAGES[name]
    cfg = config_from_args(stage, args)
    code = stage.run(cfg)
    out = Path(cfg.run.output_dir)
    if argv is not None and out.is_dir() and distributed.is_main():  # under torchrun: rank 0 writes
        (out / "command.txt").write_text(shlex.join(["ssl-art", name, *argv]) + "\n")
    return code


def main_for(name: str, argv: list[str] | None = None, prog: str = "") -> int:
    """Parse ``argv`` for stage ``name`` and run it (user errors raise; :func:`ssl_art.cli.main` prints them)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    return run_stage(name, stage_parser(name, prog).parse_intermixed_args(argv), argv)
