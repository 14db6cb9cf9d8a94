"""Which rules learn on a stream, and on which update schedule.

A stream has no end to wait for, so every rule updates the weights as it goes:

- ``tbptt-K``: truncated BPTT, ``BPTT(truncation=K)``, updated every K steps (at each cut of
  its graph). It holds the activations of up to K steps for its backward pass: its memory grows
  with K (and nothing else);
- ``ostl``, ``osttp``, ``eprop``, ``snap`` (SnAp-1), and the other registered online rules
  (:data:`ostl.rules.RULES`) with their default options, updated after every step
  (``update_every=1``): their memory does not depend on the stream's length;
- ``bptt`` (full BPTT) is refused with :class:`FullBPTTError`: it would keep every step's
  activations until the stream ends, and a stream may not end.
"""

from __future__ import annotations

import re

from ..errors import OptionError, UnsupportedError
from ..rules import BPTT, RULES, Rule, get_rule

__all__ = ["stream_rule", "FullBPTTError", "DEFAULT_STREAM_RULES", "FULL_BPTT", "INSTEAD"]

#: The rules that ``ostl stream`` compares by default: truncated BPTT at three truncations
#: (a short, a medium and a long memory) and the online rules.
DEFAULT_STREAM_RULES = ("tbptt-4", "tbptt-16", "tbptt-64", "ostl", "osttp", "eprop", "snap")

_TBPTT = re.compile(r"tbptt-(\d+)")


#: Why full BPTT is refused (the ``ostl stream`` command adds the memory it would need).
FULL_BPTT = (
    "full BPTT cannot learn on a stream: it keeps every step's activations until the stream "
    "ends, so its memory grows with the stream"
)
#: What to use instead.
INSTEAD = "use truncated BPTT instead, e.g. tbptt-16 (K steps held, an update every K)"


class FullBPTTError(UnsupportedError):
    """Full BPTT asked to learn on a stream: its memory grows with the stream."""


def stream_rule(spec: str) -> tuple[Rule, int]:
    """The rule and ``update_every`` of a rule spec: ``"tbptt-16"``, ``"ostl"``, ...

    Raises:
        FullBPTTError: ``"bptt"`` (see the module docstring).
        OptionError: an unknown spec, or ``tbptt-K`` with K < 1.
    """
    s = spec.strip().lower() if isinstance(spec, str) else spec
    if not isinstance(s, str):
        raise OptionError(f"a stream rule is a name such as 'ostl' or 'tbptt-16', got {spec!r}")
    m = _TBPTT.fullmatch(s)
    if m:
        k = int(m.group(1))
        if k < 1:
            raise OptionError(f"{spec}: the truncation K of tbptt-K must be at least 1")
        return BPTT(truncation=k), k
    if s == "bptt":
        raise FullBPTTError(f"{FULL_BPTT}; {INSTEAD}")
    if s in RULES:
        return get_rule(s), 1
    online = [r for r in RULES if r != "bptt"]
    raise OptionError(
        f"unknown stream rule {spec!r}: expected tbptt-K (K a positive integer) or one of "
        f"{', '.join(online)}"
    )
