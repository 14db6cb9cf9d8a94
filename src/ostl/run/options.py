"""The command-line options of a :class:`~.config.TrainConfig`, generated from its fields.

``ostl train`` and ``ostl compare`` get one option per field: the name (``--`` and the field's
name with dashes, or the field's ``flag``), the type (from the annotation: a flag for a bool,
``KEY=VALUE`` pairs for a dict, layer sizes for a tuple, checked numbers), the choices and the
help with its default (from the field's metadata, see :mod:`.config`). Every option defaults
to None, so that :func:`given` returns only what the command line set (over a ``--config``
file or the dataclass's defaults).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import Field, fields
from functools import cache
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

from .config import TrainConfig

__all__ = ["add_config_options", "given", "flag", "positive", "non_negative", "names"]


def _integer(minimum: int) -> Callable[[str], int]:
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum)
    what = what or f"an integer >= {minimum}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s}")
        return v

    return parse


positive = _integer(1)
non_negative = _integer(0)


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s}")
    return v


def _sizes(s: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes such as 128,128, got {s!r}"
        ) from None
    if any(v <= 0 for v in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {s}")
    return sizes


class _JoinSizes(argparse.Action):
    """``--hidden 128 64`` or ``--hidden 128,64``: one tuple of sizes."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, tuple(n for part in values for n in part))


def names(s: str) -> list[str]:
    return [x.strip().lower() for x in s.split(",") if x.strip()]


@cache
def _hints() -> dict[str, Any]:
    return get_type_hints(TrainConfig)


def _base(f: Field[Any]) -> Any:
    """The field's type without its ``| None``, e.g. ``int``, ``tuple[int, ...]``."""
    hint = _hints()[f.name]
    if get_origin(hint) is UnionType:
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


def _kind(f: Field[Any]) -> type:
    """The class of the field's values: int, float, str, bool, tuple or dict."""
    base = _base(f)
    return get_origin(base) or base


def flag(f: Field[Any]) -> str:
    return str(f.metadata.get("flag", "--" + f.name.replace("_", "-")))


def _help(f: Field[Any]) -> str:
    """The field's help, with its default."""
    text = str(f.metadata.get("help", "")).replace("%", "%%")
    if _kind(f) is dict:
        return text
    shown = f.metadata.get("default_help", f.default)
    if isinstance(shown, bool):
        shown = "on" if shown else "off"
    return f"{text} (default: {shown})"


def _argparse_kind(f: Field[Any]) -> dict[str, Any]:
    """add_argument's type, action, choices and metavar for the field (its default is None:
    an option not given leaves the field to the --config file or the dataclass)."""
    kind, meta = _kind(f), f.metadata
    if kind is bool:
        return {"action": "store_const", "const": True}
    if kind is dict:
        return {"action": "append", "metavar": meta.get("metavar")}
    if kind is tuple:
        return {"type": _sizes, "nargs": "+", "action": _JoinSizes, "metavar": "N"}
    if kind is int:
        return {"type": _integer(meta.get("min", 1))}
    if kind is float:
        return {"type": _positive_float}
    if kind is not str:
        raise TypeError(f"TrainConfig.{f.name}: no command-line option for a {kind.__name__}")
    out: dict[str, Any] = {"choices": meta["choices"]} if "choices" in meta else {}
    return {**out, "type": _registry_name} if meta.get("lower") else out


def _registry_name(s: str) -> str:
    """A registry name, lowercased; a ``module:attribute`` path keeps its case."""
    return s if ":" in s else s.lower()


def add_config_options(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One option per TrainConfig field (less ``exclude``), from the field's metadata."""
    for f in fields(TrainConfig):
        if f.name not in exclude:
            p.add_argument(flag(f), dest=f.name, help=_help(f), **_argparse_kind(f))


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line (task options apart)."""
    return {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if _kind(f) is not dict and getattr(args, f.name, None) is not None
    }
