"""The trace engine: one online step of every trace rule, as a function over an explicit carry.

::

    engine = TraceEngine(rule, net)            # static: plans, fixed random matrices
    carry = engine.init(batch_size)            # network state, traces, counters
    y_t, grads_t, carry = engine.step(params, carry, x_t, target_t, loss_fn)

At every step, for every layer l (bottom to top): the synaptic currents, the cell step and its
per-neuron Jacobians (closed form or derived, :mod:`.jacobians`). Then, at a step with a
target, the output error ∂E_t/∂ŷ_t (closed form for the shipped losses, :mod:`ostl.losses`)
and every layer's learning signal (:mod:`.signals`); finally each layer's traces advance one
step and are contracted with its signal in the same pass (:mod:`.diagonal`, :mod:`.exact`,
:mod:`.factorised`). ``grads_t`` is this step's dE_t/dθ (None at a step without a target):
the caller accumulates it or hands it to an optimizer.

The carry is donated: its trace tensors are updated in place and the returned carry replaces
it. Nothing is hidden elsewhere, so checkpoints, memory accounting and non-finite scans walk
the carry (:mod:`.carry`). The step makes no host synchronisation (counters, the loss sum and
the non-finite record stay on the device), so it can run ahead asynchronously on a GPU and be
compiled as a whole (``torch.compile``, :mod:`ostl.learner`'s ``compile=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells.base import NeuronJacobians
from ..errors import DTypeError, OptionError, ShapeError
from ..layer import Layer, Network, Readout
from ..losses import LossFn, value_and_grad
from . import diagonal, exact, factorised
from .carry import Stats, advance_stats, init_stats
from .jacobians import neuron_jacobians
from .signals import (
    draw_feedback,
    draw_projections,
    input_signal,
    projected_error,
    projected_target,
)

__all__ = ["Carry", "TraceEngine", "TraceSpec"]

Grads = dict[str, Tensor]


class TraceSpec(Protocol):
    """What the engine reads of a trace rule (:class:`ostl.rules.TraceRule`): its axes."""

    @property
    def name(self) -> str: ...
    @property
    def trace(self) -> str: ...  # "diagonal", "exact" or "snap1"
    @property
    def signal(self) -> str: ...  # "backprop", "random", "target" or "error"
    @property
    def seed(self) -> int: ...
    @property
    def scale(self) -> float | None: ...
    @property
    def distribution(self) -> str: ...
    @property
    def jacobians(self) -> str: ...  # "auto" or "derived"
    @property
    def trace_dtype(self) -> torch.dtype | None: ...
    @property
    def max_trace_bytes(self) -> int: ...


class Carry(NamedTuple):
    """What a trace rule carries from one step to the next."""

    state: tuple[Any, ...]  # each layer's state (a NamedTuple of (B, N) tensors)
    traces: tuple[Any, ...]  # each layer's trace carry (None for memoryless layers)
    stats: Stats  # step counter, loss sum, non-finite record


@dataclass(frozen=True)
class _LayerPlan:
    """Static facts about one layer, fixed at bind."""

    prefix: str  # "layers.<i>."
    stateful: bool
    trace: str | None  # "diagonal", "exact" or "factorised" (None for a Readout)
    plan: Any  # the trace module's plan
    gates: int
    o: int  # index of the output variable in the state


class TraceEngine:
    """A trace rule bound to a network: see the module docstring.

    Attributes:
        rule: the rule (its axes: trace, signal, options).
        net: the network.
        params: the trainable parameters by name (live: they follow optimizer updates).
        consts: fixed random matrices drawn at bind (``"feedback"`` or ``"projections"``),
            one entry per layer (None where a layer has none).
    """

    #: inputs are checked for NaN/Inf at the update, from the carry's record (no host sync)
    eager_checks = False
    #: the step can run under torch.compile as one graph
    compilable = True

    def __init__(self, rule: TraceSpec, net: Network) -> None:
        self.rule = rule
        self.net = net
        self.weights: dict[str, Tensor] = dict(net.named_parameters())
        self.params: dict[str, nn.Parameter] = {
            n: p for n, p in net.named_parameters() if p.requires_grad
        }
        self.layers = net.typed_layers
        self.plans = [self._plan(i, layer) for i, layer in enumerate(self.layers)]
        self.consts: dict[str, list[Tensor | None]] = {}
        self._dtype = net.dtype
        if rule.signal == "random":
            self.consts["feedback"] = draw_feedback(net, rule.seed)
        elif rule.signal in ("target", "error"):
            self.consts["projections"] = draw_projections(
                net, rule.seed, rule.scale, rule.distribution
            )

    def _plan(self, i: int, layer: Layer | Readout) -> _LayerPlan:
        prefix = f"layers.{i}."
        if isinstance(layer, Readout):
            return _LayerPlan(prefix, False, None, None, 1, 0)
        rule, o = self.rule, layer.cell.output_index()
        if rule.trace == "exact" and layer.recurrent:
            return _LayerPlan(prefix, True, "exact", exact.plan(layer), layer.n_gates, o)
        if rule.trace == "diagonal" and factorised.applies(layer):
            p: Any = factorised.plan(layer, rule.trace_dtype)
            return _LayerPlan(prefix, True, "factorised", p, layer.n_gates, o)
        p = diagonal.plan(layer, self_recurrence=rule.trace == "snap1", dtype=rule.trace_dtype)
        return _LayerPlan(prefix, True, "diagonal", p, layer.n_gates, o)

    # -- the carry -------------------------------------------------------------------------
    def init(self, batch_size: int) -> Carry:
        """Resting network state, zero traces, zero counters for ``batch_size`` sequences."""
        net = self.net
        dtype, device = net.dtype, net.device
        self._dtype = dtype  # for the target checks (a property that walks the parameters)
        traces: list[Any] = []
        for lp, layer in zip(self.plans, self.layers):
            if lp.trace == "exact":
                assert isinstance(layer, Layer)
                store = self.rule.trace_dtype
                if store is not None and store != dtype:
                    raise OptionError(
                        f"trace_dtype={store} applies to diagonal and factorised traces only: "
                        f"an exact trace (recurrence='exact', a layer with H) keeps the "
                        f"network's {dtype}. Use recurrence='diagonal' or trace_dtype=None."
                    )
                traces.append(
                    exact.init(lp.plan, layer, batch_size, dtype, device, self.rule.max_trace_bytes)
                )
            elif lp.trace == "factorised":
                traces.append(factorised.init(lp.plan, batch_size, dtype, device))
            elif lp.trace == "diagonal":
                traces.append(diagonal.init(lp.plan, batch_size, dtype, device))
            else:
                traces.append(None)
        return Carry(net.init_state(batch_size), tuple(traces), init_stats(dtype, device))

    # -- one step --------------------------------------------------------------------------
    @torch.no_grad()
    def step(
        self,
        params: Mapping[str, Tensor] | None,
        carry: Carry,
        x: Tensor,
        target: Any,
        loss_fn: LossFn,
    ) -> tuple[Tensor, Grads | None, Carry]:
        """One time step: (y_t, dE_t/dθ or None without a target, the new carry).

        ``params`` overrides the network's own parameters by name (None: the live ones).
        """
        w = params or {}
        if target is not None and self.rule.signal == "target":
            self._check_projected_target(target, x.shape[0])
        inputs, jacs, states = [], [], []
        h = x
        for i in range(len(self.layers)):
            inputs.append(h)
            h, s, J = self._forward(i, w, h, carry.state[i])
            states.append(s)
            jacs.append(J)
        y = h
        if target is None:
            traces = tuple(
                self._advance(i, w, carry, jacs[i], inputs[i], None)[0]
                for i in range(len(self.layers))
            )
            stats = advance_stats(carry.stats, x, None, None, None)
            return y, None, Carry(tuple(states), traces, stats)
        e, L_out = value_and_grad(loss_fn, y, target)
        signals = self._signals(w, L_out, target, jacs)
        grads: Grads = {}
        new_traces = []
        for i in range(len(self.layers)):
            tr, g = self._advance(i, w, carry, jacs[i], inputs[i], signals[i])
            new_traces.append(tr)
            grads.update(g)
        stats = advance_stats(carry.stats, x, target, L_out, e)
        return y, grads, Carry(tuple(states), tuple(new_traces), stats)

    @torch.no_grad()
    def step_unlocked(
        self,
        params: Mapping[str, Tensor] | None,
        carry: Carry,
        x: Tensor,
        target: Any,
        loss_fn: LossFn,
        apply: Callable[[int, Grads], None],
    ) -> tuple[Tensor, Carry]:
        """OSTTP's schedule without update locking: layer by layer, its own step, signal and
        gradient, handed to ``apply(i, grads_i)`` before the layer above runs.

        Only for the ``"target"`` signal (a hidden layer's signal needs only the target).
        """
        assert self.rule.signal == "target"
        w = params or {}
        if target is not None:
            self._check_projected_target(target, x.shape[0])
        last = len(self.layers) - 1
        states, traces = list(carry.state), list(carry.traces)
        h, L_out, e = x, None, None
        for i in range(last + 1):
            x_in = h
            h, states[i], J = self._forward(i, w, x_in, carry.state[i])
            if target is None:
                traces[i] = self._advance(i, w, carry, J, x_in, None)[0]
                continue
            if i < last:
                B_l = self.consts["projections"][i]
                assert B_l is not None
                L = projected_target(B_l, target)
            else:  # the output layer: its true error needs its own output only
                e, L_out = value_and_grad(loss_fn, h, target)
                L = L_out
            traces[i], g = self._advance(i, w, carry, J, x_in, L)
            apply(i, g)
        stats = advance_stats(carry.stats, x, target, L_out, e)
        return h, Carry(tuple(states), tuple(traces), stats)

    def finish(self, params: Mapping[str, Tensor] | None, carry: Carry) -> tuple[None, Carry]:
        """Nothing is pending for an online rule: (None, carry)."""
        return None, carry

    def restore(self, carry: Carry, loss_fn: LossFn | None) -> Carry:
        """A carry loaded from a checkpoint needs nothing more."""
        return carry

    # -- pieces ----------------------------------------------------------------------------
    def _forward(
        self, i: int, w: Mapping[str, Tensor], x: Tensor, s: Any
    ) -> tuple[Tensor, Any, NeuronJacobians | None]:
        """Layer i's step: (y_t, new state, its Jacobians or None for a Readout)."""
        layer, lp = self.layers[i], self.plans[i]
        pre = lp.prefix
        mine = {n[len(pre) :]: v for n, v in w.items() if n.startswith(pre)} if w else None
        if isinstance(layer, Readout):
            if mine is None:
                return layer(x, s)[0], s, None
            return F.linear(x, mine["W"], mine.get("b")), s, None
        cell = layer.cell
        a_in, a_rec = layer.currents(x, s) if mine is None else layer.currents(x, s, mine)
        phi = cell.neuron_params()
        if mine is not None:
            phi = {n: mine.get(f"cell.{n}", v) for n, v in phi.items()}
        derive = self.rule.jacobians == "derived"
        new, J = neuron_jacobians(cell, a_in, a_rec, s, phi, derive=derive)
        return new[lp.o], new, J

    def _weight(self, w: Mapping[str, Tensor], name: str) -> Tensor:
        """A parameter from the overrides ``w``, else the network's own."""
        return w[name] if name in w else self.weights[name]

    def _advance(
        self,
        i: int,
        w: Mapping[str, Tensor],
        carry: Carry,
        J: NeuronJacobians | None,
        x: Tensor,
        L: Tensor | None,
    ) -> tuple[Any, Grads]:
        """Layer i's traces one step on, and its gradient for the signal L (if given)."""
        lp = self.plans[i]
        pre = lp.prefix
        if lp.trace is None:  # a memoryless Readout: y = W x + b, its gradient is immediate
            if L is None:
                return None, {}
            g: Grads = {}
            if pre + "W" in self.params:
                g[pre + "W"] = L.T @ x
            if pre + "b" in self.params:
                g[pre + "b"] = L.sum(0)
            return None, g
        assert J is not None
        y_prev = carry.state[i][lp.o]
        trace = carry.traces[i]
        if lp.trace == "diagonal":
            H = self._weight(w, pre + "H") if lp.plan.self_recurrence else None
            trace, local = diagonal.advance(lp.plan, trace, J, x, y_prev, L, H)
        elif lp.trace == "exact":
            trace, local = exact.advance(
                lp.plan, trace, J, x, y_prev, L, self._weight(w, pre + "H")
            )
        else:
            trace, local = factorised.advance(lp.plan, trace, J, x, y_prev, L)
        return trace, {pre + n: g for n, g in (local or {}).items()}

    def _signals(
        self,
        w: Mapping[str, Tensor],
        L_out: Tensor,
        target: Any,
        jacs: list[NeuronJacobians | None],
    ) -> list[Tensor]:
        """Every layer's learning signal at this step (see :mod:`.signals`)."""
        kind, n = self.rule.signal, len(self.layers)
        if kind == "target":
            P = self.consts["projections"]
            return [projected_target(B, target) for B in P[:-1] if B is not None] + [L_out]
        if kind == "error":
            P = self.consts["projections"]
            return [projected_error(B, L_out) for B in P[:-1] if B is not None] + [L_out]
        feedback = self.consts.get("feedback")
        out: list[Tensor] = [L_out]
        for i in range(n - 1, 0, -1):  # the sweep across layers at step t
            lp = self.plans[i]
            fb = feedback[i] if feedback is not None else None
            F_i = self._weight(w, lp.prefix + "W") if fb is None else fb
            out.append(input_signal(out[-1], jacs[i], F_i, lp.gates, lp.o))
        return out[::-1]

    def _check_projected_target(self, target: Any, batch: int) -> None:
        net, dtype = self.net, self._dtype
        if (
            isinstance(target, Tensor)
            and target.dtype == dtype
            and target.shape
            == (
                batch,
                net.n_out,
            )
        ):
            return
        want = f"a float target y*_t of shape ({batch}, {net.n_out}) in {dtype}"
        if not isinstance(target, Tensor) or not target.is_floating_point():
            got = target.dtype if isinstance(target, Tensor) else type(target).__name__
            shape = f" of shape {tuple(target.shape)}" if isinstance(target, Tensor) else ""
            raise DTypeError(
                f"{self.rule.name.upper()} projects the target vector itself: expected {want} "
                f"(one-hot for classes), got {got}{shape}. For class labels pass "
                f"torch.nn.functional.one_hot(labels, {net.n_out}).to({dtype}) and a loss "
                "that takes one-hot targets."
            )
        if tuple(target.shape) != (batch, net.n_out):
            raise ShapeError(
                f"{self.rule.name.upper()} projects the target onto every hidden layer: "
                f"expected {want}, got shape {tuple(target.shape)} (its last dimension must "
                "equal the network's output)"
            )
        if target.dtype != dtype:
            raise DTypeError(f"{self.rule.name.upper()}: expected {want}, got dtype {target.dtype}")
