"""Help generated from the schema: real defaults per command, override syntax, the schema's comments, only read keys.

Before issue 15 ``main_finetune.py --help`` printed the shared dataclass defaults (six wrong), Python tuples, no
explanations, and keys the command never reads.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import main_finetune
from ssl_art.cli import main
from ssl_art.config import FinetuneConfig, LinearConfig, PretrainConfig
from ssl_art.config.help import field_comments, format_value, key_help

ROOT = Path(__file__).resolve().parents[2]


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _defaults(text: str) -> dict[str, str]:
    """``key=value`` pairs of the generated options block."""
    return dict(re.findall(r"^  ([a-z_]+(?:\.[a-z_]+)+)=(\S+)", text, flags=re.M))


def test_finetune_help_prints_the_finetune_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    shown = _defaults(_help(["finetune"], capsys))
    real = FinetuneConfig()  # the reference: the command's own config instance
    assert shown["data.aug.preset"] == real.data.aug.preset == "art"
    assert shown["data.aug.n_views"] == str(real.data.aug.n_views) == "1"
    assert float(shown["optim.lr"]) == real.optim.lr == 5e-4
    assert shown["optim.epochs"] == str(real.optim.epochs) == "20"
    assert float(shown["optim.warmup_epochs"]) == real.optim.warmup_epochs == 2.0
    assert shown["run.output_dir"] == real.run.output_dir == "runs/finetune"


def test_every_shown_default_matches_the_instance(capsys: pytest.CaptureFixture[str]) -> None:
    for name, cls in (("pretrain", PretrainConfig), ("linear", LinearConfig), ("finetune", FinetuneConfig)):
        shown = _defaults(_help([name], capsys))
        assert shown, name
        for key, value in shown.items():
            node = cls()
            for part in key.split("."):
                node = getattr(node, part)
            assert value == format_value(node), (name, key)
    assert _defaults(_help(["linear"], capsys))["run.output_dir"] == "runs/linear"


def test_lists_in_override_syntax_and_comments_shown(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["pretrain"], capsys)
    assert "model.gram.layers=[2,3]" in text and "(2, 3)" not in text
    assert "([int,...])" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("data.path="))
    assert "embedded synthetic collection" in line  # the schema's comment beside DataCfg.path
    assert "run.resume=false" in text and "(true|false)" in text


def test_only_the_keys_a_command_reads(capsys: pytest.CaptureFixture[str]) -> None:
    pre = _defaults(_help(["pretrain"], capsys))
    assert not [k for k in pre if k.startswith("eval.")]
    assert "loss.temperature" in pre and "dist.gather" in pre
    lin = _defaults(_help(["linear"], capsys))
    assert not [k for k in lin if k.startswith(("data.aug.", "dist.")) or k == "run.resume"]
    assert "eval.knn_k" in lin and "data.path" in lin
    ft = _defaults(_help(["finetune"], capsys))
    assert "ft.checkpoint" in ft and "gate.enabled" in ft and not [k for k in ft if k.startswith("dist.")]


def test_multiline_field_comment_is_parsed() -> None:
    comments = field_comments()
    assert "pretraining run dir" in comments[("FtCfg", "checkpoint")]  # comment inside a parenthesised default
    assert comments[("DataCfg", "path")].startswith("folder, ImageFolder tree or CSV manifest")
    assert ("DataCfg", "image_size") not in comments or comments[("DataCfg", "image_size")]


def test_key_help_exclusion_globs() -> None:
    keys = [k.key for k in key_help(PretrainConfig(), ("eval.*", "run.seed"))]
    assert "run.seed" not in keys and "run.device" in keys and not any(k.startswith("eval.") for k in keys)


def test_examples_use_packaged_presets_not_this_repo(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help([], capsys)
    for name in ("pretrain", "linear", "finetune", "predict", "embed", "index", "query", "export", "serve"):
        assert f"ssl-art {name}" in top
    assert "--config demo" in top and "../shared/data" not in top
    for cmd in ("pretrain", "linear", "finetune"):
        text = _help([cmd], capsys)
        assert "examples:" in text and "../shared" not in text
        assert re.search(rf"ssl-art {cmd} --(config|checkpoint)", text)


def test_subcommands_have_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["embed"], ["query"], ["serve"], ["index", "build"], ["predict"], ["export"], ["plot", "map"]):
        text = _help(argv, capsys)
        body = text.split("\n\n")[1]
        assert not body.startswith(("positional", "options")), argv  # a description precedes the options


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import ssl_art

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ssl-art {ssl_art.__version__}"


def test_main_script_help_is_the_same_command() -> None:
    """``python main_finetune.py --help`` (a real process) lists the same generated options as ``ssl-art``."""
    res = subprocess.run(
        [sys.executable, "main_finetune.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "optim.lr=0.0005" in res.stdout and "run.output_dir=runs/finetune" in res.stdout
    assert callable(main_finetune.main)


def test_every_pretrain_and_linear_key_is_explained() -> None:
    for cfg, exclude in ((PretrainConfig(), ("eval.*",)), (LinearConfig(), ("data.aug.*", "dist.*"))):
        bare = [k.key for k in key_help(cfg, exclude) if not k.comment]
        assert bare == [], bare
