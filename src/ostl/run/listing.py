"""``ostl list``: every registered rule, cell, task and stream in one line each, and their
options.

Everything comes from the registries (:data:`ostl.rules.RULES`, :data:`ostl.cells.CELLS`,
:data:`ostl.tasks.TASKS`, :data:`ostl.streams.STREAMS`), so a new rule, cell, task or stream is
listed without touching this module (a stream is listed as a task is):

- a rule's or a cell's description is the first sentence of its class docstring;
- a task's is its ``summary`` (the class attribute that also names it in the docs' tables);
- a rule's options are those a run can set (``--rule-opt``,
  :func:`ostl.run.rule_options.rule_option_types`), with their defaults;
- a task's options are its dataclass fields (those the constructor takes), with their default
  and the entry of the ``Args:`` section of the class docstring that documents them (the first
  class in the method resolution order that does, so a subclass inherits its base's entries).

reST markup (double backquotes, ``:class:`...``` roles) is dropped: the listing is plain text.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["describe", "TaskOption", "task_option_docs", "format_listing"]

_ROLE = re.compile(r":[a-z]+:`~?([^`]*)`")  # :class:`~ostl.Foo` -> ostl.Foo
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def plain(text: str) -> str:
    """``text`` without reST markup, on one line."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], text).replace("``", "")
    return " ".join(text.split())


def describe(cls: type) -> str:
    """One line about a registered class: its ``summary`` if it has one, else the first
    sentence of its docstring (empty when it has neither)."""
    summary = getattr(cls, "summary", None)
    if isinstance(summary, str) and summary.strip():
        return plain(summary)
    paragraph = (inspect.getdoc(cls) or "").split("\n\n", 1)[0]
    return _SENTENCE_END.split(plain(paragraph), maxsplit=1)[0]


def _args_section(doc: str) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section: name -> its text, on one line."""
    entries: dict[str, str] = {}
    lines = doc.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "Args:"), len(lines))
    indent, name = None, ""
    for line in lines[start:]:
        stripped = line.strip()
        if not stripped:
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:  # the section ended
            break
        match = re.match(r"(\w+)(?: \([^)]*\))?:\s*(.*)", stripped)
        if depth == indent and match:
            name = match.group(1)
            entries[name] = match.group(2)
        elif name:  # a continuation line
            entries[name] += " " + stripped
    return {k: plain(v) for k, v in entries.items()}


class TaskOption(NamedTuple):
    """One option of a task (``--task-opt NAME=VALUE``)."""

    name: str
    default: Any
    help: str


def task_option_docs(cls: type) -> list[TaskOption]:
    """The options of a task class, in declaration order, with their default and help."""
    docs = [_args_section(inspect.getdoc(k) or "") for k in cls.__mro__ if "__doc__" in vars(k)]
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        text = next((d[f.name] for d in docs if d.get(f.name)), "").removesuffix(".")
        out.append(TaskOption(f.name, default, text))
    return out


def _section(title: str, registry: Mapping[str, type]) -> list[str]:
    width = max(map(len, registry)) + 2
    return [title, *(f"  {name:<{width}}{describe(cls)}" for name, cls in registry.items())]


def format_listing() -> str:
    """What ``ostl list`` prints: rules, cells, then tasks with their default network and
    options."""
    from ..cells import CELLS
    from ..rules import RULES
    from ..streams import STREAMS
    from ..tasks import TASKS
    from .rule_options import rule_option_types

    lines = []
    for line, name in zip(_section("rules (--rule NAME; options: --rule-opt NAME=VALUE):", RULES),
                          ["", *RULES]):  # fmt: skip
        lines.append(line)
        if name:  # the rule's options, with their defaults, under its line
            opts = " ".join(f"{k}={d}" for k, (_, _, d) in rule_option_types(name).items())
            lines.append(f"    options: {opts or 'none'}")
    lines.append("")
    lines += _section("cells (--cell NAME):", CELLS) + [""]
    lines.append("tasks (--task NAME; options: --task-opt NAME=VALUE):")
    for name, cls in TASKS.items():
        d = cls.defaults
        hidden = ",".join(map(str, d.hidden))
        lines.append(f"  {name}: {describe(cls)}")
        lines.append(
            f"    default network {d.cell} {hidden}, {d.epochs} epoch{'s' * (d.epochs != 1)}, "
            f"batch {d.batch_size}, lr {d.lr:g}"
        )
        lines += _options(cls)
    lines += ["", "streams (ostl stream --task NAME; options: --task-opt NAME=VALUE):"]
    for name, stream in STREAMS.items():
        sd = stream.defaults
        lines.append(f"  {name}: {describe(stream)}")
        lines.append(f"    default network {sd.cell} {','.join(map(str, sd.hidden))}, lr {sd.lr:g}")
        lines += _options(stream)
    return "\n".join(lines)


def _options(cls: type) -> list[str]:
    """A task's or a stream's options (its dataclass fields), one line each."""
    options = [(f"{o.name}={o.default}", o.help) for o in task_option_docs(cls)]
    width = max((len(o) for o, _ in options), default=0) + 2
    return [f"    {o:<{width}}{text}".rstrip() for o, text in options]
