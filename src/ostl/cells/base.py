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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import OptionError

__all__ = ["Cell", "Entry", "NeuronJacobians", "DenseJacobians", "pack_jacobians", "dense"]


#: One Jacobian entry: a (B, N) tensor (per sample and neuron), a (B, G, N) tensor for the
#: derivatives with respect to the G gate currents, or a plain number shared by every entry
#: (0 and 1 are common and let the trace engine skip a multiplication).
Entry = Tensor | float


class NeuronJacobians(NamedTuple):
    """Per-neuron derivatives of one step, entry by entry.

    Entries are kept apart rather than assembled into (B, N, k, k) blocks: the diagonal trace
    consumes them one by one (neuron-wise products of (B, N) tensors), so a closed form hands
    over the tensors it computed anyway, and numbers stay numbers. :func:`dense` assembles the
    blocks where a dense layout is wanted (the exact trace, comparisons).

    For a cell with an output map y_t = h(m_t, φ), the output's own row (of ``state``, and its
    entry in ``params``) may be None: it is implied, ``∂y_t/∂· = Σ_i ∂h/∂m_i · ∂m_i/∂·`` (plus
    ``∂h/∂φ`` for φ), and the diagonal trace never reads it. :meth:`complete` fills it in.
    """

    state: tuple[tuple[Entry, ...] | None, ...]  # [κ][λ] ∂s_t[κ]/∂s_{t-1}[λ] (direct)
    a_in: tuple[Entry, ...]  # [κ] ∂s_t[κ]/∂a_in, (B, G, N) or a number
    a_rec: tuple[Entry, ...] | None  # [κ] ∂s_t[κ]/∂a_rec (None without H)
    params: tuple[tuple[Entry, ...] | None, ...] | None  # [κ][φ] ∂s_t[κ]/∂φ, trained φ
    # For cells with an output map y_t = h(m_t, φ) (Cell.has_output_map), else None:
    out: tuple[Entry, ...] | None = None  # [κ] ∂h/∂s_t[κ] (zero in the output's own entry)
    out_params: tuple[Entry, ...] | None = None  # [φ] ∂h/∂φ, the direct path of φ into y_t

    def row(self, i: int) -> tuple[Entry, ...]:
        """Row i of ``state`` (present: call :meth:`complete` first for an implied row)."""
        r = self.state[i]
        assert r is not None, "an implied output row: call complete() first"
        return r

    def param_row(self, i: int) -> tuple[Entry, ...]:
        """Row i of ``params`` (present: call :meth:`complete` first for an implied row)."""
        assert self.params is not None
        r = self.params[i]
        assert r is not None, "an implied output row: call complete() first"
        return r

    def complete(self) -> NeuronJacobians:
        """The same Jacobians with an implied output row (see the class docstring) filled in."""
        o = next((i for i, row in enumerate(self.state) if row is None), None)
        if o is None:
            return self
        out_map = self.out
        assert out_map is not None
        mem = [i for i in range(len(self.state)) if i != o]

        def through_h(
            rows: Sequence[Sequence[Entry]], extra: Sequence[Entry] | None
        ) -> tuple[Entry, ...]:
            out: list[Entry] = []
            for col in range(len(rows[0])):
                total: Entry = 0.0 if extra is None else extra[col]
                for i, row in zip(mem, rows):
                    total = total + out_map[i] * row[col]
                out.append(total)
            return tuple(out)

        state = list(self.state)
        state[o] = through_h([self.row(i) for i in mem], None)
        params = self.params
        if params is not None and params[o] is None:
            rows = [self.param_row(i) for i in mem]
            params = tuple(
                through_h(rows, self.out_params) if i == o else r for i, r in enumerate(params)
            )
        return self._replace(state=tuple(state), params=params)


def pack_jacobians(
    cell: Cell,
    state: Sequence[Sequence[Entry] | None],
    current: Sequence[Entry],
    recurrent: bool,
    params: Mapping[str, Sequence[Entry | None]],
    out: Sequence[Entry] | None = None,
    out_params: Mapping[str, Entry] | None = None,
) -> NeuronJacobians:
    """A closed form's derivatives as :class:`NeuronJacobians` (single-gate cells).

    ``state[κ][λ] = ∂s_t[κ]/∂s_{t-1}[λ]``, ``current[κ] = ∂s_t[κ]/∂a`` (a = a_in + a_rec, so
    both currents share it), ``params[φ][κ] = ∂s_t[κ]/∂φ`` for the trainable φ (others may be
    left out), ``out[κ] = ∂h/∂s_t[κ]`` and ``out_params[φ] = ∂h/∂φ``. Entries are (B, N)
    tensors or numbers; with an output map, the output's row and its ``params`` entries may be
    None (implied). Nothing is copied: the entries are the caller's tensors.
    """
    cur = tuple(c.unsqueeze(-2) if isinstance(c, Tensor) else c for c in current)  # (B, 1, N)
    names = cell.trainable_names
    phi = None
    if names:
        rows = [[params[n][i] for n in names] for i in range(len(state))]
        phi = tuple(None if None in r else tuple(r) for r in rows)
    D_phi = tuple(out_params[n] for n in names) if out_params is not None and names else None
    return NeuronJacobians(
        tuple(None if row is None else tuple(row) for row in state),
        cur,
        cur if recurrent else None,
        phi,  # type: ignore[arg-type]
        tuple(out) if out is not None else None,
        D_phi,
    )


class DenseJacobians(NamedTuple):
    """:class:`NeuronJacobians` as dense per-neuron blocks (see :func:`dense`)."""

    state: Tensor  # (B, N, k, k)
    a_in: Tensor  # (B, N, k, G)
    a_rec: Tensor | None  # (B, N, k, G)
    params: Tensor | None  # (B, N, k, P)
    out: Tensor | None = None  # (B, N, k)
    out_params: Tensor | None = None  # (B, N, P)


def dense(J: NeuronJacobians, ref: Tensor, n_gates: int) -> DenseJacobians:
    """The blocks of ``J`` as dense tensors, for a batch-major reference ``ref`` (B, N):

    ``state`` (B, N, k, k), ``a_in`` and ``a_rec`` (B, N, k, G), ``params`` (B, N, k, P),
    ``out`` (B, N, k), ``out_params`` (B, N, P); None where ``J`` has None.
    """
    B, N = ref.shape
    J = J.complete()

    def full(e: Entry, shape: tuple[int, ...]) -> Tensor:
        return e.expand(shape) if isinstance(e, Tensor) else ref.new_full(shape, float(e))

    def grid(rows: Sequence[Sequence[Entry] | None]) -> Tensor:
        return torch.stack([torch.stack([full(e, (B, N)) for e in r or ()], -1) for r in rows], -2)

    def gates(col: Sequence[Entry]) -> Tensor:  # [κ] (B, G, N) -> (B, N, k, G)
        return torch.stack([full(e, (B, n_gates, N)).transpose(1, 2) for e in col], -2)

    return DenseJacobians(
        grid(J.state),
        gates(J.a_in),
        None if J.a_rec is None else gates(J.a_rec),
        None if J.params is None else grid(J.params),
        None if J.out is None else torch.stack([full(e, (B, N)) for e in J.out], -1),
        None if J.out_params is None else torch.stack([full(e, (B, N)) for e in J.out_params], -1),
    )


class Cell(nn.Module):
    """Base class of every cell. Subclasses set the class attributes and implement ``step``.

    Class attributes:
        State: the NamedTuple type of the state; its fields are the state variables.
        output: name of the state field that is the neuron's output ``y``.
        n_gates: number of synaptic currents per neuron (1; LSTM 4; GRU 3).
        default_bias: whether a Layer gives this cell a synaptic bias ``b`` by default.
        spiking: whether the output is a spike train, y_t ∈ {0, 1} (see below).
    """

    State: ClassVar[type[Any]]
    output: ClassVar[str]
    n_gates: ClassVar[int] = 1
    default_bias: ClassVar[bool] = False
    #: True when the output is a spike train: every y_t is exactly 0 or 1 (a step function with
    #: a surrogate derivative). The one place this is said: whatever treats spiking cells apart
    #: (spike rasters, the spike-input defaults of the layers above, input gains that make them
    #: fire) derives its set from :data:`ostl.CELLS`. The tests check it against the outputs.
    spiking: ClassVar[bool] = False
    #: True when the output is a map of the other *new* state variables, y_t = h(m_t, φ), given
    #: by :meth:`output_map`; the diagonal trace then stores no trace for y (one fewer).
    has_output_map: ClassVar[bool] = False
    #: False when no state variable reads the previous output y_{t-1} directly (only through
    #: the recurrent current H y_{t-1}): LSTM, RNN. The output's own trace then never feeds
    #: back, so the diagonal trace does not store it (it is formed from the others when the
    #: gradient is contracted). The test suite checks the declaration against the Jacobians.
    reads_previous_output: ClassVar[bool] = True
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
