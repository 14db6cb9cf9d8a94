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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..layer import Layer, Network, Readout
from ..traces import (
    DiagonalTrace,
    ExactTrace,
    LayerTrace,
    NeuronJacobians,
    input_signal,
    neuron_jacobians,
)
from .base import LossFn, Rule, Runner

__all__ = ["OSTL", "OSTLRunner"]


class OSTL(Rule):
    """OSTL: eligibility traces × learning signals from a sweep across layers at step t.

    Exact (equals BPTT) for one stateful layer plus memoryless layers above it, with
    ``recurrence="exact"`` or without H; deeper, it equals ``BPTT(detach_above=l)`` for layer l.
    Per sample and layer of N neurons (k state variables, G gates): memory N·k·G·(n_in + N)
    and O(N²) compute per step (diagonal), or N times that memory and O(N⁴) compute (exact).
    See the module docstring for the equations and options.
    """

    name = "ostl"

    def __init__(
        self,
        recurrence: str = "diagonal",
        feedback: str = "weights",
        seed: int = 0,
        max_trace_bytes: int = 2**30,
    ) -> None:
        if recurrence not in ("exact", "diagonal"):
            raise ValueError(f"recurrence must be 'exact' or 'diagonal', got {recurrence!r}")
        if feedback not in ("weights", "random"):
            raise ValueError(f"feedback must be 'weights' or 'random', got {feedback!r}")
        self.recurrence = recurrence
        self.feedback = feedback
        self.seed = seed
        self.max_trace_bytes = max_trace_bytes

    def bind(self, net: Network) -> OSTLRunner:
        return OSTLRunner(self, net)


class OSTLRunner(Runner):
    """OSTL bound to a network. Subclasses change the learning signals (:meth:`_signals`)."""

    rule: OSTL

    def __init__(self, rule: OSTL, net: Network) -> None:
        super().__init__(rule, net)
        self.feedback = self._make_feedback()
        self.traces: list[LayerTrace | None] = []
        self.state: tuple[Any, ...] = ()

    def _make_feedback(self) -> list[Tensor | None]:
        """Matrix carrying the signal from layer i down to layer i-1 (None for layer 0)."""
        fb: list[Tensor | None] = [None]
        gen = torch.Generator().manual_seed(self.rule.seed)
        for layer in self.net.typed_layers[1:]:
            W = layer.W
            if self.rule.feedback == "weights":
                fb.append(None)  # use the live W at each step
            else:
                bound = W.shape[1] ** -0.5
                r = (torch.rand(W.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
                fb.append(r.to(dtype=W.dtype, device=W.device))
        return fb

    def _reset(self, batch_size: int) -> None:
        net = self.net
        self.state = net.init_state(batch_size)
        self.traces = []
        for layer in net.layers:
            if not isinstance(layer, Layer):
                self.traces.append(None)
            elif self.rule.recurrence == "exact" and layer.recurrent:
                self.traces.append(
                    ExactTrace(layer, batch_size, net.dtype, net.device, self.rule.max_trace_bytes)
                )
            else:
                self.traces.append(DiagonalTrace(layer, batch_size, net.dtype, net.device))

    @torch.no_grad()
    def _step(self, x_t: Tensor, target_t: Any, loss_fn: LossFn) -> Tensor:
        x = x_t
        inputs: list[Tensor] = []
        jacs: list[NeuronJacobians | None] = []
        new_state = []
        for layer, s, trace in zip(self.net.layers, self.state, self.traces):
            inputs.append(x)
            if isinstance(layer, Layer):
                assert trace is not None
                a_in, a_rec = layer.currents(x, s)
                s_new, J = neuron_jacobians(layer.cell, a_in, a_rec, s)
                trace.update(J, x, getattr(s, layer.cell.output))
                x = getattr(s_new, layer.cell.output)
                jacs.append(J)
            else:
                x, s_new = layer(x, s)
                jacs.append(None)
            new_state.append(s_new)
        self.state = tuple(new_state)
        if target_t is not None:
            L_out = self._loss_signal(x, target_t, loss_fn)
            for i, L in enumerate(self._signals(L_out, target_t, inputs, jacs)):
                self._apply_signal(i, L, inputs[i])
        return x

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

    def state_tensors(self) -> Iterator[Tensor]:
        yield from super().state_tensors()
        for s in self.state:
            yield from s
        for tr in self.traces:
            if tr is not None:
                yield from tr.tensors()
        yield from (f for f in self.feedback if f is not None)
