"""Building the schema's dataclasses from plain data, checking every value against its annotation."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from distilprune.config.messages import short, suggest
from distilprune.errors import ConfigError

# Recipe integers are counts, sizes and seeds: anything beyond 64 bits is a typo, and Python's
# int <-> str conversion refuses numbers above 4300 digits, which would break save_recipe.
INT_LIMIT = 2**63 - 1


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build(cls, data: Any, prefix: str, source: str):
    where = prefix.rstrip(".") or "the recipe"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} in {source} must be a section of key: value pairs, got {short(data)}. "
            f"Write it as {'section.key=value arguments or ' if prefix else ''}indented 'key: value' lines."
        )
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            shown = key if isinstance(key, str) and len(key) <= 80 else short(key)
            raise ConfigError(
                f"Unknown recipe key '{prefix}{shown}' (from {source}).{suggest(str(key)[:200], names)} "
                f"Valid keys under {where}: {', '.join(names)}."
            )
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", source)
    return cls(**kwargs)


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        return f"mapping of {_type_name(typing.get_args(tp)[0])} to {_type_name(typing.get_args(tp)[1])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


class _BadValue(ConfigError):
    """A value of the right type that no setting accepts (nan, inf, an integer beyond 64 bits)."""


def _coerce(tp, value: Any, key: str, source: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, f"{key}.", source)
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except _BadValue:
                raise  # the type fits but the value does not (nan, 10**30): say that, not "expects"
            except ConfigError:
                continue
    elif origin is dict:
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, dict):
            return {_coerce(key_type, k, f"{key}", source): _coerce(value_type, v, f"{key}.{k}", source) for k, v in value.items()}
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > INT_LIMIT:
                raise _BadValue(
                    f"Recipe key {key!r} (from {source}) is {short(value)}, beyond what any setting "
                    f"needs (at most {INT_LIMIT} in size). Set {key} to a realistic integer."
                )
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) <= 1e308 else math.inf  # float(10**400) overflows
            if not math.isfinite(number):
                raise _BadValue(
                    f"Recipe key {key!r} (from {source}) is {short(value)}; recipe numbers must be "
                    f"finite (no nan, no inf). Set {key} to a finite number."
                )
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= INT_LIMIT:
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return str(value)
    raise ConfigError(
        f"Recipe key {key!r} (from {source}) expects {_type_name(tp)}, got {short(value)} "
        f"({type(value).__name__}). Set it to a value of that type, e.g. {key}=<{_type_name(tp)}>."
    )
