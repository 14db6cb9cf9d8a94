"""Trace rules: eligibility traces × learning signals, as points on a few axes.

Every rule that learns online from eligibility traces is one :class:`TraceRule`, a frozen
configuration of

- ``trace``: how each layer's traces recur (:mod:`ostl.engine`): ``"diagonal"`` (each neuron's
  own dynamics, the H term dropped; O(N²); factorised into presynaptic traces where that is
  exact), ``"exact"`` (the H term kept in layers with H; O(N³) memory, O(N⁴) work: RTRL within
  the layer) or ``"snap1"`` (the diagonal trace with the self-connection H_pp, SnAp-1);
- ``signal``: what the traces are contracted with (:mod:`ostl.engine.signals`):
  ``"backprop"`` (the error swept down through the transposed weights at step t),
  ``"random"`` (the same sweep through fixed random matrices), ``"target"`` (a fixed random
  projection of the target, OSTTP) or ``"error"`` (of the output error, DFA);
- options: the fixed random matrices' ``seed`` (and, for projections, ``scale`` and
  ``distribution``), ``jacobians`` (``"auto"``: closed forms where a cell has them;
  ``"derived"``: always ``torch.func``), ``trace_dtype`` (storage of diagonal and factorised
  traces: bfloat16/float16 halve their memory and traffic; approximate), ``max_trace_bytes``
  (the memory limit of an exact trace) and ``needs_readout`` (e-prop: the signal is the readout
  error, so the network must end with a Readout).

OSTL, OSTTP, e-prop, SnAp-1 and DFA are presets (:mod:`ostl.rules`): each is a subclass whose
only code is a constructor mapping its published options onto these axes. Any other
combination is a ``TraceRule(...)`` away, e.g. ``TraceRule(trace="snap1", signal="target")``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..engine import TraceEngine
from ..engine.signals import SIGNALS, check_projection_options
from ..errors import OptionError, UnsupportedError
from ..layer import Network, Readout
from .base import Rule

__all__ = ["TraceRule", "TRACES", "SIGNALS", "TRACE_DTYPES"]

#: How each layer's traces recur.
TRACES = ("diagonal", "exact", "snap1")
#: Storage dtypes a diagonal or factorised trace may use (``trace_dtype``).
TRACE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class TraceRule(Rule):
    """A rule on eligibility traces: a point on the axes of the module docstring.

    Exactness: equals BPTT for one stateful layer (plus memoryless layers above it) when the
    trace is exact for it (no H, or ``trace="exact"``) and the signal is ``"backprop"``; deeper,
    with ``"backprop"`` it equals BPTT with the upper layers' previous states detached. Other
    signals are approximate, except for the output layer, which always learns from its true
    error. Memory per sample and layer of N neurons (k state variables, G gates): at most
    N·k·G·(n_in + N + 1) (diagonal), N times that (exact); nothing grows with the sequence.
    """

    name: ClassVar[str] = "trace"

    def __init__(
        self,
        trace: str = "diagonal",
        signal: str = "backprop",
        *,
        seed: int = 0,
        scale: float | None = None,
        distribution: str = "uniform",
        jacobians: str = "auto",
        trace_dtype: torch.dtype | None = None,
        max_trace_bytes: int = 2**30,
        needs_readout: bool = False,
    ) -> None:
        if trace not in TRACES:
            raise OptionError(f"trace must be one of {TRACES}, got {trace!r}")
        if signal not in SIGNALS:
            raise OptionError(f"signal must be one of {SIGNALS}, got {signal!r}")
        if jacobians not in ("auto", "derived"):
            raise OptionError(f"jacobians must be 'auto' or 'derived', got {jacobians!r}")
        if trace_dtype is not None and trace_dtype not in TRACE_DTYPES:
            names = ", ".join(str(d) for d in TRACE_DTYPES)
            raise OptionError(f"trace_dtype must be None or one of {names}, got {trace_dtype!r}")
        check_projection_options(scale, distribution)
        self._axes = {
            "trace": trace,
            "signal": signal,
            "seed": seed,
            "scale": scale,
            "distribution": distribution,
            "jacobians": jacobians,
            "trace_dtype": trace_dtype,
            "max_trace_bytes": max_trace_bytes,
            "needs_readout": needs_readout,
        }
        self._options: dict[str, Any] = dict(self._axes)

    # The axes, read-only.
    trace = property(lambda self: self._axes["trace"])
    signal = property(lambda self: self._axes["signal"])
    seed = property(lambda self: self._axes["seed"])
    scale = property(lambda self: self._axes["scale"])
    distribution = property(lambda self: self._axes["distribution"])
    jacobians = property(lambda self: self._axes["jacobians"])
    trace_dtype = property(lambda self: self._axes["trace_dtype"])
    max_trace_bytes = property(lambda self: self._axes["max_trace_bytes"])
    needs_readout = property(lambda self: self._axes["needs_readout"])

    def _published(self, **options: Any) -> None:
        """For presets: the options as the preset's constructor takes them (repr, options())."""
        self._options = options

    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def engine(self, net: Network) -> TraceEngine:
        if self.needs_readout and not isinstance(net.layers[-1], Readout):
            raise UnsupportedError(
                f"{self!r}: the learning signal is the readout error sent back through the "
                f"readout weights; the network must end with an ostl.Readout, but its last "
                f"layer is a {type(net.layers[-1]).__name__}. Add ostl.Readout(n, n_out) on "
                "top, or use OSTL (any output layer)."
            )
        return TraceEngine(self, net)
