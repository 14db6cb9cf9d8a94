"""Layer (synapses + cell), Readout (memoryless linear map) and Network (a stack of them).

Time-major tensors everywhere: a sequence is ``(T, B, N)``, one time step ``(B, N)``.

A :class:`Layer` holds the synapses of ``n_out`` neurons with ``G`` gates each:
``W`` (G·n_out, n_in) input weights, optional ``H`` (G·n_out, n_out) recurrent weights and
optional ``b`` (G·n_out,) bias; rows are grouped by gate (gate g owns rows g·n_out … (g+1)·n_out),
as in ``torch.nn.LSTM``. Its cell holds the per-neuron dynamics and per-neuron parameters.

``Network(xs)`` is a plain autograd unroll of ``Network.step``: it is the BPTT oracle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells import Cell, make_cell
from .errors import LayerTypeError, OptionError, ShapeError, check_tensor

__all__ = ["Layer", "Readout", "ReadoutState", "Network", "SynapticProduct"]


class SynapticProduct(Protocol):
    """A transformation of the synapses (e.g. :mod:`ostl.hardware`'s PCM crossbars).

    Set as ``layer.synapses``, it computes ``x @ M.T`` for the layer's weight matrix named
    ``name`` (``"W"`` or ``"H"``) instead of the digital product. It is a plain attribute, not
    a submodule: the network's ``state_dict`` keeps the same keys with or without it.
    """

    def __call__(self, name: str, x: Tensor) -> Tensor: ...


def _product(module: nn.Module, name: str, x: Tensor) -> Tensor:
    """x @ M.T for the weight matrix ``name`` of ``module``, through its synapses hook if set."""
    return _linear(module, name, x, getattr(module, name), None)


def _linear(module: nn.Module, name: str, x: Tensor, M: Tensor, b: Tensor | None) -> Tensor:
    """x @ M.T + b, the product through ``module``'s synapses hook if one is set."""
    hook = module.__dict__.get("synapses")
    if hook is not None:
        y = cast(SynapticProduct, hook)(name, x)
        return y if b is None else y + b
    return F.linear(x, M, b)


def _uniform_(t: Tensor, fan_in: int) -> None:
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        t.uniform_(-bound, bound)


def _check_step_input(module: nn.Module, x: Tensor, n_in: int, state: Sequence[Tensor]) -> None:
    """Shapes of one step: x (..., n_in) and every state field (..., N) with the same leading dims.

    The leading dims are (B,) in normal use; ``torch.func.vmap`` (RTRL) strips the batch
    dim, so only consistency is required here, never broadcasting.
    """
    name = type(module).__name__
    if not isinstance(x, Tensor):
        raise ShapeError(f"{name}: x_t must be a Tensor of shape (B, {n_in}), got {type(x)}")
    if x.dim() < 1 or x.shape[-1] != n_in:
        raise ShapeError(f"{name}: expected x_t of shape (B, {n_in}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        from .errors import DTypeError

        raise DTypeError(f"{name}: expected a floating-point x_t, got {x.dtype}")
    lead = tuple(x.shape[:-1])
    want = getattr(getattr(module, "cell", None), "State", None)
    if want is not None and not isinstance(state, want):
        raise ShapeError(
            f"{name}: expected a {want.__name__} (from init_state) as state, got "
            f"{type(state).__name__}"
        )
    for field, s in zip(getattr(state, "_fields", ()), state):
        if tuple(s.shape[:-1]) != lead:
            raise ShapeError(
                f"{name}: state.{field} has shape {tuple(s.shape)} but x_t has batch shape "
                f"{lead}; initialise the state with init_state(batch_size) for this batch"
            )


class Layer(nn.Module):
    """Synapses + cell: one stateful layer of ``n_out`` neurons.

    Args:
        n_in: input size.
        n_out: number of neurons.
        cell: a registry name (``"snu"``, ``"ssnu"``, ``"lif"``, ``"alif"``, ``"rnn"``,
            ``"lstm"``, ``"gru"``), a Cell class or a Cell instance of ``n_out`` neurons.
        recurrent: add recurrent weights ``H`` (each neuron sees the others' past outputs).
        bias: add a synaptic bias ``b`` per gate; default is the cell's own choice
            (spiking cells put their threshold in the cell instead).
        **cell_kwargs: options of the cell (e.g. ``decay``, ``surrogate``, ``reset``).
    """

    stateful = True

    def __init__(
        self,
        n_in: int,
        n_out: int,
        cell: str | type[Cell] | Cell = "snu",
        recurrent: bool = False,
        bias: bool | None = None,
        **cell_kwargs: Any,
    ) -> None:
        super().__init__()
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise OptionError(f"Layer: {name} must be a positive int, got {v!r}")
        self.n_in, self.n_out = n_in, n_out
        self.cell = make_cell(cell, n_out, **cell_kwargs)
        self.n_gates = self.cell.n_gates
        gn = self.n_gates * n_out
        self.W = nn.Parameter(torch.empty(gn, n_in))
        _uniform_(self.W, n_in)
        self.H: nn.Parameter | None = None
        if recurrent:
            self.H = nn.Parameter(torch.empty(gn, n_out))
            _uniform_(self.H, n_out)
        use_bias = self.cell.default_bias if bias is None else bias
        self.b: nn.Parameter | None = nn.Parameter(torch.zeros(gn)) if use_bias else None
        self.synapses: SynapticProduct | None = None  # see SynapticProduct

    @classmethod
    def from_torch(cls, module: nn.Module, *, ignore_dropout: bool = False) -> Layer:
        """A single-layer ``nn.RNN`` (tanh), ``nn.GRU`` or ``nn.LSTM`` (or its ``nn.*Cell``)
        as an ostl Layer with recurrent weights, its weights copied; the same outputs.

        See :mod:`ostl.interop.torch_modules` for the mapping and the options refused
        (several layers: ``Network.from_torch``).
        """
        from .interop.torch_modules import layer_from_torch

        return layer_from_torch(module, ignore_dropout=ignore_dropout)

    @property
    def recurrent(self) -> bool:
        return self.H is not None

    def init_state(
        self,
        batch_size: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> NamedTuple:
        """Resting state of the cell: a NamedTuple of (batch_size, n_out) tensors."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise OptionError(f"batch_size must be a positive int, got {batch_size!r}")
        return self.cell.init_state(
            batch_size, dtype=dtype or self.W.dtype, device=device or self.W.device
        )

    def currents(
        self, x: Tensor, state: Any, weights: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Synaptic currents per gate: a_in = W x + b and a_rec = H y_{t-1}, each (..., G, N).

        ``weights`` replaces the layer's own ``W``, ``H`` and ``b`` by name (the synapses
        hook, when set, still computes the products with its own weights).
        """
        w = weights or {}
        b = w.get("b", self.b)
        a_in = _linear(self, "W", x, w.get("W", self.W), b)
        a_in = a_in.unflatten(-1, (self.n_gates, self.n_out))
        if self.H is None:
            return a_in, None
        y_prev = getattr(state, self.cell.output)
        a_rec = _linear(self, "H", y_prev, w.get("H", self.H), None)
        return a_in, a_rec.unflatten(-1, (self.n_gates, self.n_out))

    def forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One time step: x (B, n_in), state -> (y (B, n_out), new state)."""
        _check_step_input(self, x, self.n_in, state)
        a_in, a_rec = self.currents(x, state)
        new = self.cell(a_in, a_rec, state)
        return getattr(new, self.cell.output), new

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, recurrent={self.recurrent}"


class ReadoutState(NamedTuple):
    """A Readout is memoryless: its state has no fields."""


class Readout(nn.Module):
    """Memoryless linear readout: y_t = W x_t + b."""

    stateful = False

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise OptionError(f"Readout: {name} must be a positive int, got {v!r}")
        self.n_in, self.n_out = n_in, n_out
        self.W = nn.Parameter(torch.empty(n_out, n_in))
        _uniform_(self.W, n_in)
        self.b: nn.Parameter | None = nn.Parameter(torch.zeros(n_out)) if bias else None
        self.synapses: SynapticProduct | None = None  # see SynapticProduct

    @classmethod
    def from_torch(cls, linear: nn.Module) -> Readout:
        """An ``nn.Linear`` as a Readout, its weights copied (:mod:`ostl.interop.torch_modules`)."""
        from .interop.torch_modules import readout_from_torch

        return readout_from_torch(linear)

    def init_state(self, batch_size: int, **_: Any) -> ReadoutState:
        return ReadoutState()

    def forward(self, x: Tensor, state: Any = ()) -> tuple[Tensor, ReadoutState]:
        _check_step_input(self, x, self.n_in, ())
        return _linear(self, "W", x, self.W, self.b), ReadoutState()

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, bias={self.b is not None}"


class Network(nn.Module):
    """A stack of layers run in order at every time step.

    Args:
        layers: Layer and Readout modules; each layer's ``n_in`` must equal the previous
            layer's ``n_out``.
    """

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if len(self.layers) == 0:
            raise OptionError("Network needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer | Readout):
                raise LayerTypeError(
                    f"Network: layer {i} is a {type(layer).__name__}; expected ostl.Layer or "
                    "ostl.Readout (the rules need the synapse/cell structure they declare): "
                    "e.g. ostl.Layer(n_in, n_out, cell) for a stateful layer, "
                    "ostl.Readout(n_in, n_out) for a linear read-out (in place of nn.Linear)"
                )
            if i and layer.n_in != self.layers[i - 1].n_out:
                raise ShapeError(
                    f"Network: layer {i} expects n_in={layer.n_in} but layer {i - 1} has "
                    f"n_out={self.layers[i - 1].n_out}"
                )
        self.n_in: int = self.typed_layers[0].n_in
        self.n_out: int = self.typed_layers[-1].n_out

    @classmethod
    def from_torch(cls, *modules: nn.Module, ignore_dropout: bool = False) -> Network:
        """A Network of PyTorch modules in order, weights copied: e.g.
        ``Network.from_torch(lstm, linear)`` for an ``nn.LSTM`` followed by an ``nn.Linear``.

        Recurrent modules of several layers give one Layer each; ostl Layers and Readouts are
        taken as they are. See :mod:`ostl.interop.torch_modules`.
        """
        from .interop.torch_modules import network_from_torch

        return network_from_torch(*modules, ignore_dropout=ignore_dropout)

    @property
    def typed_layers(self) -> list[Layer | Readout]:
        """``self.layers`` as a typed list (the constructor checked every element)."""
        return cast(list[Layer | Readout], list(self.layers))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def init_state(self, batch_size: int, **kwargs: Any) -> tuple[Any, ...]:
        """A tuple of every layer's resting state."""
        return tuple(layer.init_state(batch_size, **kwargs) for layer in self.typed_layers)

    def step(self, x: Tensor, state: Sequence[Any]) -> tuple[Tensor, tuple[Any, ...]]:
        """One time step through all layers: x (B, n_in) -> (y (B, n_out), new state)."""
        if len(state) != len(self.layers):
            raise ShapeError(
                f"Network.step: expected a state tuple of {len(self.layers)} layer states "
                f"(from net.init_state), got {len(state)}"
            )
        new_state = []
        for layer, s in zip(self.layers, state):
            x, s = layer(x, s)
            new_state.append(s)
        return x, tuple(new_state)

    def check_sequence(self, xs: Tensor, name: str = "xs") -> Tensor:
        """Validate a (T, B, n_in) input sequence: dtype, device, shape and finiteness."""
        return check_tensor(
            xs,
            name,
            shape=(None, None, self.n_in),
            dtype=self.dtype,
            device=self.device,
            finite=True,
        )

    def forward(self, xs: Tensor, state: Sequence[Any] | None = None) -> Tensor:
        """Unroll over a sequence with plain autograd: xs (T, B, n_in) -> ys (T, B, n_out)."""
        return self.unroll(xs, state)[0]

    @overload
    def unroll(
        self, xs: Tensor, state: Sequence[Any] | None = None, *, per_layer: Literal[False] = ...
    ) -> tuple[Tensor, tuple[Any, ...]]: ...

    @overload
    def unroll(
        self, xs: Tensor, state: Sequence[Any] | None = None, *, per_layer: Literal[True]
    ) -> tuple[tuple[Tensor, ...], tuple[Any, ...]]: ...

    def unroll(
        self, xs: Tensor, state: Sequence[Any] | None = None, *, per_layer: bool = False
    ) -> tuple[Tensor | tuple[Tensor, ...], tuple[Any, ...]]:
        """Run a whole sequence with plain autograd (the one unroll of the library).

        Args:
            xs: (T, B, n_in) inputs, checked (dtype, device, shape, finiteness).
            state: the state to start from (default: the resting state).
            per_layer: return every layer's outputs, not only the network's.

        Returns:
            (ys, final state): ys is (T, B, n_out), or with ``per_layer`` a tuple of one
            (T, B, n_l) tensor per layer, bottom first.
        """
        self.check_sequence(xs)
        state = tuple(self.init_state(xs.shape[1]) if state is None else state)
        outs: list[list[Tensor]] = [[] for _ in self.layers]
        for x in xs:
            new = []
            for i, (layer, s) in enumerate(zip(self.layers, state)):
                x, s = layer(x, s)
                outs[i].append(x)
                new.append(s)
            state = tuple(new)
        if per_layer:
            return tuple(torch.stack(o) for o in outs), state
        return torch.stack(outs[-1]), state
