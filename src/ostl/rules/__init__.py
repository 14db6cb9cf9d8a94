"""Learning rules. One file per rule; register new ones in RULES."""

from __future__ import annotations

from .base import LossFn, Rule, Runner
from .bptt import BPTT
from .ostl import OSTL
from .rtrl import RTRL

__all__ = ["Rule", "Runner", "LossFn", "BPTT", "RTRL", "OSTL", "RULES", "get_rule"]

#: Rule registry: name -> class (constructed with default options by :func:`get_rule`).
RULES: dict[str, type[Rule]] = {"bptt": BPTT, "rtrl": RTRL, "ostl": OSTL}


def get_rule(rule: str | Rule) -> Rule:
    """Resolve a rule given by name (default options) or as a Rule instance."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str) and rule.lower() in RULES:
        return RULES[rule.lower()]()
    raise ValueError(f"unknown rule {rule!r}: expected one of {sorted(RULES)} or a Rule instance")
