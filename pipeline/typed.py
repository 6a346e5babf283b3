"""Frozen dataclasses from YAML mappings: each value checked against its type hint, unknown
keys refused with a suggestion, every error one line that names the key.

Apart from pipeline/config.py so that the model registry (pipeline/models/), whose options
the config checks, can build its options without importing the config.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from pipeline.errors import ConfigError


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type hint `hint`, converting lists to tuples where needed."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        item_hints = args[:1] * len(value) if args[-1] is Ellipsis else args
        if len(item_hints) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} items, got {value!r}")
        return tuple(coerce(v, h, key) for v, h in zip(value, item_hints, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {str(k): v if not isinstance(v, dict) else dict(v) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint)):
        if hint is int and isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key '{key}' must be of type {name}, got {value!r}")


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Make dataclass `cls` from a mapping, checking each value against its type hint and
    rejecting unknown keys with a suggestion; `prefix` is how errors name the keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {names}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = build_dataclass(hints[key], value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)
