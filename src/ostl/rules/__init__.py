"""Learning rules. One file per rule; register new ones in RULES."""

from __future__ import annotations

from ..errors import OptionError
from .base import LossFn, Rule, Runner
from .bptt import BPTT
from .dfa import DFA
from .eprop import EProp
from .ostl import OSTL, TraceRule
from .osttp import OSTTP
from .rtrl import RTRL
from .snap import SnAp

__all__ = [
    "Rule",
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
