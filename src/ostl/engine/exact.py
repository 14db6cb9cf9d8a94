"""The exact ("complete") trace of a layer with recurrent weights H: RTRL within the layer.

It keeps ε[b, q, κ, p, c], every neuron q's state variable κ against every parameter row p,
and the H term of the one-step derivative::

    ds_t[q]/ds_{t-1}[r] = δ_qr J_s[q] + J_rec[q] H[q, r] δ_{·o}

Exact with H (a single stateful layer under memoryless ones equals BPTT). Memory
``B·N²·k·ΣC`` (O(N³) per sample), O(N⁴) work per step: for small layers and checks. Its size
is checked before allocation (:class:`~ostl.errors.TraceTooLargeError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..cells.base import NeuronJacobians, dense
from ..errors import TraceTooLargeError
from ..layer import Layer
from .blocks import ParamBlock, param_blocks

__all__ = ["ExactTrace", "ExactPlan", "plan", "init", "advance", "trace_bytes"]


class ExactTrace(NamedTuple):
    """The carry of one layer's exact trace."""

    eps: dict[str, Tensor]  # block kind -> (B, N, k, N, C): every neuron q against every row p


@dataclass(frozen=True)
class ExactPlan:
    blocks: tuple[ParamBlock, ...]
    n: int
    k: int
    o: int
    gates: int


def plan(layer: Layer) -> ExactPlan:
    cell = layer.cell
    return ExactPlan(
        tuple(param_blocks(layer)),
        layer.n_out,
        len(cell.state_names()),
        cell.output_index(),
        layer.n_gates,
    )


def trace_bytes(layer: Layer, batch_size: int, dtype: torch.dtype) -> int:
    """Bytes an exact trace of this layer needs (the traces alone, before temporaries)."""
    k = len(layer.cell.state_names())
    cols = sum(b.columns for b in param_blocks(layer))
    return batch_size * layer.n_out**2 * k * cols * torch.empty((), dtype=dtype).element_size()


def init(
    p: ExactPlan, layer: Layer, batch_size: int, dtype: torch.dtype, device: torch.device,
    max_bytes: int,
) -> ExactTrace:  # fmt: skip
    """Zero traces, after checking that they fit in ``max_bytes``."""
    need = trace_bytes(layer, batch_size, dtype)
    if need > max_bytes:
        raise TraceTooLargeError(
            f"an exact trace of this layer (n_in={layer.n_in}, n_out={layer.n_out}, "
            f"{p.gates} gate(s), k={p.k} state variables, batch {batch_size}, {dtype}) needs "
            f"{need / 2**30:.2f} GiB, above the limit of {max_bytes / 2**30:.2f} GiB "
            "(max_trace_bytes). Its memory grows as B·N³: use OSTL(recurrence='diagonal') "
            "(O(N²), drops the H term), a smaller layer or batch, or raise max_trace_bytes."
        )
    shape = (batch_size, p.n, p.k, p.n)
    return ExactTrace(
        {b.kind: torch.zeros(*shape, b.columns, dtype=dtype, device=device) for b in p.blocks}
    )


def advance(
    p: ExactPlan,
    trace: ExactTrace,
    J: NeuronJacobians,
    x: Tensor,
    y_prev: Tensor,
    L: Tensor | None,
    H: Tensor,
) -> tuple[ExactTrace, dict[str, Tensor] | None]:
    """One step of every block's trace; contracted with ``L`` (B, N) when given."""
    J_s, J_in, J_rec, J_phi, _, _ = dense(J, y_prev, p.gates)
    assert J_rec is not None
    Hg = H.detach().view(p.gates, p.n, p.n)
    eps: dict[str, Tensor] = {}
    grads: dict[str, Tensor] | None = {} if L is not None else None
    for blk in p.blocks:
        old = trace.eps[blk.kind]
        rec = torch.einsum("gqr,brpc->bgqpc", Hg, old[:, :, p.o])
        new = torch.einsum("bqkl,bqlpc->bqkpc", J_s, old)
        new += torch.einsum("bqkg,bgqpc->bqkpc", J_rec, rec)
        imm = _immediate(blk, J_in, J_rec, J_phi, x, y_prev)  # (B, N, k, C)
        new.diagonal(dim1=1, dim2=3).add_(imm.permute(0, 2, 3, 1))
        eps[blk.kind] = new
        if grads is not None:
            g = torch.einsum("bq,bqpc->pc", L, new[:, :, p.o])
            grads.update(blk.to_param_shape(g, p.n))
    return ExactTrace(eps), grads


def _immediate(
    blk: ParamBlock, J_in: Tensor, J_rec: Tensor, J_phi: Tensor | None, x: Tensor, y_prev: Tensor
) -> Tensor:
    """∂s_t[p]/∂θ[p, c]: (B, N, k, C)."""
    if blk.kind == "phi":
        assert J_phi is not None
        return J_phi[..., list(blk.index)]
    if blk.kind == "b":
        return J_in
    J, pre = (J_rec, y_prev) if blk.recurrent else (J_in, blk.pre(x, y_prev))
    B, N, k, G = J.shape
    return (J.unsqueeze(-1) * pre[:, None, None, None, :]).reshape(B, N, k, G * pre.shape[-1])
