"""Gated recurrent unit (Cho et al. 2014), written with explicit state.

Gates in order (r, z, n)::

    r = σ(a_in_r + a_rec_r)          a_in_g = W_g x_t + b_g
    z = σ(a_in_z + a_rec_z)          a_rec_g = H_g h_{t-1}
    n = tanh(a_in_n + r ⊙ a_rec_n)   (the reset gate multiplies the recurrent current)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

The reset gate acts on the recurrent current *only*, so the cell receives input and recurrent
currents separately and its per-neuron Jacobian ``∂h_t/∂a_rec_n = (1 - z) (1 - n²) r`` carries
``r``; no approximation is made. Unlike ``torch.nn.GRU`` there is no separate recurrent bias
``b_hn`` inside ``r ⊙ (·)``: one bias per gate, on the input side (Cho et al.'s form).
The per-neuron Jacobians have a closed form (:meth:`GRU.jacobians`), tested against the derivation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import Cell, NeuronJacobians


class GRUState(NamedTuple):
    h: Tensor  # (B, N) hidden state (= output)


class GRU(Cell):
    """GRU unit with reset gate on the recurrent current."""

    State = GRUState
    output = "h"
    n_gates = 3
    default_bias = True
    has_closed_form = True

    def __init__(self, n: int) -> None:
        super().__init__(n)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: GRUState, p: dict[str, Tensor]
    ) -> GRUState:
        _, z, n = _gates(a_in, a_rec)
        return GRUState((1 - z) * n + z * state.h)

    def jacobians(
        self, a_in: Tensor, a_rec: Tensor | None, state: GRUState, p: dict[str, Tensor]
    ) -> tuple[GRUState, NeuronJacobians]:
        h0 = state.h
        r, z, n = _gates(a_in, a_rec)
        zc = 1 - z
        h = zc * n + z * h0
        dn = zc * (1 - n * n)  # ∂h/∂(candidate's pre-activation)
        dz = z * zc * (h0 - n)  # ∂h/∂a_z
        if a_rec is None:  # r gates nothing
            d_in = torch.stack([torch.zeros_like(h), dz, dn], -2)
            return GRUState(h), NeuronJacobians(((z,),), (d_in,), None, None)
        assert r is not None
        dr = dn * a_rec[..., 2, :] * r * (1 - r)  # ∂h/∂a_r, through r ⊙ a_rec_n
        d_in = torch.stack([dr, dz, dn], -2)
        d_rec = torch.stack([dr, dz, dn * r], -2)
        return GRUState(h), NeuronJacobians(((z,),), (d_in,), (d_rec,), None)


def _gates(a_in: Tensor, a_rec: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor]:
    """(r, z, n): reset and update gates, candidate. Without H, r gates nothing (None) and W
    keeps its (3N, n_in) layout."""
    if a_rec is None:
        return None, torch.sigmoid(a_in[..., 1, :]), torch.tanh(a_in[..., 2, :])
    r = torch.sigmoid(a_in[..., 0, :] + a_rec[..., 0, :])
    z = torch.sigmoid(a_in[..., 1, :] + a_rec[..., 1, :])
    return r, z, torch.tanh(a_in[..., 2, :] + r * a_rec[..., 2, :])
