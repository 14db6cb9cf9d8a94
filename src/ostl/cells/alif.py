"""Adaptive leaky integrate-and-fire neuron (ALIF; the LSNN neuron of e-prop, Bellec et al. 2020).

    v_t = α v_{t-1} + a_t - ϑ z_{t-1}                     (subtractive reset)
    a^th_t = ρ a^th_{t-1} + z_{t-1}                        (threshold adaptation)
    A_t = ϑ + β a^th_t                                     (adaptive threshold)
    z_t = Θ(v_t - A_t)                                     a_t = W x_t + H z_{t-1}

- ``v``: membrane; ``a`` (a^th): adaptation variable; ``z``: spike.
- ``α`` (``decay``) = exp(-Δt/τ_m); ``ρ`` (``adaptation_decay``) = exp(-Δt/τ_a);
  ``β`` (``beta``): adaptation strength; ``ϑ`` (``threshold``): baseline threshold.

``detach_reset=True`` stops the gradient through the reset term ϑ z_{t-1} of v only (the
adaptation path a_t ← z_{t-1} stays differentiated), as in e-prop's ALIF eligibility traces
(Bellec et al. 2020, Methods). Default off.

Defaults (ours): α = 0.9 (τ_m = 10 steps), ρ = exp(-1/200) (τ_a = 200 steps), β = 0.2, ϑ = 1,
fast-sigmoid surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from torch import Tensor

from ..surrogate import Surrogate, get_surrogate, spike
from .base import Cell, NeuronJacobians, pack_jacobians, total_current


class ALIFState(NamedTuple):
    v: Tensor  # (B, N) membrane potential
    a: Tensor  # (B, N) threshold adaptation
    z: Tensor  # (B, N) spikes


class ALIF(Cell):
    """LIF neuron with an adaptive threshold A_t = ϑ + β a_t."""

    State = ALIFState
    output = "z"
    spiking = True
    has_output_map = True
    has_closed_form = True

    def __init__(
        self,
        n: int,
        *,
        decay: float = 0.9,
        adaptation_decay: float = math.exp(-1 / 200),
        beta: float = 0.2,
        threshold: float = 1.0,
        surrogate: str | Surrogate = "fast_sigmoid",
        trainable: Iterable[str] = (),
        detach_reset: bool = False,
    ) -> None:
        super().__init__(n, trainable)
        self._add_neuron_param("decay", decay)
        self._add_neuron_param("adaptation_decay", adaptation_decay)
        self._add_neuron_param("beta", beta)
        self._add_neuron_param("threshold", threshold)
        self._check_trainable()
        self.detach_reset = bool(detach_reset)
        self.surrogate = get_surrogate(surrogate)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: ALIFState, p: dict[str, Tensor]
    ) -> ALIFState:
        cur = total_current(a_in, a_rec)[..., 0, :]
        z_reset = state.z.detach() if self.detach_reset else state.z
        v = p["decay"] * state.v + cur - p["threshold"] * z_reset
        a = p["adaptation_decay"] * state.a + state.z
        z = spike(v - (p["threshold"] + p["beta"] * a), self.surrogate)
        return ALIFState(v, a, z)

    def output_map(self, state: ALIFState, p: dict[str, Tensor]) -> Tensor:
        return spike(state.v - (p["threshold"] + p["beta"] * state.a), self.surrogate)

    def jacobians(
        self, a_in: Tensor, a_rec: Tensor | None, state: ALIFState, p: dict[str, Tensor]
    ) -> tuple[ALIFState, NeuronJacobians]:
        cur = total_current(a_in, a_rec)[..., 0, :]
        alpha, rho, beta, th = p["decay"], p["adaptation_decay"], p["beta"], p["threshold"]
        v0, a0, z0 = state.v, state.a, state.z
        v = alpha * v0 + cur - th * z0
        a = rho * a0 + z0
        x = v - (th + beta * a)
        sg = self.surrogate.derivative(x)  # ∂z_t/∂x_t; z_t depends on v_t (+1) and a_t (-β)
        dv_dz: Tensor | float = 0.0 if self.detach_reset else -th
        trained = self.trainable_names  # the derivatives of fixed φ are not computed
        rows = {
            "decay": lambda: [v0, 0.0, None],
            "adaptation_decay": lambda: [0.0, a0, None],
            "beta": lambda: [0.0, 0.0, None],
            "threshold": lambda: [-z0, 0.0, None],
        }
        params = {n: rows[n]() for n in trained}
        out_params: dict[str, Tensor | float] = {"decay": 0.0, "adaptation_decay": 0.0}
        if "beta" in trained:
            out_params["beta"] = -sg * a
        if "threshold" in trained:
            out_params["threshold"] = -sg
        J = pack_jacobians(
            self,
            state=[[alpha, 0.0, dv_dz], [0.0, rho, 1.0], None],  # z's row: implied by the map
            current=[1.0, 0.0, sg],
            recurrent=a_rec is not None,
            params=params,  # type: ignore[arg-type]
            out=[sg, -sg * beta, 0.0],
            out_params=out_params,
        )
        return ALIFState(v, a, (x > 0).to(x.dtype)), J
