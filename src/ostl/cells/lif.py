"""Leaky integrate-and-fire neuron (LIF): the SNU with g = identity and a fixed threshold.

    v_t = α ⊙ v_{t-1} ⊙ (1 - z_{t-1}) + a_t              (reset="hard")
    v_t = α ⊙ v_{t-1} + a_t - ϑ ⊙ z_{t-1}                (reset="subtract", as in e-prop)
    z_t = Θ(v_t - ϑ)                                      a_t = W x_t + H z_{t-1}

- ``v``: membrane potential; ``z``: spike; ``α`` (``decay``): membrane decay exp(-Δt/τ_m);
  ``ϑ`` (``threshold``): firing threshold. Both fixed unless named in ``trainable``.
- ``detach_reset=True`` stops the gradient through the reset term (z_{t-1} in the reset only):
  the forward is unchanged, every rule (BPTT included) then ignores the reset's derivative, as
  e-prop does (Bellec et al. 2020). Default off: the reset path is differentiated.

Defaults (ours): ``α = 0.9`` (τ_m = 10 steps), ``ϑ = 1``, hard reset, fast-sigmoid surrogate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from torch import Tensor

from ..errors import OptionError
from ..surrogate import Surrogate, get_surrogate, spike
from .base import Cell, NeuronJacobians, pack_jacobians, total_current


class LIFState(NamedTuple):
    v: Tensor  # (B, N) membrane potential
    z: Tensor  # (B, N) spikes


class LIF(Cell):
    """Leaky integrate-and-fire neuron with hard or subtractive reset."""

    State = LIFState
    output = "z"
    spiking = True
    has_output_map = True
    has_closed_form = True

    def __init__(
        self,
        n: int,
        *,
        decay: float = 0.9,
        threshold: float = 1.0,
        reset: str = "hard",
        surrogate: str | Surrogate = "fast_sigmoid",
        trainable: Iterable[str] = (),
        detach_reset: bool = False,
    ) -> None:
        super().__init__(n, trainable)
        if reset not in ("hard", "subtract"):
            raise OptionError(f"LIF reset must be 'hard' or 'subtract', got {reset!r}")
        self._add_neuron_param("decay", decay)
        self._add_neuron_param("threshold", threshold)
        self._check_trainable()
        self.reset = reset
        self.detach_reset = bool(detach_reset)
        self.surrogate = get_surrogate(surrogate)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: LIFState, p: dict[str, Tensor]
    ) -> LIFState:
        a = total_current(a_in, a_rec)[..., 0, :]
        z = state.z.detach() if self.detach_reset else state.z  # z_{t-1} as the reset sees it
        if self.reset == "hard":
            v = p["decay"] * state.v * (1 - z) + a
        else:
            v = p["decay"] * state.v + a - p["threshold"] * z
        return LIFState(v, spike(v - p["threshold"], self.surrogate))

    def output_map(self, state: LIFState, p: dict[str, Tensor]) -> Tensor:
        return spike(state.v - p["threshold"], self.surrogate)

    def factorised_decay(self) -> float | None:
        """α for a subtractive reset whose derivative is stopped, with one fixed decay."""
        decay = self.neuron_params()["decay"]
        if self.reset != "subtract" or not self.detach_reset or "decay" in self.trainable_names:
            return None
        if not bool((decay == decay[0]).all()):
            return None
        return float(decay[0])

    def jacobians(
        self, a_in: Tensor, a_rec: Tensor | None, state: LIFState, p: dict[str, Tensor]
    ) -> tuple[LIFState, NeuronJacobians]:
        a = total_current(a_in, a_rec)[..., 0, :]
        alpha, th, v0, z0 = p["decay"], p["threshold"], state.v, state.z
        trained = self.trainable_names  # the derivatives of fixed φ are not computed
        dv_dz: Tensor | float = 0.0  # the reset's own derivative (none if detached)
        dv_dth: Tensor | float
        if self.reset == "hard":
            not_spiked = 1 - z0
            dv_dv: Tensor | float = alpha * not_spiked
            v = dv_dv * v0 + a
            if not self.detach_reset:
                dv_dz = -(alpha * v0)
            dv_dalpha = v0 * not_spiked if "decay" in trained else 0.0
            dv_dth = 0.0
        else:
            v = alpha * v0 + a - th * z0
            dv_dv, dv_dalpha, dv_dth = alpha, v0, -z0
            if not self.detach_reset:
                dv_dz = -th
        x = v - th
        sg = self.surrogate.derivative(x)  # ∂z_t/∂v_t
        params: dict[str, list[Tensor | float | None]] = {}
        out_params: dict[str, Tensor | float] = {"decay": 0.0}
        if "decay" in trained:
            params["decay"] = [dv_dalpha, None]
        if "threshold" in trained:
            params["threshold"] = [dv_dth, None]
            out_params["threshold"] = -sg
        J = pack_jacobians(
            self,
            state=[[dv_dv, dv_dz], None],  # z's row is implied by the output map
            current=[1.0, sg],
            recurrent=a_rec is not None,
            params=params,
            out=[sg, 0.0],
            out_params=out_params,
        )
        return LIFState(v, (x > 0).to(v.dtype)), J

    def extra_repr(self) -> str:
        detach = ", detach_reset=True" if self.detach_reset else ""
        return f"{super().extra_repr()}, reset={self.reset!r}{detach}"
