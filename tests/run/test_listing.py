"""``ostl list`` and the help: every registered name described, every default shown."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from ostl.cells import CELLS
from ostl.rules import RULES
from ostl.run.cli import build_parser, main
from ostl.run.listing import describe, format_listing, task_option_docs
from ostl.streams import STREAMS
from ostl.tasks import TASKS


def _line_of(listing: str, name: str) -> str:
    """The listing's line that describes ``name`` (a rule, cell or task)."""
    for line in listing.splitlines():
        words = line.split()
        if words and words[0].rstrip(":") == name:
            return line
    raise AssertionError(f"{name} is not listed")


def test_every_registered_rule_cell_task_and_stream_is_listed_with_a_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert listing.strip() == format_listing()
    for registry in (RULES, CELLS, TASKS, STREAMS):
        for name, cls in registry.items():
            text = describe(cls)
            assert text and "``" not in text and ":class:" not in text, (name, text)
            assert text in _line_of(listing, name)


@pytest.mark.parametrize("name", [*TASKS, *STREAMS])
def test_every_task_option_is_listed_with_its_default_and_help(name: str) -> None:
    cls = TASKS[name] if name in TASKS else STREAMS[name]
    options = task_option_docs(cls)
    constructor = [f.name for f in dataclasses.fields(cls) if f.init]
    assert [o.name for o in options] == constructor
    for o in options:
        assert o.help, f"task {name}: option {o.name} has no help (its class docstring's Args:)"
        assert f"{o.name}={o.default}" in format_listing()


def test_a_subclass_inherits_its_base_class_option_help() -> None:
    smnist = {o.name: o for o in task_option_docs(TASKS["smnist"])}
    mnist = {o.name: o for o in task_option_docs(TASKS["mnist"])}
    assert smnist["train_size"].help == mnist["train_size"].help  # documented once, in MNIST
    assert smnist["steps"].default == 28 and "28" in smnist["steps"].help  # its own entry


def test_top_level_help_is_plain_text_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":mod:" not in text and ":class:" not in text
    assert "examples:" in text and "ostl train --resume runs/x" in text
    for command in ("demo", "list", "train", "evaluate", "compare"):
        assert f"    {command} " in text


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", ["demo", "list", "train", "evaluate", "compare"])
def test_every_option_with_a_default_shows_it_in_the_help(command: str) -> None:
    parser = _subparsers()[command]
    formatter = parser._get_formatter()
    text = parser.format_help()
    assert "``" not in text and "%(default)s" not in text
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if action.default in (None, False, argparse.SUPPRESS):  # none, or a flag that is off
            continue
        shown = formatter._expand_help(action)
        assert f"(default: {action.default})" in shown, (command, action.option_strings, shown)
