"""Vanilla recurrent unit (Elman RNN with tanh).

    h_t = tanh(W x_t + H h_{t-1} + b)

No per-neuron parameters; the synaptic bias ``b`` lives in the layer. The per-neuron
Jacobians have a closed form (:meth:`RNN.jacobians`), tested against the derivation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import Cell, NeuronJacobians, pack_jacobians, total_current


class RNNState(NamedTuple):
    h: Tensor  # (B, N) hidden state (= output)


class RNN(Cell):
    """tanh recurrent unit."""

    State = RNNState
    output = "h"
    default_bias = True
    reads_previous_output = False  # y_{t-1} enters through H only
    has_closed_form = True

    def __init__(self, n: int) -> None:
        super().__init__(n)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: RNNState, p: dict[str, Tensor]
    ) -> RNNState:
        return RNNState(torch.tanh(total_current(a_in, a_rec)[..., 0, :]))

    def jacobians(
        self, a_in: Tensor, a_rec: Tensor | None, state: RNNState, p: dict[str, Tensor]
    ) -> tuple[RNNState, NeuronJacobians]:
        h = torch.tanh(total_current(a_in, a_rec)[..., 0, :])
        J = pack_jacobians(self, [[0.0]], [1 - h * h], a_rec is not None, {})
        return RNNState(h), J
