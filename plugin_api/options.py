"""Typed options: TOML tables → dataclasses, with key paths in every error.

A component declares ``Options`` as a dataclass whose fields have defaults
and simple annotations (bool, int, float, str, ``list[T]``, ``T | None``,
``Literal[...]``).  :func:`parse_options` rejects unknown keys and wrong
types, naming the full key path (``terms.ls.weight``) and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import ConfigError


def parse_options(cls: type, raw: dict | None, path: str = "") -> Any:
    """Build ``cls`` (a dataclass) from a mapping, validating keys and types."""
    raw = dict(raw or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = _join(path, unknown[0])
        expected = ", ".join(sorted(fields)) or "(no options)"
        raise ConfigError(f"unknown key; expected one of: {expected}", key)
    values = {}
    for name, value in raw.items():
        values[name] = coerce(value, hints[name], _join(path, name))
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), path or None) from exc
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            raise ConfigError(str(exc), path or None) from exc
    return obj


def coerce(value: Any, annotation: Any, path: str) -> Any:
    """Check ``value`` against ``annotation``; ints are accepted for floats."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"expected {_describe(annotation)}, got {value!r}", path)
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"expected one of {list(allowed)}, got {value!r}", path)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", path)
        args = get_args(annotation)
        item = args[0] if args else Any
        return [coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {value!r}", path)
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {value!r}", path)
        return parse_options(annotation, value, path)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", path)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", path)
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", path)
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", path)
        return value
    raise TypeError(f"unsupported option annotation {annotation!r} at {path}")


def _describe(annotation: Any) -> str:
    names = []
    for a in get_args(annotation):
        names.append("none" if a is type(None) else getattr(a, "__name__", str(a)))
    return " or ".join(names)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
