"""Typed checks of what relcomp reads back from disk, by the dataclass it becomes.

A ``config.json`` (or any JSON object that becomes a dataclass) is checked field by field against
the dataclass's type hints before the dataclass is built: ``"num_classes": "10"``, ``2.5``,
``null``, ``1e999`` or ``true`` is refused with one line naming the field and the value, instead of
failing later, somewhere deep, with a traceback. Ranges are each dataclass's own ``validate``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from .errors import ConfigError

NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


def check_fields(cls: type, d: Any, where: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The known fields of ``d`` (a JSON object) for the dataclass ``cls``, each of its declared
    type; unknown keys are left out (a newer relcomp's fields), missing ones take their defaults.

    Raises:
        ConfigError: ``d`` is not an object, or a field holds a value of another type.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name not in d:
            continue
        problem = type_problem(d[f.name], hints[f.name])
        if problem:
            raise ConfigError(f"{where}: field {f.name} is {short(d[f.name])}; expected {problem}")
        out[f.name] = d[f.name]
    return out


def type_problem(value: Any, hint: Any) -> str | None:
    """None if ``value`` (decoded JSON) fits the type ``hint``, else what was expected."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if any(fits(value, t) for t in options):
        return None
    return " or ".join(describe(t) for t in options)


def fits(value: Any, t: Any) -> bool:
    if typing.get_origin(t) is list:
        (item,) = typing.get_args(t)
        return isinstance(value, list) and all(fits(v, item) for v in value)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t in NAMES:
        return isinstance(value, t)
    return dataclasses.is_dataclass(t) and isinstance(value, dict)  # checked by its own check_fields


def describe(t: Any) -> str:
    if typing.get_origin(t) is list:
        return f"a list of {describe(typing.get_args(t)[0]).removeprefix('a ').removeprefix('an ')}s"
    if t is float:
        return "a finite number"
    return NAMES.get(t, "an object")


def short(value: Any, limit: int = 40) -> str:
    """A value as JSON would show it, cut to ``limit`` characters."""
    return clip("null" if value is None else "true" if value is True else "false" if value is False else repr(value),
                limit)


def clip(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, "..." marking the cut."""
    return text if len(text) <= limit else text[:limit - 3] + "..."
