"""Resonate-and-fire neuron (RF; E. M. Izhikevich, "Resonate-and-fire neurons", Neural Networks
14, 2001): a damped oscillator that fires when its voltage-like part crosses a threshold.

Izhikevich's neuron is one complex variable ż = (b + iω) z + I, with u = Re z current-like and
w = Im z voltage-like. Integrated exactly over one step (Δt = 1) with the input held constant
during the step (zero-order hold), the state rotates by φ = ωΔt, shrinks by r = exp(bΔt), and
the input enters through c = (r e^{iφ} - 1) / (b + iω)::

    u_t = r (cos φ · u_{t-1} - sin φ · w_{t-1}) + Re(c) a_t         a_t = W x_t + H z_{t-1}
    w_t = r (sin φ · u_{t-1} + cos φ · w_{t-1}) + Im(c) a_t - ϑ z_{t-1}    (subtractive reset)
    z_t = Θ(w_t - ϑ)

The zero-order hold matters for learning, not only for accuracy: with the cruder "rotate, then
add a_t to u" the spike z_t would not depend on a_t at all (only from t+1 on), and every rule
whose spatial signal is computed at step t (OSTL's sweep, e-prop) would send nothing through the
layer to the layers below it. Here ∂z_t/∂a_t = ψ_t Im(c) ≠ 0.

- ``u``, ``w``: the oscillator; ``z``: spike. The neuron resonates: input pulses that arrive
  with its period 2π/φ add up, pulses at other rhythms cancel.
- ``r`` (``decay``) = exp(bΔt) < 1: damping; ``φ`` (``frequency``): rotation per step in
  radians; ``ϑ`` (``threshold``). All per neuron, fixed unless named in ``trainable``.

Defaults (ours): r = 0.9, φ = 2π/8 (a period of 8 steps), ϑ = 1, fast-sigmoid surrogate. The
reset (ours: Izhikevich resets z to a fixed point) subtracts ϑ from w, as LIF's subtractive reset.

This cell is the worked example of ``docs/extending.md``: its per-neuron block ∂s_t/∂s_{t-1}
is a full 3×3 matrix (a scaled rotation plus the reset), derived by the trace engine with no
code outside this file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import OptionError
from ..surrogate import Surrogate, get_surrogate, spike
from .base import Cell, total_current


class RFState(NamedTuple):
    u: Tensor  # (B, N) real part: current-like
    w: Tensor  # (B, N) imaginary part: voltage-like
    z: Tensor  # (B, N) spikes


class ResonateAndFire(Cell):
    """Resonate-and-fire neuron: a damped rotation of (u, w), spiking when w crosses ϑ."""

    State = RFState
    output = "z"
    spiking = True

    def __init__(
        self,
        n: int,
        *,
        decay: float = 0.9,
        frequency: float = 2 * math.pi / 8,
        threshold: float = 1.0,
        surrogate: str | Surrogate = "fast_sigmoid",
        trainable: Iterable[str] = (),
    ) -> None:
        super().__init__(n, trainable)
        if not 0 < decay < 1:
            raise OptionError(f"RF decay r must be in (0, 1) for a damped oscillator, got {decay}")
        self._add_neuron_param("decay", decay)
        self._add_neuron_param("frequency", frequency)
        self._add_neuron_param("threshold", threshold)
        self._check_trainable()
        self.surrogate = get_surrogate(surrogate)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: RFState, p: dict[str, Tensor]
    ) -> RFState:
        a = total_current(a_in, a_rec)[..., 0, :]
        r, phi = p["decay"], p["frequency"]
        A_re, A_im = r * torch.cos(phi), r * torch.sin(phi)  # A = r e^{iφ}
        b = torch.log(r)
        c_re, c_im = _input_gain(A_re, A_im, b, phi)
        u = A_re * state.u - A_im * state.w + c_re * a
        w = A_im * state.u + A_re * state.w + c_im * a - p["threshold"] * state.z
        return RFState(u, w, spike(w - p["threshold"], self.surrogate))


def _input_gain(A_re: Tensor, A_im: Tensor, b: Tensor, omega: Tensor) -> tuple[Tensor, Tensor]:
    """c = (A - 1) / (b + iω) in real arithmetic: the zero-order-hold input gain."""
    norm = b * b + omega * omega  # > 0 since r < 1 (b < 0)
    return ((A_re - 1) * b + A_im * omega) / norm, (A_im * b - (A_re - 1) * omega) / norm
