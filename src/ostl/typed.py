"""Option values from the command line's ``KEY=VALUE`` strings, typed by an annotation: one
parser for the options of tasks, streams and rules (``--task-opt``, ``--rule-opt``)."""

from __future__ import annotations

import types
import typing
from typing import Any

from .errors import OptionError

__all__ = ["typed_value", "scalar"]


def typed_value(value: str, hint: Any, key: str) -> Any:
    """``value`` as the annotation ``hint`` says: int, float, str, bool, a Literal of them, and
    the same ``| None`` (``none``); any other annotation, or none, keeps the string."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value.lower() == "none" and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return value
        hint, args = rest[0], typing.get_args(rest[0])
    if typing.get_origin(hint) is typing.Literal:
        for choice in args:
            if str(choice) == value:
                return choice
        raise OptionError(f"option {key}={value!r}: expected one of {', '.join(map(str, args))}")
    if hint in (int, float, str, bool):
        return scalar(value, hint, key)
    return value


def scalar(value: str, kind: Any, key: str) -> Any:
    """``value`` as an int, float, str or bool (``kind``; bool: true/false, 1/0, yes/no).

    Raises:
        OptionError: ``option KEY=VALUE: expected a KIND``.
    """
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return kind(value)
    except (TypeError, ValueError):
        name = getattr(kind, "__name__", str(kind))
        raise OptionError(f"option {key}={value!r}: expected a {name}") from None
