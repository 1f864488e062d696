"""Help text generated from the schema: every key a command reads, its real default, its override type and comment.

The explanations are the ``# comments`` written beside each field in :mod:`ssl_art.config.schema` (one source: the
schema's own text, read with :mod:`ast` and :mod:`tokenize`, so a new field documents itself). Defaults are read from
an *instance* of the command's config class, never from the section dataclass, so ``FinetuneConfig`` shows its own
``optim.lr=0.0005`` rather than the shared ``OptimCfg`` default. Values and types are printed in the syntax a
``key=value`` override takes (``model.gram.layers=[2,3]``, ``run.resume=true``).
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import functools
import io
import tokenize
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ssl_art.config import schema
from ssl_art.config.choices import registered_choices


@dataclasses.dataclass(frozen=True)
class KeyHelp:
    """One ``key=value`` option: dotted key, default (override syntax), type (override syntax) and comment."""

    key: str
    default: str
    type: str
    comment: str


@functools.lru_cache(maxsize=1)
def field_comments() -> dict[tuple[str, str], str]:
    """``(ClassName, field) -> comment`` for every field of :mod:`ssl_art.config.schema` that has a ``#`` comment."""
    source = Path(schema.__file__).read_text()
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                end = item.end_lineno or item.lineno
                text = " ".join(by_line[n] for n in range(item.lineno, end + 1) if n in by_line)
                if text:
                    out[(node.name, item.target.id)] = text
    return out


def format_value(value: Any) -> str:
    """A value as a ``key=value`` override writes it: ``true``, ``""``, ``[2,3]``, ``0.0005``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else '""'
    return repr(value)


def format_type(tp: Any, key: str = "") -> str:
    """An annotation in override syntax: ``int``, ``float``, ``true|false``, ``[int,...]``, ``simclr|art|none``."""
    choices = registered_choices().get(key)
    if choices:
        return "|".join(choices)
    if typing.get_origin(tp) is tuple:
        return f"[{format_type(typing.get_args(tp)[0])},...]"
    if tp is bool:
        return "true|false"
    return getattr(tp, "__name__", str(tp))


def _walk(cls: type, inst: Any, prefix: str) -> Iterator[KeyHelp]:
    hints = typing.get_type_hints(cls)
    comments = field_comments()
    for f in dataclasses.fields(cls):
        tp, value = hints[f.name], getattr(inst, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, value, f"{key}.")  # type: ignore[arg-type]
        else:
            yield KeyHelp(key, format_value(value), format_type(tp, key), comments.get((cls.__name__, f.name), ""))


def key_help(cfg: Any, exclude: Sequence[str] = ()) -> list[KeyHelp]:
    """Every leaf key of config instance ``cfg`` except those matching an ``exclude`` glob (``eval.*``)."""
    return [k for k in _walk(type(cfg), cfg, "") if not any(fnmatch.fnmatchcase(k.key, pat) for pat in exclude)]


def section_docs(cfg: Any) -> dict[str, str]:
    """Top-level section name -> the first line of its dataclass docstring (``data`` -> "Where the images ...")."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = (type(value).__doc__ or "").strip().split("\n")[0]
    return out


def options_help(cfg: Any, exclude: Sequence[str] = ()) -> str:
    """The options block of a command's ``--help``: keys grouped by section, ``key=default  type  comment``."""
    docs = section_docs(cfg)
    rows = key_help(cfg, exclude)
    width = min(48, max(len(f"{r.key}={r.default}") for r in rows)) if rows else 0
    lines = ["options (override as key=value; lists as [a,b]; the defaults of this command shown):"]
    section = None
    for r in rows:
        top = r.key.split(".")[0] if "." in r.key else ""
        if top != section:
            section = top
            lines.append(f"\n {top}: {docs.get(top, '')}" if top else "")
        lhs = f"{r.key}={r.default}"
        text = f"  {lhs:<{width}}  ({r.type})"
        lines.append(f"{text}  {r.comment}" if r.comment else text)
    return "\n".join(lines)
