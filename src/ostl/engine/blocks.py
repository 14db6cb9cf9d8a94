"""A layer's trainable parameters viewed per neuron: the columns each neuron's currents see.

Row p of every parameter of a :class:`~ostl.layer.Layer` belongs to neuron p: ``W`` gives it
``G·n_in`` columns (gate-major: gate g owns columns g·n_in … (g+1)·n_in), ``H`` ``G·N``, ``b``
``G``, and the trainable per-neuron parameters φ one column each (grouped into one block, φ in
the cell's order). A trace stores, per neuron, one entry per column; a gradient comes out as
(N, C) and :meth:`ParamBlock.to_param_shape` lays it out as the parameter.

When both W and b are trained they form one block: the bias is the weight of a constant input
1 appended to x_t (m = n_in + 1 columns per gate), so its trace shares W's pass instead of a
separate pass over a trace with one column per gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..layer import Layer

__all__ = ["ParamBlock", "param_blocks"]


@dataclass(frozen=True)
class ParamBlock:
    """One group of a layer's trainable parameters, viewed per neuron as (N, C) columns.

    Attributes:
        kind: ``"W"``, ``"H"``, ``"b"`` or ``"phi"`` (every trained φ of the cell).
        names: local parameter names (``("W",)``; ``("cell.decay", "cell.threshold")`` for φ).
        gates: G for W, H and b; the number of φ for ``"phi"``.
        m: presynaptic columns per gate (n_in for W, N for H, 1 for b and φ).
        index: for ``"phi"``, the position of each φ among the cell's trainable names (the
            order of the Jacobian entries); empty otherwise.
    """

    kind: str
    names: tuple[str, ...]
    gates: int
    m: int
    index: tuple[int, ...] = ()

    @property
    def columns(self) -> int:
        return self.gates * self.m

    @property
    def recurrent(self) -> bool:
        """Whether the block's currents are the recurrent ones (H), not the input ones."""
        return self.kind == "H"

    def pre(self, x: Tensor, y_prev: Tensor) -> Tensor:
        """The presynaptic input (B, m): x_t (with a column of ones when b is folded in),
        y_{t-1} for H, ones for b and φ."""
        if self.kind == "H":
            return y_prev
        if self.kind == "W":
            if len(self.names) == 1:
                return x
            return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
        return x.new_ones(x.shape[0], 1)

    def to_param_shape(self, g: Tensor, n: int) -> dict[str, Tensor]:
        """(N, C) per-neuron gradient -> {local name: gradient in the parameter's shape}."""
        if self.kind == "phi":
            return {name: g[:, q].contiguous() for q, name in enumerate(self.names)}
        if self.kind == "b":
            return {"b": g.T.reshape(-1)}
        if len(self.names) == 2:  # W and b, folded: b is the last column of each gate
            gw = g.view(n, self.gates, self.m)
            b = gw[..., -1].T.reshape(-1)
            W = gw[..., :-1].transpose(0, 1).reshape(-1, self.m - 1)
            return {"W": W, "b": b}
        if self.gates == 1:
            return {self.kind: g}
        return {self.kind: g.view(n, self.gates, self.m).transpose(0, 1).reshape(-1, self.m)}


def param_blocks(layer: Layer) -> list[ParamBlock]:
    """The trainable parameters of a layer (``requires_grad``) as per-neuron blocks."""
    G, N = layer.n_gates, layer.n_out
    w, b = layer.W.requires_grad, layer.b is not None and layer.b.requires_grad
    blocks = []
    if w and b:
        blocks.append(ParamBlock("W", ("W", "b"), G, layer.n_in + 1))
    elif w:
        blocks.append(ParamBlock("W", ("W",), G, layer.n_in))
    if layer.H is not None and layer.H.requires_grad:
        blocks.append(ParamBlock("H", ("H",), G, N))
    if b and not w:
        blocks.append(ParamBlock("b", ("b",), G, 1))
    trained = [
        (q, f"cell.{n}")
        for q, n in enumerate(layer.cell.trainable_names)
        if getattr(layer.cell, n).requires_grad
    ]
    if trained:
        index, names = zip(*trained)
        blocks.append(ParamBlock("phi", tuple(names), len(names), 1, tuple(index)))
    return blocks
