"""Options of a run's rule (``TrainConfig.rule_options``, ``--rule-opt NAME=VALUE``): which
options a rule takes (its ``__init__``'s int, float, str and bool parameters), their parsing from
the command line's strings, their checking, and the rule built with them."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import OptionError
from ..rules import RULES, Rule
from ..typed import scalar

__all__ = ["rule_option_types", "parse_rule_options", "make_rule"]

_SCALARS = (bool, int, float, str)
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _scalar_hint(hint: Any) -> tuple[type, bool] | None:
    """``(kind, accepts None)`` of an int/float/str/bool annotation, or of one ``| None``;
    None for any other annotation (e.g. a torch.dtype: not an option of a run)."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            return None
        hint = args[0]
    return (hint, optional) if hint in _SCALARS else None


def rule_option_types(rule: str) -> dict[str, tuple[type, bool, Any]]:
    """The options a run can give rule ``rule`` (a registry name): name -> ``(type, accepts
    None, default)``, from the rule class's ``__init__`` signature; the options of type int,
    float, str or bool (each also ``| None``), in the signature's order."""
    cls = RULES[rule.lower()]
    hints = typing.get_type_hints(cls.__init__)
    out: dict[str, tuple[type, bool, Any]] = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = _scalar_hint(hints.get(name))
        if kind is not None:
            out[name] = (*kind, None if p.default is p.empty else p.default)
    return out


def _options_text(rule: str) -> str:
    """``"its options are recurrence (str, default 'diagonal'), ..."``: for error messages."""
    opts = rule_option_types(rule)
    if not opts:
        return "it takes no options"
    return "its options are " + ", ".join(
        f"{n} ({k.__name__}{' or none' * opt}, default {d!r})" for n, (k, opt, d) in opts.items()
    )


def _parse_value(rule: str, key: str, text: str) -> Any:
    kind, optional, _ = rule_option_types(rule)[key]
    if optional and text.lower() == "none":
        return None
    try:
        return scalar(text, kind, key)
    except OptionError:
        raise OptionError(
            f"rule {rule!r}, option {key}={text!r}: expected {_EXPECTED[kind]}"
            f"{' or none' * optional}; {_options_text(rule)}"
        ) from None


def parse_rule_options(rule: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``["feedback=random", "seed=3"]`` -> ``{"feedback": "random", "seed": 3}``: each value
    typed as rule ``rule``'s option (:func:`rule_option_types`; ``none`` for None).

    Raises:
        OptionError: an unknown rule or option, a pair without ``=``, or a value of another
            type; one line that names the rule's options.
    """
    if rule.lower() not in RULES:
        raise OptionError(f"unknown rule {rule!r}: expected one of {', '.join(RULES)}")
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise OptionError(f"rule option {pair!r}: expected KEY=VALUE; {_options_text(rule)}")
        if key not in rule_option_types(rule):
            raise OptionError(f"rule {rule!r} has no option {key!r}; {_options_text(rule)}")
        out[key] = _parse_value(rule, key, text)
    return out


def _check_type(rule: str, key: str, value: Any) -> None:
    kind, optional, _ = rule_option_types(rule)[key]
    if value is None and optional:
        return
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True  # an int where a float goes (JSON writes 1.0 as 1 in some tools)
    if not ok:
        raise OptionError(
            f"rule {rule!r}, option {key}={value!r}: expected {_EXPECTED[kind]}"
            f"{' or None' * optional}; {_options_text(rule)}"
        )


def make_rule(rule: str, options: Mapping[str, Any] | None = None) -> Rule:
    """The rule named ``rule`` (a registry name) built with ``options`` (a run's
    ``rule_options``): ``make_rule("ostl", {"feedback": "random"})`` is
    ``ostl.rules.OSTL(feedback="random")``.

    Raises:
        OptionError: an unknown rule or option, a value of another type, or one the rule
            refuses; the message names the rule's options.
    """
    name = rule.lower()
    if name not in RULES:
        raise OptionError(f"unknown rule {rule!r}: expected one of {', '.join(RULES)}")
    options = dict(options or {})
    for key, value in options.items():
        if key not in rule_option_types(name):
            raise OptionError(f"rule {name!r} has no option {key!r}; {_options_text(name)}")
        _check_type(name, key, value)
    try:
        return RULES[name](**options)
    except (OptionError, ValueError, TypeError) as e:
        raise OptionError(f"rule {name!r}: {e}; {_options_text(name)}") from None
