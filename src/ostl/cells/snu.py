"""Spiking Neural Unit (SNU) and soft SNU (Woźniak et al., Nature Machine Intelligence 2020).

    s_t = g(a_t + l(τ) ⊙ s_{t-1} ⊙ (1 - y_{t-1}))       a_t = W x_t + H y_{t-1}
    y_t = h(s_t + b)

- ``s``: membrane potential; ``y``: output; ``l(τ)`` (``decay``): membrane decay;
  ``b``: per-neuron bias (a negative threshold), trainable by default.
- SNU: ``g = ReLU``, ``h = Θ`` (step) with a surrogate derivative; the reset gate
  ``(1 - y_{t-1})`` clears the membrane after a spike.
- sSNU (soft SNU): ``h = sigmoid``; the output is graded and the model is fully differentiable.

Defaults (ours; the paper sets them per task): ``decay = 0.8``, ``b = -1.0`` at init,
fast-sigmoid surrogate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from ..surrogate import Surrogate, get_surrogate, spike
from .base import Cell, NeuronJacobians, pack_jacobians, total_current


class SNUState(NamedTuple):
    s: Tensor  # (B, N) membrane potential
    y: Tensor  # (B, N) output


class SNU(Cell):
    """Spiking neural unit: ReLU membrane, step output with surrogate derivative."""

    State = SNUState
    output = "y"
    spiking = True  # y ∈ {0, 1}; the soft SNU below is not spiking
    has_output_map = True
    has_closed_form = True

    def __init__(
        self,
        n: int,
        *,
        decay: float = 0.8,
        b: float = -1.0,
        surrogate: str | Surrogate = "fast_sigmoid",
        trainable: Iterable[str] = ("b",),
    ) -> None:
        super().__init__(n, trainable)
        self._add_neuron_param("decay", decay)
        self._add_neuron_param("b", b)
        self._check_trainable()
        self.surrogate = get_surrogate(surrogate)

    def activation(self, x: Tensor) -> Tensor:
        """h: the output nonlinearity."""
        return spike(x, self.surrogate)

    def activation_derivative(self, x: Tensor) -> Tensor:
        """h' (the surrogate derivative for the spiking SNU)."""
        return self.surrogate.derivative(x)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: SNUState, p: dict[str, Tensor]
    ) -> SNUState:
        a = total_current(a_in, a_rec)[..., 0, :]
        s = torch.relu(a + p["decay"] * state.s * (1 - state.y))
        return SNUState(s, self.activation(s + p["b"]))

    def output_map(self, state: SNUState, p: dict[str, Tensor]) -> Tensor:
        return self.activation(state.s + p["b"])

    def jacobians(
        self, a_in: Tensor, a_rec: Tensor | None, state: SNUState, p: dict[str, Tensor]
    ) -> tuple[SNUState, NeuronJacobians]:
        a = total_current(a_in, a_rec)[..., 0, :]
        d, b, s0, y0 = p["decay"], p["b"], state.s, state.y
        not_spiked = 1 - y0
        pre = a + d * s0 * not_spiked
        r = (pre > 0).to(pre.dtype)  # ReLU'
        s = pre * r
        sb = s + b
        hp = self.activation_derivative(sb)  # ∂y_t/∂s_t
        rd = r * d
        trained = self.trainable_names  # the derivatives of fixed φ are not computed
        params: dict[str, list[Tensor | float | None]] = {}
        if "decay" in trained:
            params["decay"] = [r * s0 * not_spiked, None]
        if "b" in trained:
            params["b"] = [0.0, None]
        J = pack_jacobians(
            self,
            state=[[rd * not_spiked, -(rd * s0)], None],  # y's row is implied by the map
            current=[r, hp * r],
            recurrent=a_rec is not None,
            params=params,
            out=[hp, 0.0],
            out_params={"decay": 0.0, "b": hp},
        )
        return SNUState(s, self.activation(sb).detach()), J


class SoftSNU(SNU):
    """Soft SNU: the SNU with h = sigmoid (graded output, no surrogate needed)."""

    spiking = False  # y ∈ (0, 1): a rate, not a spike

    def activation(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def activation_derivative(self, x: Tensor) -> Tensor:
        y = torch.sigmoid(x)
        return y * (1 - y)
