"""What the tests read from the library's registries, in one place.

The registries are the library's: ``ostl.CELLS`` (cells, with what each declares about itself:
``spiking``, ``has_output_map``, ``has_closed_form``) and ``ostl.RULES`` (rules). A test that
iterates over the names here runs every registered cell or rule, including one added after the
test was written. A test that keeps a *table* of rule instances with options (variants,
expected axes, labels) keeps it, and asserts ``not missing_rules(table)``: registering a rule
without a row in the table then fails that test, with the rule's name.
"""

from __future__ import annotations

from collections.abc import Iterable

import ostl
from ostl.rules import BPTT, DFA, OSTL, OSTTP, RTRL, EProp, Rule, SnAp, TraceRule

__all__ = [
    "CELL_NAMES",
    "SPIKING",
    "MAPPED",
    "CLOSED",
    "RULE_NAMES",
    "PRESETS",
    "RULES_AND_VARIANTS",
    "neuron_params",
    "missing_rules",
]

#: Every registered cell, in registry order.
CELL_NAMES: list[str] = list(ostl.CELLS)
#: The cells whose output is a spike train (``Cell.spiking``; checked against the outputs in
#: tests/cells/test_cells.py).
SPIKING: frozenset[str] = frozenset(n for n, c in ostl.CELLS.items() if c.spiking)
#: The cells with an output map y_t = h(m_t, φ), and those with closed-form Jacobians.
MAPPED: list[str] = [n for n, c in ostl.CELLS.items() if c.has_output_map]
CLOSED: list[str] = [n for n, c in ostl.CELLS.items() if c.has_closed_form]

#: Every registered rule, in registry order.
RULE_NAMES: list[str] = list(ostl.RULES)
#: The registered rules that are presets of the trace engine (``TraceRule`` subclasses).
PRESETS: list[str] = [n for n, c in ostl.RULES.items() if issubclass(c, TraceRule)]

#: Every registered rule with its default options, plus the variants with other code paths: the
#: rules of the contract tests (tests/rules/test_family.py, which fails while a registered rule
#: is missing here) and of the checkpoint round trip (tests/engine/test_carry.py).
RULES_AND_VARIANTS: list[Rule] = [
    BPTT(),
    BPTT(truncation=4),
    RTRL(),
    OSTL(),
    OSTL(recurrence="exact"),
    OSTL(feedback="random"),
    OSTTP(),
    OSTTP(recurrence="exact", distribution="normal"),
    EProp(),
    EProp(feedback="random"),
    SnAp(),
    SnAp(feedback="random"),
    DFA(),
]


def neuron_params(cell: str) -> tuple[str, ...]:
    """Names of a registered cell's per-neuron parameters φ, trainable or not (default options).

    Every registered cell is built from its number of neurons alone (``ostl.Layer(n_in, n,
    name)`` does that), so one neuron tells its parameters: nothing to keep by hand.
    """
    return tuple(ostl.CELLS[cell](1).neuron_params())


def missing_rules(rules: Iterable[Rule], kind: type[Rule] = Rule) -> list[str]:
    """Registry names of the registered rules of class ``kind`` that have no instance (of exactly
    their class) in ``rules``. A table of rules asserts that this is empty."""
    have = {type(r) for r in rules}
    return sorted(n for n, c in ostl.RULES.items() if issubclass(c, kind) and c not in have)
