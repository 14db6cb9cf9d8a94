"""Long short-term memory unit (Hochreiter & Schmidhuber 1997; forget gate of Gers et al.).

Gates in order (i, f, g, o), each with current a_g = W_g x_t + H_g h_{t-1} + b_g::

    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

State (c, h); output h. Same gate order as ``torch.nn.LSTM``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import Cell, total_current


class LSTMState(NamedTuple):
    c: Tensor  # (B, N) cell state
    h: Tensor  # (B, N) hidden state (= output)


class LSTM(Cell):
    """LSTM unit with input, forget, cell and output gates."""

    State = LSTMState
    output = "h"
    n_gates = 4
    default_bias = True

    def __init__(self, n: int) -> None:
        super().__init__(n)

    def step(
        self, a_in: Tensor, a_rec: Tensor | None, state: LSTMState, p: dict[str, Tensor]
    ) -> LSTMState:
        a = total_current(a_in, a_rec)
        i, f, o = (torch.sigmoid(a[..., k, :]) for k in (0, 1, 3))
        c = f * state.c + i * torch.tanh(a[..., 2, :])
        return LSTMState(c, o * torch.tanh(c))
