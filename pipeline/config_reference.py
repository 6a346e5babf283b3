"""docs/CONFIG.md, generated from the typed config itself: every key with its type, default and
the comment written above its field, so the reference cannot drift from the code
(`pipeline config-reference`; tests/test_config.py checks the file is current)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import typing

from pipeline import paths
from pipeline.config import Config
from pipeline.models import REGISTRY

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def field_comments(cls: type) -> dict[str, str]:
    """The `#:` comment lines above each field of dataclass `cls` (and its bases), joined."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        pending: list[str] = []
        for line in inspect.getsource(klass).splitlines():
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = _FIELD.match(line)
            if match and pending:
                comments[match.group(1)] = " ".join(pending)
            pending = []
    return comments


def _type_name(hint) -> str:
    name = re.sub(r"\btyping\.", "", getattr(hint, "__name__", None) or str(hint))
    return name.replace("|", "or")


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return ""
    if isinstance(value, tuple):
        value = list(value)
    return "null" if value is None else str(value).replace("True", "true").replace("False", "false")


def _rows(cls: type, prefix: str, skip: frozenset[str] = frozenset()) -> list[str]:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows = []
    for field in dataclasses.fields(cls):
        if field.name in skip or dataclasses.is_dataclass(hints[field.name]):
            continue
        text = comments.get(field.name, "").replace("|", "\\|")
        rows.append(
            f"| `{prefix}{field.name}` | `{_type_name(hints[field.name])}` "
            f"| `{_default(field)}` | {text} |"
        )
    return rows


def _table(rows: list[str]) -> str:
    return "\n".join(["| key | type | default | meaning |", "| --- | --- | --- | --- |", *rows])


def reference() -> str:
    """The whole reference, as Markdown."""
    hints = typing.get_type_hints(Config)
    sections = [
        "# Configuration reference",
        "",
        "Generated from `pipeline/config.py` and `pipeline/models/*.py` by "
        "`pipeline config-reference`; do not edit by hand. A profile in `configs/` sets any of "
        "these keys in YAML, and `pipeline train key=value ...` overrides them (values parsed "
        "as YAML). Every value is checked when the config loads: a mistake stops with one line.",
        "",
        "## The sweep",
        "",
        _table(_rows(Config, "")),
    ]
    for field in dataclasses.fields(Config):
        section = hints[field.name]
        if dataclasses.is_dataclass(section):
            doc = (section.__doc__ or "").strip().splitlines()[0]
            rows = _rows(section, f"{field.name}.")
            sections += ["", f"## `{field.name}`: {doc}", "", _table(rows)]
    sections += [
        "",
        "## `model_options.<model>`: each architecture's own options",
        "",
        "The shared `model.*` keys above, plus these, per architecture (its `Options`, beside "
        "its builder).",
    ]
    shared = frozenset(f.name for f in dataclasses.fields(hints["model"]))
    for name, module in REGISTRY.items():
        options = importlib.import_module(module).Options
        rows = _rows(options, f"model_options.{name}.", skip=shared)
        sections += ["", f"### `{name}`", "", _table(rows) if rows else "No options of its own."]
    return "\n".join(sections) + "\n"


def write() -> str:
    """Writes docs/CONFIG.md; returns its path."""
    out = paths.DOCS_DIR / "CONFIG.md"
    out.write_text(reference(), encoding="utf-8")
    return str(out)
