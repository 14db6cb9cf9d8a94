"""The trace engine: per-neuron Jacobians derived from a cell's step, and eligibility traces.

Notation (one stateful layer, ``B`` samples, ``N`` neurons, ``k`` state variables per neuron,
``G`` gates, output ``y = s[o]``)::

    ε_t = (ds_t/ds_{t-1}) ε_{t-1} + ∂s_t/∂θ          eligibility trace of θ
    e_t = ε_t[o]                                      dy_t/dθ
    dE/dθ = Σ_t L_t · e_t                             L_t = ∂E_t/∂y_t, the learning signal

The total one-step derivative splits into the neuron's own dynamics and the recurrent path::

    ds_t[q]/ds_{t-1}[r] = δ_qr J_s[q] + J_rec[q] H[q, r] δ_{·o}

with per-neuron blocks ``J_s = ∂s_t/∂s_{t-1}`` (k×k; it holds the leak and the reset path
through y_{t-1}), ``J_in = ∂s_t/∂a_in`` and ``J_rec = ∂s_t/∂a_rec`` (k×G) and ``J_φ`` (k×P).
:func:`neuron_jacobians` derives all of them from ``cell.step`` with one ``torch.func.vjp`` and
``k`` batched cotangents: a new cell needs no code here.

Every trainable parameter of a layer is viewed per neuron: row p of the parameter is a vector of
``C`` columns that only neuron p's currents see (``W``: C = G·n_in, ``H``: C = G·N, ``b``: C = G,
a per-neuron φ: C = 1). Its immediate term ``∂s_t[p]/∂θ[p, c]`` is ``J_in ⊗ x_t``,
``J_rec ⊗ y_{t-1}``, ``J_in`` or ``J_φ``. Two recursions:

- :class:`DiagonalTrace` keeps ``ε[b, p, κ, c]`` (neuron p's state κ against its own row):
  the H term is dropped, each neuron's own dynamics kept. Exact without H. Memory
  ``B·N·k·ΣC`` (the size of the layer's parameters times k, per sample); O(N²) per step.
- :class:`ExactTrace` keeps ``ε[b, q, κ, p, c]`` (every neuron q against every row p) and the
  H term: exact with H, at RTRL cost within the layer: memory ``B·N²·k·ΣC`` (O(N³)), compute
  O(N⁴) per step. Its size is checked before allocation (:class:`~ostl.errors.TraceTooLargeError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import kernels
from .cells import Cell
from .cells.base import NeuronJacobians
from .errors import CheckpointError, OptionError, TraceTooLargeError
from .layer import Layer
from .numerics import flush_denormals

__all__ = [
    "NeuronJacobians",
    "neuron_jacobians",
    "ParamBlock",
    "param_blocks",
    "LayerTrace",
    "DiagonalTrace",
    "FactorisedTrace",
    "diagonal_trace",
    "ExactTrace",
    "exact_trace_bytes",
    "input_signal",
]


def neuron_jacobians(
    cell: Cell, a_in: Tensor, a_rec: Tensor | None, state: Any, *, derive: bool = False
) -> tuple[Any, NeuronJacobians]:
    """Run one cell step and get its per-neuron Jacobian blocks.

    A cell with a closed form (``Cell.has_closed_form``) computes them itself, unless
    ``derive=True``; otherwise, and for every user cell, they are derived with ``torch.func``.

    Args:
        cell: the cell.
        a_in: (B, G, N) input currents; a_rec: (B, G, N) recurrent currents or None.
        state: the previous state, a NamedTuple of (B, N) tensors.

    Returns:
        (new state, detached; its blocks).

    Derivation: because the step is elementwise over (sample, neuron), the VJP of output
    variable κ with a cotangent of ones gives, at every (b, p), exactly row κ of neuron p's
    block; the ``k`` rows come from one ``vmap`` over the ``k`` one-hot cotangents.
    """
    if cell.has_closed_form and not derive:
        p = {n: v.detach() for n, v in cell.neuron_params().items()}
        return cell.jacobians(a_in, a_rec, state, p)
    k = len(state)
    phi_all = cell.neuron_params()
    trainable = cell.trainable_names
    fixed = {n: v.detach() for n, v in phi_all.items() if n not in trainable}
    # Expand trainable φ to (B, N) so their VJPs stay per sample instead of summing over B.
    phi = tuple(phi_all[n].detach().expand_as(a_in[:, 0]) for n in trainable)
    primals: tuple[Any, ...] = (a_in, tuple(state), phi) + (() if a_rec is None else (a_rec,))

    def f(a_in: Tensor, s: tuple[Tensor, ...], phi: tuple[Tensor, ...], *rec: Tensor) -> Any:
        p = dict(fixed)
        p.update(zip(trainable, phi))
        return tuple(cell.step(a_in, rec[0] if rec else None, cell.State(*s), p))

    new, vjp_fn = torch.func.vjp(f, *primals)  # type: ignore[misc]
    eye = torch.eye(k, dtype=a_in.dtype, device=a_in.device)
    ones = torch.ones_like(new[0])
    cotangents = tuple(eye[:, i, None, None] * ones for i in range(k))  # each (k, B, N)
    rows = torch.func.vmap(vjp_fn)(cotangents)
    d_ain, d_s, d_phi = rows[0], rows[1], rows[2]  # leading dim: output variable κ
    J_s = torch.stack(d_s, dim=-1).permute(1, 2, 0, 3)  # (B, N, k_out, k_in)
    J_in = d_ain.permute(1, 3, 0, 2)  # (k, B, G, N) -> (B, N, k, G)
    J_rec = rows[3].permute(1, 3, 0, 2) if a_rec is not None else None
    J_phi = torch.stack(d_phi, dim=-1).permute(1, 2, 0, 3) if trainable else None
    new = cell.State(*(t.detach() for t in new))
    D = D_phi = None
    if cell.has_output_map:

        def h(s: tuple[Tensor, ...], phi: tuple[Tensor, ...]) -> Tensor:
            p = dict(fixed)
            p.update(zip(trainable, phi))
            return cell.output_map(cell.State(*s), p)

        _, vjp_h = torch.func.vjp(h, tuple(new), phi)  # type: ignore[misc]
        d_s_out, d_phi_out = vjp_h(ones)
        D = torch.stack(d_s_out, dim=-1)  # (B, N, k)
        D_phi = torch.stack(d_phi_out, dim=-1) if trainable else None  # (B, N, P)
    return new, NeuronJacobians(J_s, J_in, J_rec, J_phi, D, D_phi)


@dataclass(frozen=True)
class ParamBlock:
    """One trainable parameter of a layer, viewed per neuron as (N, C) columns."""

    name: str  # local name in the layer: "W", "H", "b" or "cell.<φ>"
    kind: str  # "W", "H", "b" or "phi"
    columns: int  # C
    phi_index: int = -1  # position among the trainable φ (kind "phi")

    def immediate(self, J: NeuronJacobians, x: Tensor, y_prev: Tensor) -> Tensor:
        """∂s_t[p]/∂θ[p, c]: (B, N, k, C)."""
        if self.kind == "W":
            return _outer(J.a_in, x)
        if self.kind == "H":
            assert J.a_rec is not None
            return _outer(J.a_rec, y_prev)
        if self.kind == "b":
            return J.a_in
        assert J.params is not None
        return J.params[..., self.phi_index : self.phi_index + 1]

    def add_immediate(
        self, dst: Tensor, J: NeuronJacobians, kappa: int, x: Tensor, y_prev: Tensor
    ) -> None:
        """dst (N, B, C) += ∂s_t[κ]/∂θ in the neuron-major layout, in place."""
        if self.kind in ("W", "H"):
            J_cur = J.a_in if self.kind == "W" else J.a_rec
            assert J_cur is not None
            Jk = J_cur[:, :, kappa, :]  # (B, N, G)
            pre = (x if self.kind == "W" else y_prev).unsqueeze(0)  # (1, B, m)
            m = pre.shape[-1]
            for g in range(Jk.shape[-1]):
                dst[:, :, g * m : (g + 1) * m].addcmul_(Jk[:, :, g].T.unsqueeze(-1), pre)
        elif self.kind == "b":
            dst.add_(J.a_in[:, :, kappa, :].transpose(0, 1))
        else:
            assert J.params is not None
            dst[:, :, 0].add_(J.params[:, :, kappa, self.phi_index].T)

    def to_param_shape(self, g: Tensor, layer: Layer) -> Tensor:
        """(N, C) per-neuron gradient -> the parameter's own shape."""
        G, N = layer.n_gates, layer.n_out
        if self.kind in ("W", "H"):
            return g.view(N, G, -1).transpose(0, 1).reshape(G * N, -1)
        if self.kind == "b":
            return g.T.reshape(G * N)
        return g[:, 0]


def _outer(J: Tensor, pre: Tensor) -> Tensor:
    """(B, N, k, G) ⊗ (B, m) -> (B, N, k, G·m)."""
    B, N, k, G = J.shape
    return (J.unsqueeze(-1) * pre[:, None, None, None, :]).reshape(B, N, k, G * pre.shape[-1])


def param_blocks(layer: Layer) -> list[ParamBlock]:
    """The trainable parameters of a layer (those with requires_grad), as per-neuron blocks."""
    G = layer.n_gates
    blocks = [ParamBlock("W", "W", G * layer.n_in)] if layer.W.requires_grad else []
    if layer.H is not None and layer.H.requires_grad:
        blocks.append(ParamBlock("H", "H", G * layer.n_out))
    if layer.b is not None and layer.b.requires_grad:
        blocks.append(ParamBlock("b", "b", G))
    for i, n in enumerate(layer.cell.trainable_names):
        if getattr(layer.cell, n).requires_grad:
            blocks.append(ParamBlock(f"cell.{n}", "phi", 1, i))
    return blocks


def exact_trace_bytes(layer: Layer, batch_size: int, dtype: torch.dtype) -> int:
    """Bytes an :class:`ExactTrace` of this layer needs (traces alone, before temporaries)."""
    k = len(layer.cell.state_names())
    cols = sum(b.columns for b in param_blocks(layer))
    return batch_size * layer.n_out**2 * k * cols * torch.empty((), dtype=dtype).element_size()


class LayerTrace:
    """Eligibility traces of one layer's trainable parameters over one batch of sequences."""

    def __init__(self, layer: Layer, batch_size: int, dtype: torch.dtype, device: torch.device):
        self.layer = layer
        self.blocks = param_blocks(layer)
        self.o = layer.cell.output_index()
        self.k = len(layer.cell.state_names())
        self.eps = {
            b.name: torch.zeros(self._shape(batch_size, b.columns), dtype=dtype, device=device)
            for b in self.blocks
        }

    def _shape(self, batch_size: int, columns: int) -> tuple[int, ...]:
        raise NotImplementedError

    def update(self, J: NeuronJacobians, x: Tensor, y_prev: Tensor) -> None:
        """Advance every trace one step: ε_t = (ds_t/ds_{t-1}) ε_{t-1} + ∂s_t/∂θ."""
        raise NotImplementedError

    def contract(self, L: Tensor, block: ParamBlock) -> Tensor:
        """Σ_b L · ε_y for one parameter -> (N, C)."""
        raise NotImplementedError

    def grads(self, L: Tensor) -> Iterator[tuple[str, Tensor]]:
        """(local name, gradient) of every trainable parameter for the signal L (B, N)."""
        for b in self.blocks:
            yield b.name, b.to_param_shape(self.contract(L, b), self.layer)

    def tensors(self) -> Iterator[Tensor]:
        yield from self.eps.values()

    #: attributes that are scratch space overwritten before use, not state (never saved)
    SCRATCH: ClassVar[tuple[str, ...]] = ("_spare",)

    def _named(self) -> Iterator[tuple[str, str | None, Tensor]]:
        """(attribute, key or None, tensor) of every tensor that carries over between steps."""
        for attr, v in vars(self).items():
            if attr in self.SCRATCH:
                continue
            if isinstance(v, Tensor):
                yield attr, None, v
            elif isinstance(v, dict) and v and all(isinstance(t, Tensor) for t in v.values()):
                for key, t in v.items():
                    yield attr, key, t

    def state_dict(self) -> dict[str, Tensor]:
        """Every tensor the trace carries to the next step, cloned contiguous (for checkpoints)."""
        return {
            attr if key is None else f"{attr}.{key}": t.detach().clone(
                memory_format=torch.contiguous_format
            )
            for attr, key, t in self._named()
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state_dict` for a trace built with the same layer and batch size."""
        mine = {
            attr if key is None else f"{attr}.{key}": (attr, key, t)
            for attr, key, t in self._named()
        }
        if set(state) != set(mine):
            raise CheckpointError(
                f"trace of {type(self).__name__}: expected the entries {sorted(mine)}, got "
                f"{sorted(state)} (a checkpoint of another network or rule?)"
            )
        for name, t in state.items():
            attr, key, cur = mine[name]
            if not isinstance(t, Tensor) or t.shape != cur.shape:
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise CheckpointError(
                    f"trace entry {name}: expected shape {tuple(cur.shape)}, got {got}"
                )
            new = t.to(dtype=cur.dtype, device=cur.device).clone()
            if key is None:
                setattr(self, attr, new)
            else:
                getattr(self, attr)[key] = new


class DiagonalTrace(LayerTrace):
    """ε[κ, p, b, c]: neuron p's own dynamics only (the H term dropped). Exact without H.

    Laid out neuron-major per state variable, ``(k, N, B, C)``: the contraction with the
    learning signal is then one batched matrix product per parameter
    (``(N, 1, B) @ (N, B, C)``), and the update runs in place (one variable) or into a second
    buffer of the same size: nothing is allocated per step but small (B, N) tensors.

    For cells whose output is a map of their other new state variables, y_t = h(m_t, φ)
    (``Cell.has_output_map``: SNU, LIF, ALIF), the output's trace is not stored: it is
    ``ε_y,t = (∂h/∂m_t) ε_m,t + ∂h/∂φ``, and the path through y_{t-1} folds into the memory
    recursion, ``dm_t/dm_{t-1} = J_s[m, m] + J_s[m, y] ∂h/∂m_{t-1}``. Exactly the same
    gradient with one trace fewer per parameter (LIF: half the memory and traffic).

    Where one trace variable is stored (LIF, SNU, RNN, GRU, ...) and the trace is a contiguous
    float32/float64 CPU tensor, the update of W, H and b is *deferred*: :meth:`update` records
    the step's factors, and :meth:`contract` applies them and contracts in one pass of the fused
    kernel (:mod:`ostl.kernels`) instead of PyTorch's three. A step without a signal applies
    them at the next :meth:`update`, :meth:`settle`, :meth:`tensors` or :meth:`state_dict`;
    read ``eps`` directly only after :meth:`settle`.
    """

    def __init__(
        self,
        layer: Layer,
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device,
        reduce_output: bool = True,
    ):
        cell = layer.cell
        k, o = len(cell.state_names()), cell.output_index()
        self.reduced = reduce_output and cell.has_output_map and k > 1
        #: the state variables whose traces are stored
        self.mem = [i for i in range(k) if not (self.reduced and i == o)]
        # the same indices as a slice where they are contiguous (a view, not a gather)
        contiguous = self.mem == list(range(self.mem[0], self.mem[-1] + 1))
        self._mem: slice | list[int] = (
            slice(self.mem[0], self.mem[-1] + 1) if contiguous else self.mem
        )
        super().__init__(layer, batch_size, dtype, device)
        n_mem = len(self.mem)
        self._spare = {n: torch.empty_like(e) for n, e in self.eps.items()} if n_mem > 1 else {}
        n, P = layer.n_out, len(cell.trainable_names)
        # ∂h/∂m and ∂h/∂φ of the last step, neuron-major: (m, N, B) and (P, N, B)
        self._D = torch.zeros(n_mem, n, batch_size, dtype=dtype, device=device)
        self._D_phi = torch.zeros(P, n, batch_size, dtype=dtype, device=device)
        # deferred updates: block name -> (a (N, B), coef (N, B, G), pre (B, m))
        self._pending: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        self._fused = n_mem == 1 and all(kernels.supports(e) for e in self.eps.values())

    SCRATCH: ClassVar[tuple[str, ...]] = ("_spare", "_pending")

    def _shape(self, batch_size: int, columns: int) -> tuple[int, ...]:
        return (len(self.mem), self.layer.n_out, batch_size, columns)

    def _recursion(self, J: NeuronJacobians) -> tuple[Tensor, Tensor | None]:
        """dm_t/dm_{t-1} as (m, m, N, B, 1) and, reduced, J_s[m, y] as (m, N, B)."""
        Js = J.state[:, :, self._mem]  # (B, N, m, k)
        if not self.reduced:
            return Js.permute(2, 3, 1, 0).unsqueeze(-1), None
        via_y = Js[..., self.o]  # (B, N, m): ∂m_t/∂y_{t-1}
        A = Js[..., self._mem] + via_y.unsqueeze(-1) * self._D.permute(2, 1, 0).unsqueeze(-2)
        return A.permute(2, 3, 1, 0).unsqueeze(-1), via_y.permute(2, 1, 0)

    def update(self, J: NeuronJacobians, x: Tensor, y_prev: Tensor) -> None:
        self.settle()
        A, via_y = self._recursion(J)
        a = A[0, 0, :, :, 0].contiguous() if self._fused else None
        for b in self.blocks:
            if a is not None and b.kind != "phi":
                self._defer(b, a, J, x, y_prev)
                continue
            old = self.eps[b.name]
            if len(self.mem) == 1:
                new = old
                new[0].mul_(A[0, 0])
            else:
                new = self._spare[b.name]
                for i in range(len(self.mem)):
                    torch.mul(old[0], A[i, 0], out=new[i])
                    for j in range(1, len(self.mem)):
                        new[i].addcmul_(old[j], A[i, j])
            for i, kappa in enumerate(self.mem):
                b.add_immediate(new[i], J, kappa, x, y_prev)
                if via_y is not None and b.kind == "phi":  # φ's direct path into y_{t-1}
                    new[i][:, :, 0].addcmul_(via_y[i], self._D_phi[b.phi_index])
            if new is not old:
                self.eps[b.name], self._spare[b.name] = new, old
        if self.reduced:
            assert J.out is not None
            self._D = J.out[..., self._mem].permute(2, 1, 0)
            if J.out_params is not None:
                self._D_phi = J.out_params.permute(2, 1, 0)

    def _defer(
        self, b: ParamBlock, a: Tensor, J: NeuronJacobians, x: Tensor, y_prev: Tensor
    ) -> None:
        """Record block b's update ε ← a ε + coef ⊗ pre for the fused kernel."""
        J_cur = J.a_rec if b.kind == "H" else J.a_in
        assert J_cur is not None
        coef = J_cur[:, :, self.mem[0], :].transpose(0, 1)  # (N, B, G)
        if b.kind == "b":
            pre = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        else:
            pre = x if b.kind == "W" else y_prev
        dtype = self.eps[b.name].dtype
        self._pending[b.name] = (
            a,
            coef.to(dtype).contiguous(),
            pre.to(dtype).contiguous(),
        )

    def settle(self) -> None:
        """Apply every deferred update (see the class docstring): ``eps`` is then current."""
        if not self._pending:
            return
        with flush_denormals():  # as inside a runner step, when called from outside one
            for name, (a, coef, pre) in self._pending.items():
                kernels.run(self.eps[name][0], a, coef, pre, None, None)
        self._pending.clear()

    def contract(self, L: Tensor, block: ParamBlock) -> Tensor:
        pending = self._pending.pop(block.name, None)
        if pending is not None:  # update and contraction in one pass
            eps = self.eps[block.name][0]
            w = (L.T * self._D[0]) if self.reduced else L.T
            g = torch.empty(eps.shape[0], eps.shape[2], dtype=eps.dtype, device=eps.device)
            kernels.run(eps, *pending, w.to(eps.dtype).contiguous(), g)
            return g.to(L.dtype)
        eps = self.eps[block.name]
        # (N, 1, B) @ (N, B, C); bmm takes a slow per-matrix path on strided operands, so the
        # signal is made contiguous (and cast to a low-precision trace's dtype)
        if not self.reduced:
            return _bmm_signal(L.T, eps[self.o], L.dtype)
        LT = L.T
        g = _bmm_signal(LT * self._D[0], eps[0], L.dtype)
        for i in range(1, len(self.mem)):
            g += _bmm_signal(LT * self._D[i], eps[i], L.dtype)
        if block.kind == "phi":
            g[:, 0] += (LT * self._D_phi[block.phi_index]).sum(1)
        return g

    def tensors(self) -> Iterator[Tensor]:
        self.settle()
        yield from super().tensors()
        yield from self._spare.values()
        yield self._D
        yield self._D_phi

    def state_dict(self) -> dict[str, Tensor]:
        self.settle()
        return super().state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._pending.clear()
        super().load_state_dict(state)


def _bmm_signal(w: Tensor, eps: Tensor, dtype: torch.dtype) -> Tensor:
    """Σ_b w[p, b] eps[p, b, c] -> (N, C) in ``dtype``, as one batched matrix product."""
    w = w.to(eps.dtype).contiguous().unsqueeze(1)
    return torch.bmm(w, eps).squeeze(1).to(dtype)


class ExactTrace(LayerTrace):
    """ε[b, q, κ, p, c]: every neuron's state against every neuron's parameters, H term kept."""

    def __init__(
        self,
        layer: Layer,
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device,
        max_bytes: int,
    ):
        need = exact_trace_bytes(layer, batch_size, dtype)
        if need > max_bytes:
            raise TraceTooLargeError(
                f"an exact trace of this layer (n_in={layer.n_in}, n_out={layer.n_out}, "
                f"{layer.cell.n_gates} gate(s), k={len(layer.cell.state_names())} state variables, "
                f"batch {batch_size}, {dtype}) needs {need / 2**30:.2f} GiB, above the limit of "
                f"{max_bytes / 2**30:.2f} GiB (max_trace_bytes). Its memory grows as B·N³: use "
                "OSTL(recurrence='diagonal') (O(N²), drops the H term), a smaller layer or "
                "batch, or raise max_trace_bytes."
            )
        super().__init__(layer, batch_size, dtype, device)

    def _shape(self, batch_size: int, columns: int) -> tuple[int, ...]:
        n = self.layer.n_out
        return (batch_size, n, self.k, n, columns)

    def update(self, J: NeuronJacobians, x: Tensor, y_prev: Tensor) -> None:
        H = self.layer.H
        assert H is not None and J.a_rec is not None
        Hg = H.detach().view(self.layer.n_gates, self.layer.n_out, self.layer.n_out)
        for b in self.blocks:
            eps = self.eps[b.name]
            rec = torch.einsum("gqr,brpc->bgqpc", Hg, eps[:, :, self.o])
            new = torch.einsum("bqkl,bqlpc->bqkpc", J.state, eps)
            new += torch.einsum("bqkg,bgqpc->bqkpc", J.a_rec, rec)
            new.diagonal(dim1=1, dim2=3).add_(b.immediate(J, x, y_prev).permute(0, 2, 3, 1))
            self.eps[b.name] = new

    def contract(self, L: Tensor, block: ParamBlock) -> Tensor:
        return torch.einsum("bq,bqpc->pc", L, self.eps[block.name][:, :, self.o])


class FactorisedTrace(LayerTrace):
    """Presynaptic traces: ε[p, b, j] = x̄[b, j] for every neuron p (exact where it applies).

    For cells whose :meth:`~ostl.cells.Cell.factorised_decay` is a constant α (a LIF with a
    subtractive reset that is not differentiated, as in e-prop), the diagonal trace of
    ``W[p, j]`` is the same for every p: ``x̄_t = α x̄_{t-1} + x_t``. Likewise ``ȳ`` for H and a
    scalar for ``b``. The gradient is then one matmul, ``(L ⊙ ∂y/∂m)ᵀ x̄``. Memory
    ``B·(n_in + N + 1)`` per layer instead of ``B·N·(n_in + N + 1)``; per step O(B·(n_in + N))
    for the traces plus O(B·N·(n_in + N)) for the gradient (only at steps with a target).
    """

    def __init__(self, layer: Layer, batch_size: int, dtype: torch.dtype, device: torch.device):
        alpha = layer.cell.factorised_decay()
        if alpha is None or not FactorisedTrace.applies(layer):
            raise OptionError(f"{type(layer.cell).__name__} does not factorise (see applies())")
        self.alpha = alpha
        self.mem = 1 - layer.cell.output_index()  # the memory variable (k = 2)
        super().__init__(layer, batch_size, dtype, device)
        self._D = torch.zeros(batch_size, layer.n_out, dtype=dtype, device=device)

    @staticmethod
    def applies(layer: Layer) -> bool:
        """One gate, two state variables with an output map, no trained per-neuron parameter."""
        cell = layer.cell
        return (
            cell.factorised_decay() is not None
            and cell.has_output_map
            and len(cell.state_names()) == 2
            and layer.n_gates == 1
            and not any(b.kind == "phi" for b in param_blocks(layer))
        )

    def _shape(self, batch_size: int, columns: int) -> tuple[int, ...]:
        return (batch_size, columns)

    def update(self, J: NeuronJacobians, x: Tensor, y_prev: Tensor) -> None:
        for b in self.blocks:
            eps = self.eps[b.name].mul_(self.alpha)
            if b.kind == "W":
                eps.add_(x)
            elif b.kind == "H":
                eps.add_(y_prev)
            else:
                eps.add_(1.0)
        assert J.out is not None
        self._D = J.out[..., self.mem]

    def contract(self, L: Tensor, block: ParamBlock) -> Tensor:
        eps = self.eps[block.name]
        return ((L * self._D).T.to(eps.dtype) @ eps).to(L.dtype)

    def tensors(self) -> Iterator[Tensor]:
        yield from super().tensors()
        yield self._D


def diagonal_trace(
    layer: Layer, batch_size: int, dtype: torch.dtype, device: torch.device
) -> LayerTrace:
    """The cheapest exact diagonal trace for the layer: factorised where it applies."""
    if FactorisedTrace.applies(layer):
        return FactorisedTrace(layer, batch_size, dtype, device)
    return DiagonalTrace(layer, batch_size, dtype, device)


def input_signal(L: Tensor, J: NeuronJacobians, feedback: Tensor, layer: Layer) -> Tensor:
    """Learning signal for the layer below: L · ∂y_t/∂x_t through the current step only.

    ``feedback`` is the layer's W (exact spatial sweep) or a fixed random matrix of its shape.
    L (B, N) -> (B, n_in).
    """
    o = layer.cell.output_index()
    delta = L.unsqueeze(-1) * J.a_in[:, :, o, :]  # (B, N, G): L ⊙ ∂y/∂a_in
    return delta.transpose(1, 2).reshape(L.shape[0], -1) @ feedback
