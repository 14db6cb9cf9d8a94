"""A layer's trainable parameters viewed per neuron: the columns each neuron's currents see.

Row p of every parameter of a :class:`~ostl.layer.Layer` belongs to neuron p: ``W`` gives it
``G·n_in`` columns (gate-major: gate g owns columns g·n_in … (g+1)·n_in), ``H`` ``G·N``, ``b``
``G``, and the trainable per-neuron parameters φ one column each (grouped into one block, φ in
the cell's order). A trace stores, per neuron, one entry per column; a gradient comes out as
(N, C) and :meth:`ParamBlock.to_param_shape` lays it out as the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def to_param_shape(self, g: Tensor, n: int) -> dict[str, Tensor]:
        """(N, C) per-neuron gradient -> {local name: gradient in the parameter's shape}."""
        if self.kind == "phi":
            return {name: g[:, q].contiguous() for q, name in enumerate(self.names)}
        if self.kind == "b":
            return {"b": g.T.reshape(-1)}
        if self.gates == 1:
            return {self.kind: g}
        return {self.kind: g.view(n, self.gates, self.m).transpose(0, 1).reshape(-1, self.m)}


def param_blocks(layer: Layer) -> list[ParamBlock]:
    """The trainable parameters of a layer (``requires_grad``) as per-neuron blocks."""
    G, N = layer.n_gates, layer.n_out
    blocks = [ParamBlock("W", ("W",), G, layer.n_in)] if layer.W.requires_grad else []
    if layer.H is not None and layer.H.requires_grad:
        blocks.append(ParamBlock("H", ("H",), G, N))
    if layer.b is not None and layer.b.requires_grad:
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
