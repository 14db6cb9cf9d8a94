"""Presynaptic traces: the diagonal trace where it factorises (exact where it applies).

For a cell whose :meth:`~ostl.cells.Cell.factorised_decay` is a constant α (a LIF with a
subtractive reset that is not differentiated, as in e-prop), the diagonal trace of W[p, j] is
the same for every neuron p: ``x̄_t = α x̄_{t-1} + x_t``; likewise ȳ for H and a scalar for b.
The gradient is one matrix product, ``(L ⊙ ∂y/∂m)ᵀ x̄``. Memory ``B·(n_in + N + 1)`` per layer
instead of ``B·N·(n_in + N + 1)``; per step O(B·(n_in + N)) for the traces plus O(B·N·(n_in +
N)) for the gradient (only at steps with a signal). Tested equal to :mod:`.diagonal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..cells.base import NeuronJacobians
from ..layer import Layer
from .blocks import ParamBlock, param_blocks

__all__ = ["FactorisedTrace", "FactorisedPlan", "applies", "plan", "init", "advance"]


class FactorisedTrace(NamedTuple):
    """The carry of one layer's presynaptic traces."""

    eps: dict[str, Tensor]  # block kind -> (B, C): x̄ (W), ȳ (H), a scalar per sample (b)


@dataclass(frozen=True)
class FactorisedPlan:
    blocks: tuple[ParamBlock, ...]
    n: int
    alpha: float
    mem: int  # the memory variable's index (k = 2)
    dtype: torch.dtype | None = None


def applies(layer: Layer) -> bool:
    """One gate, two state variables with an output map, a constant decay, no trained φ."""
    cell = layer.cell
    return (
        cell.factorised_decay() is not None
        and cell.has_output_map
        and len(cell.state_names()) == 2
        and layer.n_gates == 1
        and not any(b.kind == "phi" for b in param_blocks(layer))
    )


def plan(layer: Layer, dtype: torch.dtype | None = None) -> FactorisedPlan:
    alpha = layer.cell.factorised_decay()
    assert alpha is not None and applies(layer)
    mem = 1 - layer.cell.output_index()
    return FactorisedPlan(tuple(param_blocks(layer)), layer.n_out, alpha, mem, dtype)


def init(
    p: FactorisedPlan, batch_size: int, dtype: torch.dtype, device: torch.device
) -> FactorisedTrace:
    store = p.dtype or dtype
    return FactorisedTrace(
        {b.kind: torch.zeros(batch_size, b.columns, dtype=store, device=device) for b in p.blocks}
    )


def advance(
    p: FactorisedPlan,
    trace: FactorisedTrace,
    J: NeuronJacobians,
    x: Tensor,
    y_prev: Tensor,
    L: Tensor | None,
) -> tuple[FactorisedTrace, dict[str, Tensor] | None]:
    """x̄ ← α x̄ + x (and ȳ, the bias's scalar), in place; contracted with ``L`` if given."""
    for blk in p.blocks:
        trace.eps[blk.kind].mul_(p.alpha).add_(blk.pre(x, y_prev))
    if L is None:
        return trace, None
    assert J.out is not None
    D = J.out[p.mem]  # ∂y_t/∂m_t
    delta = (L * D).T  # (N, B)
    grads: dict[str, Tensor] = {}
    for blk in p.blocks:
        eps = trace.eps[blk.kind]
        grads.update(blk.to_param_shape((delta.to(eps.dtype) @ eps).to(L.dtype), p.n))
    return trace, grads
