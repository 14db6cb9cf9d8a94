"""Online spatio-temporal learning (OSTL; Bohnstingl et al., IEEE TNNLS 2023).

dE/dθ^l = Σ_t L_t^l · e_t^l: eligibility traces e^l carried forward in time inside each layer
(:mod:`ostl.traces`) times learning signals L^l computed by one sweep *across layers at the
current step*: ``L_t^L = ∂E_t/∂ŷ_t`` and ``L_t^l = L_t^{l+1} · ∂y_t^{l+1}/∂y_t^l`` with the upper
layers' previous states held fixed.

Options:
    recurrence: ``"diagonal"`` (default) keeps each neuron's own dynamics and drops the H term:
        O(N²) memory and compute per step, exact without H; ``"exact"`` keeps the H term:
        O(N³) memory and O(N⁴) compute per step (RTRL cost within a layer), exact with H.
        Layers without H use the diagonal trace either way (there it is exact).
    feedback: ``"weights"`` sweeps the signal down through the transposed forward weights
        (W^{l+1})ᵀ; ``"random"`` through fixed random matrices of the same shapes ("OSTL rnd",
        approximate; drawn once per bind from ``seed``, uniform in ±1/√fan_in like W).

When exact (float64, weights fixed over the sequence): one stateful layer plus memoryless
layers (Readouts) above it, with recurrence="exact" (or without H). In deeper networks the
gradient of θ^l equals BPTT's in the network where every layer above l receives its previous
state detached (``BPTT(detach_above=l)``): OSTL drops the paths through the upper layers' past.

Extension hooks (used by OSTTP, e-prop, SnAp-1, DFA; see ``docs/extending.md``): a rule built on
these traces subclasses :class:`TraceRule` and its runner subclasses :class:`OSTLRunner`,
overriding :meth:`OSTLRunner._signals` (the learning signals), :meth:`OSTLRunner._make_trace`
(the trace recursion) or :meth:`OSTLRunner._make_feedback` (fixed matrices drawn at bind).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, OptionError
from ..layer import Layer, Network, Readout
from ..traces import (
    ExactTrace,
    LayerTrace,
    NeuronJacobians,
    diagonal_trace,
    input_signal,
    neuron_jacobians,
)
from .base import LossFn, Rule, Runner, pack_state, unpack_state

__all__ = ["TraceRule", "OSTL", "OSTLRunner", "random_feedback"]


#: Storage dtypes a diagonal or factorised trace may use (``trace_dtype``).
TRACE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class TraceRule(Rule):
    """Base of the rules that run on OSTL's traces and runner (OSTL, OSTTP, e-prop, SnAp-1).

    Attributes every such rule sets in its constructor:
        recurrence: ``"exact"`` or ``"diagonal"``: the trace of layers with H (see OSTL).
        seed: seed of the fixed random matrices drawn at bind, if any.
        max_trace_bytes: memory limit of one exact trace.

    Attributes with defaults (set through :meth:`set_trace_options`):
        jacobians: ``"auto"`` uses a cell's closed-form Jacobians where it has them,
            ``"derived"`` always derives them with ``torch.func`` (the generic path every user
            cell takes; slower, for comparison and checks).
        trace_dtype: storage dtype of diagonal and factorised traces (None: the network's).
            ``torch.bfloat16`` / ``torch.float16`` halve the trace memory and traffic; the
            arithmetic runs in float32 and the gradient is accumulated in the network's dtype,
            but each step's trace is rounded to the storage dtype (approximate: the bench
            reports the cosine to the full-precision gradient). Exact traces (H kept) refuse it.
    """

    recurrence: str
    seed: int
    max_trace_bytes: int
    jacobians: str = "auto"
    trace_dtype: torch.dtype | None = None

    def set_trace_options(self, jacobians: str, trace_dtype: torch.dtype | None) -> None:
        """Check and set :attr:`jacobians` and :attr:`trace_dtype`."""
        if jacobians not in ("auto", "derived"):
            raise OptionError(f"jacobians must be 'auto' or 'derived', got {jacobians!r}")
        if trace_dtype is not None and trace_dtype not in TRACE_DTYPES:
            names = ", ".join(str(d) for d in TRACE_DTYPES)
            raise OptionError(f"trace_dtype must be None or one of {names}, got {trace_dtype!r}")
        self.jacobians = jacobians
        self.trace_dtype = trace_dtype


def random_feedback(net: Network, seed: int) -> list[Tensor | None]:
    """Fixed random matrices of the shapes of every layer's W but the first (None for layer 0).

    Uniform in ±1/√fan_in like W, drawn in float64 from ``seed`` (so the same for every dtype)
    and cast to the network's dtype and device.
    """
    fb: list[Tensor | None] = [None]
    gen = torch.Generator().manual_seed(seed)
    for layer in net.typed_layers[1:]:
        W = layer.W
        bound = W.shape[1] ** -0.5
        r = (torch.rand(W.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        fb.append(r.to(dtype=W.dtype, device=W.device))
    return fb


class OSTL(TraceRule):
    """OSTL: eligibility traces × learning signals from a sweep across layers at step t.

    Exact (equals BPTT) for one stateful layer plus memoryless layers above it, with
    ``recurrence="exact"`` or without H; deeper, it equals ``BPTT(detach_above=l)`` for layer l.
    Per sample and layer of N neurons (k state variables, G gates): memory N·k·G·(n_in + N)
    and O(N²) compute per step (diagonal), or N times that memory and O(N⁴) compute (exact).
    See the module docstring for the equations and options; ``jacobians`` and
    ``trace_dtype`` are described in :class:`TraceRule`.
    """

    name = "ostl"

    def __init__(
        self,
        recurrence: str = "diagonal",
        feedback: str = "weights",
        seed: int = 0,
        max_trace_bytes: int = 2**30,
        *,
        jacobians: str = "auto",
        trace_dtype: torch.dtype | None = None,
    ) -> None:
        if recurrence not in ("exact", "diagonal"):
            raise OptionError(f"recurrence must be 'exact' or 'diagonal', got {recurrence!r}")
        if feedback not in ("weights", "random"):
            raise OptionError(f"feedback must be 'weights' or 'random', got {feedback!r}")
        self.set_trace_options(jacobians, trace_dtype)
        self.recurrence = recurrence
        self.feedback = feedback
        self.seed = seed
        self.max_trace_bytes = max_trace_bytes

    def bind(self, net: Network) -> OSTLRunner:
        return OSTLRunner(self, net)


class OSTLRunner(Runner):
    """OSTL bound to a network. Subclasses change the learning signals (:meth:`_signals`)."""

    rule: TraceRule

    def __init__(self, rule: TraceRule, net: Network) -> None:
        super().__init__(rule, net)
        self.feedback = self._make_feedback()
        self.traces: list[LayerTrace | None] = []
        self.state: tuple[Any, ...] = ()

    def _make_feedback(self) -> list[Tensor | None]:
        """Matrix carrying the signal from layer i down to layer i-1 (None: the live W)."""
        if isinstance(self.rule, OSTL) and self.rule.feedback == "random":
            return random_feedback(self.net, self.rule.seed)
        return [None] * len(self.net.layers)

    def _make_trace(self, layer: Layer, batch_size: int) -> LayerTrace:
        """The eligibility trace of one stateful layer (a hook: SnAp-1 replaces it)."""
        net, dtype = self.net, self.rule.trace_dtype or self.net.dtype
        if self.rule.recurrence == "exact" and layer.recurrent:
            if dtype != net.dtype:
                raise OptionError(
                    f"trace_dtype={dtype} applies to diagonal and factorised traces only: an "
                    f"exact trace (recurrence='exact', a layer with H) keeps the network's "
                    f"{net.dtype}. Use recurrence='diagonal' or trace_dtype=None."
                )
            return ExactTrace(layer, batch_size, net.dtype, net.device, self.rule.max_trace_bytes)
        return diagonal_trace(layer, batch_size, dtype, net.device)

    def _reset(self, batch_size: int) -> None:
        net = self.net
        self.state = net.init_state(batch_size)
        self.traces = [
            self._make_trace(layer, batch_size) if isinstance(layer, Layer) else None
            for layer in net.layers
        ]

    @torch.no_grad()
    def _step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor:
        x = x_t
        inputs: list[Tensor] = []
        jacs: list[NeuronJacobians | None] = []
        for i in range(len(self.net.layers)):
            inputs.append(x)
            x, J = self._layer_step(i, x)
            jacs.append(J)
        if target_t is not None:
            L_out = self._loss_signal(x, target_t, loss_fn)
            for i, L in enumerate(self._signals(L_out, target_t, inputs, jacs)):
                self._apply_signal(i, L, inputs[i])
        return x

    def _layer_step(self, i: int, x: Tensor) -> tuple[Tensor, NeuronJacobians | None]:
        """Layer i's own step: forward, Jacobians, trace update; returns (y_t, J or None).

        Touches only layer i's state and trace, so a subclass may run it layer by layer and
        interleave per-layer work (OSTTP's update-unlocked schedule).
        """
        layer, s, trace = self.net.layers[i], self.state[i], self.traces[i]
        J: NeuronJacobians | None = None
        if isinstance(layer, Layer):
            assert trace is not None
            a_in, a_rec = layer.currents(x, s)
            derive = self.rule.jacobians == "derived"
            s_new, J = neuron_jacobians(layer.cell, a_in, a_rec, s, derive=derive)
            trace.update(J, x, getattr(s, layer.cell.output))
            y = getattr(s_new, layer.cell.output)
        else:
            y, s_new = layer(x, s)
        self.state = self.state[:i] + (s_new,) + self.state[i + 1 :]
        return y, J

    def _signals(
        self, L_out: Tensor, target: Any, inputs: list[Tensor], jacs: list[NeuronJacobians | None]
    ) -> list[Tensor]:
        """Learning signal L^l (B, n_out^l) of every layer: the sweep across layers at step t."""
        layers = self.net.typed_layers
        signals: list[Tensor] = [L_out]
        for i in range(len(layers) - 1, 0, -1):
            layer, L = layers[i], signals[0]
            fb = self.feedback[i]
            F = layer.W.detach() if fb is None else fb
            J = jacs[i]
            if J is None:
                signals.insert(0, L @ F)
            else:
                assert isinstance(layer, Layer)
                signals.insert(0, input_signal(L, J, F, layer))
        return signals

    def _apply_signal(self, i: int, L: Tensor, x: Tensor) -> None:
        """Accumulate layer i's gradient for its learning signal L."""
        layer, trace = self.net.layers[i], self.traces[i]
        prefix = f"layers.{i}."
        if trace is not None:
            for name, g in trace.grads(L):
                self._accumulate(prefix + name, g)
        else:
            assert isinstance(layer, Readout)
            self._accumulate(prefix + "W", L.T @ x)
            if layer.b is not None:
                self._accumulate(prefix + "b", L.sum(0))

    def _state_extra(self) -> dict[str, Any]:
        return {
            "state": pack_state(self.state),
            "traces": [None if tr is None else tr.state_dict() for tr in self.traces],
            "feedback": _fixed(self.feedback),
        }

    def _load_extra(self, extra: dict[str, Any], loss_fn: LossFn | None) -> None:
        self.state = unpack_state(self.state, extra["state"])
        saved = extra["traces"]
        if len(saved) != len(self.traces):
            raise CheckpointError(
                f"traces of {len(saved)} layers, the network has {len(self.traces)}"
            )
        for i, (tr, sd) in enumerate(zip(self.traces, saved)):
            if (tr is None) != (sd is None):
                raise CheckpointError(f"layer {i}: the checkpoint's trace does not match the layer")
            if tr is not None:
                tr.load_state_dict(sd)
        self.feedback = _load_fixed(self.feedback, extra["feedback"], "feedback matrices")

    def state_tensors(self) -> Iterator[Tensor]:
        yield from super().state_tensors()
        for s in self.state:
            yield from s
        for tr in self.traces:
            if tr is not None:
                yield from tr.tensors()
        yield from (f for f in self.feedback if f is not None)


def _fixed(mats: list[Tensor | None]) -> list[Tensor | None]:
    """Fixed random matrices (feedback, projections) for a checkpoint."""
    return [None if m is None else m.detach().clone() for m in mats]


def _load_fixed(
    mats: list[Tensor | None], saved: list[Tensor | None], what: str
) -> list[Tensor | None]:
    """The saved matrices, checked against the freshly drawn ones (same layers and shapes)."""
    if len(saved) != len(mats) or any(
        (m is None) != (s is None) or (m is not None and s is not None and m.shape != s.shape)
        for m, s in zip(mats, saved)
    ):
        raise CheckpointError(f"the checkpoint's {what} do not match the network")
    return [
        None if s is None or m is None else s.to(dtype=m.dtype, device=m.device).clone()
        for m, s in zip(mats, saved)
    ]
