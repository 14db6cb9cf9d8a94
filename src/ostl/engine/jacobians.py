"""Per-neuron Jacobians of one cell step: the closed form where a cell has one, else derived.

A cell's step is elementwise over samples and neurons (see :mod:`ostl.cells.base`), so every
per-neuron derivative is a (B, N) tensor, and all of them come from one ``torch.func.vjp`` of
the step: the VJP of output variable κ with a cotangent of ones gives, at every (b, p), row κ
of neuron p's block. The ``k`` rows come from one ``vmap`` over the ``k`` one-hot cotangents.
A new cell therefore needs no code here; a closed form (``Cell.jacobians``) is a fast path
that the test suite compares with this derivation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells import Cell
from ..cells.base import NeuronJacobians

__all__ = ["NeuronJacobians", "neuron_jacobians", "derived_jacobians"]


def neuron_jacobians(
    cell: Cell,
    a_in: Tensor,
    a_rec: Tensor | None,
    state: Any,
    p: dict[str, Tensor] | None = None,
    *,
    derive: bool = False,
) -> tuple[Any, NeuronJacobians]:
    """One cell step and its per-neuron Jacobians (no autograd graph).

    Args:
        cell: the cell.
        a_in: (B, G, N) input currents; a_rec: (B, G, N) recurrent currents or None.
        state: the previous state, a NamedTuple of (B, N) tensors.
        p: the per-neuron parameters φ by name (default: the cell's own, detached).
        derive: derive with ``torch.func`` even if the cell has a closed form.

    Returns:
        (new state, its Jacobians).
    """
    if p is None:
        p = {n: v.detach() for n, v in cell.neuron_params().items()}
    if cell.has_closed_form and not derive:
        return cell.jacobians(a_in, a_rec, state, p)
    return derived_jacobians(cell, a_in, a_rec, state, p)


def derived_jacobians(
    cell: Cell, a_in: Tensor, a_rec: Tensor | None, state: Any, p_all: dict[str, Tensor]
) -> tuple[Any, NeuronJacobians]:
    """The Jacobians of one step derived with ``torch.func`` (see the module docstring)."""
    k = len(state)
    trainable = cell.trainable_names
    fixed = {n: v.detach() for n, v in p_all.items() if n not in trainable}
    # Expand trainable φ to (B, N) so their VJPs stay per sample instead of summing over B.
    phi = tuple(p_all[n].detach().expand_as(a_in[:, 0]) for n in trainable)
    primals: tuple[Any, ...] = (a_in, tuple(state), phi) + (() if a_rec is None else (a_rec,))

    def f(a_in: Tensor, s: tuple[Tensor, ...], phi: tuple[Tensor, ...], *rec: Tensor) -> Any:
        p = dict(fixed)
        p.update(zip(trainable, phi))
        return tuple(cell.step(a_in, rec[0] if rec else None, cell.State(*s), p))

    with torch.enable_grad():  # torch.func needs it even when the caller runs under no_grad
        new, vjp_fn = torch.func.vjp(f, *primals)  # type: ignore[misc]
        eye = torch.eye(k, dtype=a_in.dtype, device=a_in.device)
        ones = torch.ones_like(new[0])
        cotangents = tuple(eye[:, i, None, None] * ones for i in range(k))  # each (k, B, N)
        rows = torch.func.vmap(vjp_fn)(cotangents)
    d_ain, d_s, d_phi = rows[0], rows[1], rows[2]  # leading dim: output variable κ
    state_j = tuple(tuple(d_s[lam][kap] for lam in range(k)) for kap in range(k))
    a_in_j = tuple(d_ain[kap] for kap in range(k))  # (B, G, N) each
    a_rec_j = tuple(rows[3][kap] for kap in range(k)) if a_rec is not None else None
    params_j = (
        tuple(tuple(d_phi[q][kap] for q in range(len(trainable))) for kap in range(k))
        if trainable
        else None
    )
    new = cell.State(*(t.detach() for t in new))
    out = out_params = None
    if cell.has_output_map:

        def h(s: tuple[Tensor, ...], phi: tuple[Tensor, ...]) -> Tensor:
            p = dict(fixed)
            p.update(zip(trainable, phi))
            return cell.output_map(cell.State(*s), p)

        with torch.enable_grad():
            _, vjp_h = torch.func.vjp(h, tuple(new), phi)  # type: ignore[misc]
            d_s_out, d_phi_out = vjp_h(ones)
        out = tuple(d_s_out)
        out_params = tuple(d_phi_out) if trainable else None
    J = NeuronJacobians(state_j, a_in_j, a_rec_j, params_j, out, out_params)
    return new, J
