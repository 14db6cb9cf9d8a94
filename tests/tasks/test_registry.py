"""The task registry: names, options, and default networks."""

from __future__ import annotations

import pytest

from ostl import Network
from ostl.tasks import TASKS, get_task, parse_options, task_options
from ostl.tasks.base import build_network


def test_every_task_is_registered_under_its_name() -> None:
    assert {"digits", "pattern", "recall", "mnist", "smnist", "chorales", "ptb", "ptb-char"} <= set(
        TASKS
    )
    for name, cls in TASKS.items():
        assert cls.name == name and cls.summary


def test_unknown_task_and_option_are_named() -> None:
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="no option colour"):
        get_task("digits", colour=1)


def test_parse_options_converts_types() -> None:
    opts = parse_options("digits", ["steps=7", "encoding=latency", "train_size=none"])
    assert opts == {"steps": 7, "encoding": "latency", "train_size": None}
    with pytest.raises(ValueError, match="expected a int"):
        parse_options("digits", ["steps=many"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options("digits", ["steps"])


def test_task_options_rebuild_the_task() -> None:
    task = get_task("recall", delay=3, train_size=8, test_size=4)
    again = get_task("recall", **task_options(task))
    assert task_options(again) == task_options(task)


def test_build_network_stacks_layers_and_readout() -> None:
    net = build_network(5, (7, 6), 3, "lif", recurrent=True)
    assert isinstance(net, Network) and len(net.layers) == 3
    assert (net.n_in, net.n_out) == (5, 3) and net.layers[1].H is not None
    with pytest.raises(ValueError, match="unknown cell"):
        build_network(5, (7,), 3, "neuron")
