"""Long short-term memory unit (Hochreiter & Schmidhuber 1997; forget gate of Gers et al.).

Gates in order (i, f, g, o), each with current a_g = W_g x_t + H_g h_{t-1} + b_g::

    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

State (c, h); output h. Same gate order as ``torch.nn.LSTM``. The per-neuron Jacobians have a
closed form (:meth:`LSTM.jacobians`), tested against the derivation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import Cell, NeuronJacobians, total_current


class LSTMState(NamedTuple):
    c: Tensor  # (B, N) cell state
    h: Tensor  # (B, N) hidden state (= output)


class LSTM(Cell):
    """LSTM unit with input, forget, cell and output gates."""

    State = LSTMState
    output = "h"
    n_gates = 4
    default_bias = True
    reads_previous_output = False  # y_{t-1} enters through H only
    has_closed_form = True

    def __init__(self, n: int) -> None:
        super().__init__(n)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: LSTMState, p: dict[str, Tensor]
    ) -> LSTMState:
        a = total_current(a_in, a_rec)
        i, f, o = (torch.sigmoid(a[..., k, :]) for k in (0, 1, 3))
        c = f * state.c + i * torch.tanh(a[..., 2, :])
        return LSTMState(c, o * torch.tanh(c))

    def jacobians(
        self, a_in: Tensor, a_rec: Tensor | None, state: LSTMState, p: dict[str, Tensor]
    ) -> tuple[LSTMState, NeuronJacobians]:
        a = total_current(a_in, a_rec)
        i, f, o = (torch.sigmoid(a[..., k, :]) for k in (0, 1, 3))
        g, c0 = torch.tanh(a[..., 2, :]), state.c
        c = f * c0 + i * g
        tc = torch.tanh(c)
        dh_dc = o * (1 - tc * tc)
        # ∂c/∂a per gate (i, f, g, o); ∂h/∂a = ∂h/∂c ∂c/∂a, but through o directly for gate o.
        dc = torch.stack(
            [i * (1 - i) * g, f * (1 - f) * c0, i * (1 - g * g), torch.zeros_like(c)], -2
        )
        dh = dc * dh_dc.unsqueeze(-2)
        dh[..., 3, :] = o * (1 - o) * tc
        da = (dc, dh)
        J = NeuronJacobians(((f, 0.0), (dh_dc * f, 0.0)), da, None if a_rec is None else da, None)
        return LSTMState(c, o * tc), J
