"""The diagonal eligibility trace: each neuron's own dynamics, the recurrent (H) term dropped.

For every trainable parameter row p of a layer (see :mod:`.blocks`) and every stored state
variable i, the trace ε[i, p, b, c] follows neuron p's own recursion::

    ε_t[i] = Σ_j A_t[i, j] ε_{t-1}[j] + coef_t[i, g] pre_t[c]        (c in gate g's columns)
    g_t    = Σ_b Σ_i w_t[i] ε_t[i]  (+ w_old[i] ε_{t-1}[i])  (+ the direct term)

with ``A = ∂m_t/∂m_{t-1}`` (k×k per neuron: leak, reset), ``coef = ∂m_t/∂a`` and ``pre`` the
presynaptic input of the block (x_t for W, y_{t-1} for H, 1 for b and φ). Exact for a layer
without H (then ds_t/ds_{t-1} is block-diagonal); with H it drops the H term but keeps each
neuron's own leak and reset (the e-prop approximation). Memory ``B·N·M·ΣC`` per layer (the size
of the layer's parameters times M, per sample); O(B·N·ΣC) work per step, memory-bound.

Which state variables are stored (M of the cell's k) depends on how the output y is made:

- ``"map"``: the output is a map of the other *new* variables, y_t = h(m_t, φ)
  (``Cell.has_output_map``: SNU, LIF, ALIF). y's trace is ``D ε_m + ∂h/∂φ`` with D = ∂h/∂m, so
  it is not stored, and the path through y_{t-1} folds into the recursion:
  ``A[i, j] = ∂m_i/∂m_j + ∂m_i/∂y_{t-1} · D_{t-1}[j]``. LIF: one trace instead of two.
- ``"memoryless"``: no variable reads y_{t-1} directly (``Cell.reads_previous_output`` False:
  LSTM, RNN). y's trace never feeds back: ``ε_y,t = Σ_i ∂y_t/∂m_{t-1}[i] ε_{t-1}[i] + ∂y_t/∂θ``,
  contracted from the *old* stored traces (``w_old``) plus a direct product with the signal.
  LSTM: one trace (c) instead of two; RNN: none at all.
- ``"full"``: every variable is stored and y's trace is read (GRU, resonate-and-fire).

SnAp-1 (``self_recurrence``) adds the self-connection H_pp to the recursion: the path
y_{t-1}[p] → H_pp → a_rec[p] → s_t[p] becomes part of ∂s_t/∂y_{t-1} (:mod:`ostl.engine.snap1`).

The whole update and contraction of one block is one call of the fused trace operation
(:func:`ostl.kernels.trace_step`): one pass over the trace on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .. import kernels
from ..cells.base import Entry, NeuronJacobians
from ..layer import Layer
from .blocks import ParamBlock, param_blocks
from .snap1 import with_self_recurrence

__all__ = ["DiagonalTrace", "DiagonalPlan", "plan", "init", "advance"]


class DiagonalTrace(NamedTuple):
    """The carry of one layer's diagonal trace."""

    eps: dict[str, Tensor]  # block kind -> (M, N, B, C): ε of the stored variables, neuron-major
    D: Tensor  # (M, B, N) ∂y/∂m of the last step ("map"; empty otherwise)
    D_phi: Tensor  # (P, B, N) ∂y/∂φ of the last step ("map" with trained φ; else empty)


@dataclass(frozen=True)
class DiagonalPlan:
    """What one layer's diagonal trace needs to know, fixed when the rule is bound."""

    blocks: tuple[ParamBlock, ...]
    n: int  # neurons
    o: int  # index of the output variable in the state
    mem: tuple[int, ...]  # the stored state variables
    mode: str  # "map", "memoryless" or "full" (see the module docstring)
    self_recurrence: bool = False  # SnAp-1: H_pp in the recursion
    dtype: torch.dtype | None = None  # storage dtype (None: the network's)


def plan(
    layer: Layer,
    *,
    self_recurrence: bool = False,
    dtype: torch.dtype | None = None,
    reduce_output: bool = True,
) -> DiagonalPlan:
    """The plan for ``layer``; ``reduce_output=False`` stores every variable (for checks)."""
    cell = layer.cell
    k, o = len(cell.state_names()), cell.output_index()
    self_rec = self_recurrence and layer.H is not None
    if reduce_output and cell.has_output_map and k > 1:
        mode = "map"
    elif reduce_output and not cell.reads_previous_output and not self_rec:
        # (SnAp-1's self-connection makes y_{t-1} feed back: then y's trace is stored)
        mode = "memoryless"
    else:
        mode = "full"
    mem = tuple(range(k)) if mode == "full" else tuple(i for i in range(k) if i != o)
    blocks = tuple(param_blocks(layer))
    return DiagonalPlan(blocks, layer.n_out, o, mem, mode, self_rec, dtype)


def init(
    p: DiagonalPlan, batch_size: int, dtype: torch.dtype, device: torch.device
) -> DiagonalTrace:
    """Zero traces for a batch of ``batch_size`` sequences; factors in ``dtype``."""
    M, B, N = len(p.mem), batch_size, p.n
    store = p.dtype or dtype
    eps = {b.kind: torch.zeros(M, N, B, b.columns, dtype=store, device=device) for b in p.blocks}
    P = next((b.gates for b in p.blocks if b.kind == "phi"), 0) if p.mode == "map" else 0
    D = torch.zeros(M if p.mode == "map" else 0, B, N, dtype=dtype, device=device)
    return DiagonalTrace(eps, D, torch.zeros(P, B, N, dtype=dtype, device=device))


def advance(
    p: DiagonalPlan,
    trace: DiagonalTrace,
    J: NeuronJacobians,
    x: Tensor,
    y_prev: Tensor,
    L: Tensor | None,
    H: Tensor | None = None,
) -> tuple[DiagonalTrace, dict[str, Tensor] | None]:
    """One step of every block's trace, contracted with the signal ``L`` (B, N) if given.

    Args:
        p: the layer's plan.
        trace: the carry of the previous step; its tensors are updated in place (donated).
        J: this step's Jacobians.
        x: (B, n_in) the layer's input; y_prev: (B, N) its previous output.
        L: (B, N) the learning signal dE_t/dy_t, or None at a step without one.
        H: the layer's recurrent weights (SnAp-1 only).

    Returns:
        (the new carry, {local parameter name: gradient} or None without a signal).
    """
    if p.self_recurrence:  # SnAp-1
        assert H is not None
        J = with_self_recurrence(J, H, p.o)
    if p.mode != "map":
        J = J.complete()  # the output's row is read
    B, N = x.shape[0], p.n
    A, w, w_old = _recursion_and_weights(p, trace, J, L, y_prev)
    grads: dict[str, Tensor] | None = {} if L is not None else None
    for blk in p.blocks:
        coef, pre = _immediate(p, blk, J, x, y_prev, trace.D_phi)
        g = None
        if A is not None:  # M > 0 stored variables
            g = kernels.trace_step(trace.eps[blk.kind], A, coef, pre, w, w_old)
        if grads is not None:
            assert L is not None
            g = _direct(p, blk, J, L, x, y_prev, g)
            grads.update(blk.to_param_shape(g, N))
    if p.mode == "map":
        trace = _output_factors(p, trace, J, B, y_prev)
    return trace, grads


def _recursion_and_weights(
    p: DiagonalPlan, trace: DiagonalTrace, J: NeuronJacobians, L: Tensor | None, ref: Tensor
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(A (M, M, B, N), w, w_old (M, B, N)) of this step; None where absent (see the module
    docstring for the three layouts)."""
    mem, o, S = p.mem, p.o, J.row
    if not mem:
        return None, None, None
    B, N = ref.shape
    if p.mode == "map":  # fold the path through y_{t-1} into the recursion
        A_rows = [[_add(S(i)[j], _mul(S(i)[o], trace.D[jj])) for jj, j in enumerate(mem)]
                  for i in mem]  # fmt: skip
    else:
        A_rows = [[S(i)[j] for j in mem] for i in mem]
    A = _grid(A_rows, B, N, ref)
    if L is None:
        return A, None, None
    if p.mode == "map":
        assert J.out is not None
        return A, _stack([_mul(L, J.out[i]) for i in mem], B, N, ref), None
    if p.mode == "memoryless":
        return A, None, _stack([_mul(L, S(o)[i]) for i in mem], B, N, ref)
    return A, _stack([L if i == o else 0.0 for i in mem], B, N, ref), None


def _output_factors(
    p: DiagonalPlan, trace: DiagonalTrace, J: NeuronJacobians, B: int, ref: Tensor
) -> DiagonalTrace:
    """The carry's ∂y/∂m and ∂y/∂φ of this step, for the next step's fold (``"map"``)."""
    assert J.out is not None
    D = _stack([J.out[i] for i in p.mem], B, p.n, ref)
    D_phi = trace.D_phi
    if D_phi.shape[0]:
        assert J.out_params is not None
        phi = next(b for b in p.blocks if b.kind == "phi")
        D_phi = _stack([J.out_params[q] for q in phi.index], B, p.n, ref)
    return DiagonalTrace(trace.eps, D, D_phi)


def _immediate(
    p: DiagonalPlan,
    blk: ParamBlock,
    J: NeuronJacobians,
    x: Tensor,
    y_prev: Tensor,
    D_phi: Tensor,
) -> tuple[Tensor | None, Tensor]:
    """(coef (M, B, G, N) or None for all ones, pre (B, m)) of one block."""
    B, N = x.shape[0], p.n
    if blk.kind == "phi":
        assert J.params is not None
        rows = [[J.param_row(i)[q] for q in blk.index] for i in p.mem]
        if p.mode == "map":  # φ's direct path into y_{t-1}, folded like the state's
            rows = [
                [_add(e, _mul(J.row(i)[p.o], D_phi[qq])) for qq, e in enumerate(row)]
                for i, row in zip(p.mem, rows)
            ]
        coef = _grid(rows, B, N, y_prev).permute(0, 2, 1, 3).contiguous()  # (M, B, P, N)
        return coef, x.new_ones(B, 1)
    col = J.a_rec if blk.recurrent else J.a_in
    assert col is not None
    entries = [col[i] for i in p.mem]
    pre = blk.pre(x, y_prev)
    if all(not isinstance(e, Tensor) and float(e) == 1.0 for e in entries):
        return None, pre
    shape = (B, blk.gates, N)
    full = [e.expand(shape) if isinstance(e, Tensor) else y_prev.new_full(shape, float(e))
            for e in entries]  # fmt: skip
    if len(full) == 1:
        return full[0].contiguous().unsqueeze(0), pre
    return torch.stack(full), pre


def _direct(
    p: DiagonalPlan,
    blk: ParamBlock,
    J: NeuronJacobians,
    L: Tensor,
    x: Tensor,
    y_prev: Tensor,
    g: Tensor | None,
) -> Tensor:
    """g (N, C) plus the terms of y_t's trace that are not stored: its direct dependence on
    θ at this step (``"memoryless"``: every block; ``"map"``: φ through h)."""
    B, N = x.shape[0], p.n
    extra: Tensor | None = None
    if p.mode == "map" and blk.kind == "phi":
        assert J.out_params is not None
        extra = torch.stack([_sum_b(_mul(L, J.out_params[q]), B, N, L) for q in blk.index], -1)
    elif p.mode == "memoryless":
        o = p.o
        if blk.kind == "phi":
            assert J.params is not None
            extra = torch.stack(
                [_sum_b(_mul(L, J.param_row(o)[q]), B, N, L) for q in blk.index], -1
            )
        else:
            col = J.a_rec if blk.recurrent else J.a_in
            assert col is not None
            d = _mul(L.unsqueeze(1), col[o])  # (B, G, N): L ⊙ ∂y_t/∂a (direct)
            shape = (B, blk.gates, N)
            delta = d.expand(shape) if isinstance(d, Tensor) else L.new_full(shape, float(d))
            if blk.kind == "b":
                extra = delta.sum(0).T  # (N, G)
            else:
                pre = blk.pre(x, y_prev)
                extra = (delta.permute(2, 1, 0).reshape(N * blk.gates, B) @ pre).view(N, -1)
    if extra is None:
        assert g is not None
        return g
    return extra if g is None else g + extra


def _mul(a: Entry, b: Entry) -> Entry:
    """a·b for tensors or numbers, skipping multiplications by 0 and 1."""
    if not isinstance(a, Tensor):
        if a == 0.0 or (not isinstance(b, Tensor) and b == 0.0):
            return 0.0
        return b if a == 1.0 else a * b
    if not isinstance(b, Tensor):
        return 0.0 if b == 0.0 else (a if b == 1.0 else a * b)
    return a * b


def _add(a: Entry, b: Entry) -> Entry:
    if not isinstance(b, Tensor) and b == 0.0:
        return a
    if not isinstance(a, Tensor) and a == 0.0:
        return b
    return a + b


def _sum_b(e: Entry, B: int, N: int, ref: Tensor) -> Tensor:
    """Σ_b of a (B, N) entry -> (N,)."""
    if isinstance(e, Tensor):
        return e.expand(B, N).sum(0)
    return ref.new_full((N,), float(e) * B)


def _stack(entries: Sequence[Entry], B: int, N: int, ref: Tensor) -> Tensor:
    """(len, B, N) from (B, N) entries; numbers are filled in."""
    if len(entries) == 1 and isinstance(entries[0], Tensor):
        e = entries[0]
        if e.shape == (B, N) and e.is_contiguous():
            return e.view(1, B, N)
        return e.expand(B, N).contiguous().unsqueeze(0)
    return torch.stack(
        [e.expand(B, N) if isinstance(e, Tensor) else ref.new_full((B, N), float(e))
         for e in entries]
    )  # fmt: skip


def _grid(rows: Sequence[Sequence[Entry]], B: int, N: int, ref: Tensor) -> Tensor:
    """(rows, cols, B, N) from a grid of (B, N) entries."""
    if len(rows) == 1 and len(rows[0]) == 1:
        e = rows[0][0]
        if isinstance(e, Tensor) and e.shape == (B, N) and e.is_contiguous():
            return e.view(1, 1, B, N)
        return _stack(rows[0], B, N, ref).unsqueeze(0)
    return torch.stack([_stack(r, B, N, ref) for r in rows])
