"""The cell contract: per-neuron dynamics with explicit state.

A cell is the part of a layer that is private to each neuron. The layer computes the synaptic
currents of every gate ``g`` of every neuron ``p``::

    a_in[..., g, p]  = Σ_j W_g[p, j] x_t[..., j] + b_g[p]      (input current)
    a_rec[..., g, p] = Σ_r H_g[p, r] y_{t-1}[..., r]            (recurrent current, or None)

and the cell maps them, with the neuron's previous state, to its new state::

    s_t = step(a_in, a_rec, s_{t-1}, φ)

``s`` is a NamedTuple of ``k`` tensors of shape ``(..., N)``; one of them (``output``) is the
neuron's output ``y_t``. Keeping ``y`` in the state makes the one-step derivative
``ds_t/ds_{t-1}`` *total*: the path through ``y_{t-1}`` (the SNU reset gate ``1 - y_{t-1}``)
is part of the per-neuron Jacobian, and the recurrent path is ``∂s_t/∂a_rec · H``.

``step`` must be elementwise over every axis but the gate axis: neuron ``p``'s new state may
depend only on neuron ``p``'s currents, state and parameters φ[p]. The trace engine
(:mod:`ostl.traces`) relies on this to derive the per-neuron Jacobian blocks with
``torch.func``, and the test suite checks it against ``torch.func.jacrev`` for every cell.

Per-neuron parameters φ (decays, thresholds, biases inside the nonlinearity) have shape
``(N,)``. Trainable ones are ``nn.Parameter``; fixed ones are buffers. Choose which with the
cell's ``trainable`` argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import OptionError

__all__ = ["Cell", "NeuronJacobians", "pack_jacobians"]


class NeuronJacobians(NamedTuple):
    """Per-neuron derivative blocks of one step, each with leading dims (B, N)."""

    state: Tensor  # (B, N, k, k)  ∂s_t/∂s_{t-1} (direct: leak, reset via y_{t-1})
    a_in: Tensor  # (B, N, k, G)  ∂s_t/∂a_in
    a_rec: Tensor | None  # (B, N, k, G)  ∂s_t/∂a_rec (None without H)
    params: Tensor | None  # (B, N, k, P)  ∂s_t/∂φ for the trainable per-neuron φ (None if none)
    # For cells with an output map y_t = h(m_t, φ) (Cell.has_output_map), else None:
    out: Tensor | None = None  # (B, N, k)  ∂h/∂s_t (zero in the output's own column)
    out_params: Tensor | None = None  # (B, N, P)  ∂h/∂φ, the direct path of φ into y_t


def pack_jacobians(
    cell: Cell,
    ref: Tensor,
    state: Sequence[Sequence[Tensor | float]],
    current: Sequence[Tensor | float],
    recurrent: bool,
    params: dict[str, Sequence[Tensor | float]],
    out: Sequence[Tensor | float] | None = None,
    out_params: dict[str, Tensor | float] | None = None,
) -> NeuronJacobians:
    """Assemble a closed form's scalar derivatives into :class:`NeuronJacobians` blocks.

    For single-gate cells: ``state[κ][λ] = ∂s_t[κ]/∂s_{t-1}[λ]``, ``current[κ] = ∂s_t[κ]/∂a``
    (a = a_in + a_rec), ``params[φ][κ] = ∂s_t[κ]/∂φ`` for every φ (only the trainable ones are
    kept), ``out[κ] = ∂h/∂s_t[κ]`` and ``out_params[φ] = ∂h/∂φ``. Entries may be numbers or
    tensors broadcastable to ``ref`` (B, N).
    """

    def block(entries: Sequence[Sequence[Tensor | float]]) -> Tensor:
        """(B, N, rows, cols) from rows of entries; written in place (no stack, no expand)."""
        out = ref.new_empty(*ref.shape, len(entries), len(entries[0]))
        for i, row in enumerate(entries):
            for j, v in enumerate(row):
                out[..., i, j] = v
        return out

    J_s = block(state)  # (B, N, k, k)
    J_a = block([[v] for v in current])  # (B, N, k, 1)
    names = cell.trainable_names
    J_phi = block([[params[n][i] for n in names] for i in range(len(state))]) if names else None
    D = block([out])[..., 0, :] if out is not None else None
    D_phi = None
    if out_params is not None and names:
        D_phi = block([[out_params[n] for n in names]])[..., 0, :]
    return NeuronJacobians(J_s, J_a, J_a if recurrent else None, J_phi, D, D_phi)


class Cell(nn.Module):
    """Base class of every cell. Subclasses set the class attributes and implement ``step``.

    Class attributes:
        State: the NamedTuple type of the state; its fields are the state variables.
        output: name of the state field that is the neuron's output ``y``.
        n_gates: number of synaptic currents per neuron (1; LSTM 4; GRU 3).
        default_bias: whether a Layer gives this cell a synaptic bias ``b`` by default.
    """

    State: ClassVar[type[Any]]
    output: ClassVar[str]
    n_gates: ClassVar[int] = 1
    default_bias: ClassVar[bool] = False
    #: True when the output is a map of the other *new* state variables, y_t = h(m_t, φ), given
    #: by :meth:`output_map`; the diagonal trace then stores no trace for y (one fewer).
    has_output_map: ClassVar[bool] = False
    #: True when the cell computes its Jacobian blocks itself (:meth:`jacobians`), a fast path
    #: that must equal the ``torch.func``-derived blocks (tested for every such cell).
    has_closed_form: ClassVar[bool] = False

    def __init__(self, n: int, trainable: Iterable[str] = ()) -> None:
        super().__init__()
        if not isinstance(n, int) or n <= 0:
            raise OptionError(f"a cell needs a positive number of neurons, got {n!r}")
        self.n = n
        self._trainable = tuple(trainable)
        self._neuron_param_names: list[str] = []

    # -- per-neuron parameters -------------------------------------------------------------
    def _add_neuron_param(self, name: str, value: float) -> None:
        """Register a per-neuron parameter of shape (N,), trainable if named in ``trainable``."""
        t = torch.full((self.n,), float(value))
        if name in self._trainable:
            self.register_parameter(name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)
        self._neuron_param_names.append(name)

    def _check_trainable(self) -> None:
        unknown = set(self._trainable) - set(self._neuron_param_names)
        if unknown:
            raise OptionError(
                f"{type(self).__name__}: cannot train {sorted(unknown)}; its per-neuron "
                f"parameters are {self._neuron_param_names}"
            )

    def neuron_params(self) -> dict[str, Tensor]:
        """Every per-neuron parameter φ (trainable and fixed), by name, each of shape (N,)."""
        return {name: getattr(self, name) for name in self._neuron_param_names}

    @property
    def trainable_names(self) -> tuple[str, ...]:
        """Names of the per-neuron parameters that are trained (``nn.Parameter``)."""
        return tuple(n for n in self._neuron_param_names if n in self._trainable)

    # -- state -----------------------------------------------------------------------------
    @classmethod
    def state_names(cls) -> tuple[str, ...]:
        return tuple(cls.State._fields)

    @classmethod
    def output_index(cls) -> int:
        return cls.state_names().index(cls.output)

    def init_state(
        self,
        batch_size: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> NamedTuple:
        """The resting state: every variable zero, each of shape (batch_size, N)."""
        z = torch.zeros(batch_size, self.n, dtype=dtype, device=device)
        return self.State(*(z.clone() for _ in self.State._fields))

    # -- dynamics --------------------------------------------------------------------------
    def step(self, a_in: Tensor, a_rec: Tensor | None, state: Any, p: dict[str, Tensor]) -> Any:
        """One time step. ``a_in``, ``a_rec``: (..., G, N); state fields (..., N); p: φ by name.

        Must be elementwise over neurons and samples (see the module docstring).
        """
        raise NotImplementedError

    def output_map(self, state: Any, p: dict[str, Tensor]) -> Tensor:
        """y_t = h(m_t, φ) from the new state's other fields (only if ``has_output_map``).

        Must agree with the output ``step`` returns; the test suite checks it.
        """
        raise NotImplementedError(f"{type(self).__name__} declares no output map")

    def jacobians(
        self, a_in: Tensor, a_rec: Tensor | None, state: Any, p: dict[str, Tensor]
    ) -> tuple[Any, NeuronJacobians]:
        """Closed form of (new state, per-neuron blocks) (only if ``has_closed_form``)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form Jacobians")

    def factorised_decay(self) -> float | None:
        """α when the diagonal trace factorises into presynaptic traces, else None.

        That is the case when the cell has an output map with one memory variable m whose
        recursion is the same constant for every neuron, ``dm_t/dm_{t-1} = α`` (the path through
        y_{t-1} included), and ``∂m_t/∂a = 1``: then every synapse's trace is its presynaptic
        input low-pass filtered by α, the same for every postsynaptic neuron (as in e-prop).
        """
        return None

    def forward(self, a_in: Tensor, a_rec: Tensor | None, state: Any) -> Any:
        return self.step(a_in, a_rec, state, self.neuron_params())

    def extra_repr(self) -> str:
        return f"n={self.n}, trainable={list(self.trainable_names)}"


def total_current(a_in: Tensor, a_rec: Tensor | None) -> Tensor:
    """a_in + a_rec, with a_rec None for a layer without recurrent weights."""
    return a_in if a_rec is None else a_in + a_rec
