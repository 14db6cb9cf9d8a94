"""Learning rules. Trace rules are presets on the axes of :mod:`ostl.rules.trace`; BPTT and
RTRL are independent oracles. Register new ones in :data:`RULES`."""

from __future__ import annotations

from ..errors import OptionError
from .base import Engine, LossFn, Rule, Runner
from .bptt import BPTT
from .dfa import DFA
from .eprop import EProp
from .ostl import OSTL
from .osttp import OSTTP
from .rtrl import RTRL
from .snap import SnAp
from .trace import TraceRule

__all__ = [
    "Rule",
    "Engine",
    "Runner",
    "LossFn",
    "TraceRule",
    "BPTT",
    "RTRL",
    "OSTL",
    "OSTTP",
    "EProp",
    "SnAp",
    "DFA",
    "RULES",
    "get_rule",
]

#: Rule registry: name -> class (constructed with default options by :func:`get_rule`).
RULES: dict[str, type[Rule]] = {
    "bptt": BPTT,
    "rtrl": RTRL,
    "ostl": OSTL,
    "osttp": OSTTP,
    "eprop": EProp,
    "snap": SnAp,
    "dfa": DFA,
}


def get_rule(rule: str | Rule) -> Rule:
    """Resolve a rule given by name (default options) or as a Rule instance."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str) and rule.lower() in RULES:
        return RULES[rule.lower()]()
    raise OptionError(f"unknown rule {rule!r}: expected one of {sorted(RULES)} or a Rule instance")
