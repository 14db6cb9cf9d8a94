"""ostl layers from PyTorch modules, with their weights: ``nn.RNN``, ``nn.GRU``, ``nn.LSTM``,
their one-step ``nn.RNNCell`` / ``nn.GRUCell`` / ``nn.LSTMCell``, and ``nn.Linear``.

::

    lstm, linear = nn.LSTM(10, 32), nn.Linear(32, 3)        # trained in PyTorch, say
    net = ostl.Network.from_torch(lstm, linear)            # the same function, as ostl layers
    layer = ostl.Layer.from_torch(nn.GRU(10, 32, bias=False))
    head = ostl.Readout.from_torch(linear)

Mapping (exact: the converted network computes the module's outputs from a zero initial state,
to rounding):

- ``nn.LSTM`` → an ``"lstm"`` Layer with recurrent weights: same gate order (i, f, g, o);
  ``W = weight_ih``, ``H = weight_hh``, ``b = bias_ih + bias_hh``.
- ``nn.GRU`` → a ``"gru"`` Layer with recurrent weights: same gate order (r, z, n);
  ``b = bias_ih + bias_hh`` for r and z, ``b = bias_in`` for the candidate n. PyTorch's
  candidate is ``tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``; ostl's GRU has no bias inside
  ``r ⊙ (·)`` (Cho et al.'s form), so a module whose ``b_hn`` (the last third of
  ``bias_hh_l*``) is not zero is refused: set it to zero before training in PyTorch, or use
  ``bias=False``.
- ``nn.RNN(nonlinearity="tanh")`` → an ``"rnn"`` Layer with recurrent weights,
  ``b = bias_ih + bias_hh``. ostl has no ReLU recurrent cell: ``nonlinearity="relu"`` is refused.
- ``nn.Linear`` → a :class:`~ostl.Readout` (``W = weight``, ``b = bias``).

Options of the recurrent modules:

- ``num_layers > 1``: one Layer per layer, bottom first (:func:`layers_from_torch`,
  ``Network.from_torch``); ``Layer.from_torch`` takes single-layer modules only.
- ``batch_first=True`` is accepted: it only changes how PyTorch is called. ostl is time-major:
  feed the network ``(T, B, N)`` sequences (``xs.transpose(0, 1)`` of a batch-first tensor).
- ``dropout > 0`` with several layers: PyTorch drops outputs between layers while training;
  ostl layers have no dropout, so this is refused unless ``ignore_dropout=True``, which
  converts the module's evaluation-mode function (the same weights, no dropout).
- ``bidirectional=True`` is refused (an online rule runs forward in time only), and so is
  ``proj_size > 0`` (ostl's LSTM has no output projection).

The weights are copied, with the module's dtype and device: training the ostl network leaves
the PyTorch module untouched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import LayerTypeError, OptionError, UnsupportedError
from ..layer import Layer, Network, Readout

__all__ = ["layer_from_torch", "layers_from_torch", "readout_from_torch", "network_from_torch"]

#: The recurrent modules converted, and their ostl cell.
_CELLS: dict[type[nn.Module], str] = {
    nn.LSTM: "lstm",
    nn.GRU: "gru",
    nn.RNN: "rnn",
    nn.LSTMCell: "lstm",
    nn.GRUCell: "gru",
    nn.RNNCell: "rnn",
}


def _cell_of(module: nn.Module) -> str:
    """The ostl cell of a recurrent module; a clear error for anything else."""
    for cls, cell in _CELLS.items():
        if isinstance(module, cls):
            return cell
    if isinstance(module, nn.Linear):
        raise LayerTypeError(
            "nn.Linear is memoryless: it converts to an ostl.Readout (Readout.from_torch), "
            "not to a stateful Layer"
        )
    raise LayerTypeError(
        f"cannot convert a {type(module).__name__}: expected nn.RNN, nn.GRU, nn.LSTM (or their "
        "nn.*Cell one-step forms) for a Layer, nn.Linear for a Readout"
    )


def _check_options(module: nn.Module, ignore_dropout: bool) -> None:
    """Refuse the options that have no exact ostl form (see the module docstring)."""
    name = type(module).__name__
    if getattr(module, "nonlinearity", "tanh") != "tanh":
        raise UnsupportedError(
            f"{name}(nonlinearity={module.nonlinearity!r}): ostl's recurrent cell 'rnn' is "
            "tanh only; use nonlinearity='tanh'"
        )
    if getattr(module, "bidirectional", False):
        raise UnsupportedError(
            f"{name}(bidirectional=True): an online learning rule runs forward in time only; "
            "convert a unidirectional module"
        )
    if getattr(module, "proj_size", 0) > 0:
        raise UnsupportedError(
            f"{name}(proj_size={module.proj_size}): ostl's LSTM has no output projection; "
            "use proj_size=0"
        )
    dropout = getattr(module, "dropout", 0.0)
    if dropout > 0 and getattr(module, "num_layers", 1) > 1 and not ignore_dropout:
        raise UnsupportedError(
            f"{name}(dropout={dropout}): ostl layers have no dropout between layers; pass "
            "ignore_dropout=True to convert the module's evaluation-mode function (the same "
            "weights, no dropout)"
        )


def _weights(module: nn.Module, k: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(W_ih, W_hh, b_ih, b_hh) of layer ``k`` (no suffix for the nn.*Cell modules)."""
    suffix = f"_l{k}" if isinstance(module, nn.RNNBase) else ""
    w_ih, w_hh = getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix)
    if getattr(module, "bias", False):
        return w_ih, w_hh, getattr(module, "bias_ih" + suffix), getattr(module, "bias_hh" + suffix)
    return w_ih, w_hh, None, None


def _bias(cell: str, b_ih: Tensor, b_hh: Tensor, where: str) -> Tensor:
    """ostl's one bias per gate from PyTorch's two (exact, or an error for GRU's b_hn)."""
    if cell != "gru":
        return b_ih + b_hh
    n = b_ih.shape[0] // 3
    b_hn = b_hh[2 * n :]
    if bool((b_hn != 0).any()):
        raise UnsupportedError(
            f"{where}: the GRU's recurrent candidate bias b_hn (bias_hh[{2 * n}:]) is not zero. "
            "PyTorch computes n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); ostl's GRU has no "
            "bias inside r * (...), so it cannot be converted exactly. Zero it before training "
            "(with torch.no_grad(): gru.bias_hh_l0[2 * hidden_size:] = 0, and keep it out of "
            "the optimizer) or use bias=False"
        )
    return torch.cat([b_ih[: 2 * n] + b_hh[: 2 * n], b_ih[2 * n :]])


def _layer(module: nn.Module, cell: str, k: int) -> Layer:
    """Layer ``k`` of ``module`` as an ostl Layer with recurrent weights, weights copied."""
    w_ih, w_hh, b_ih, b_hh = _weights(module, k)
    n_out = w_hh.shape[1]
    layer = Layer(w_ih.shape[1], n_out, cell, recurrent=True, bias=b_ih is not None)
    layer = layer.to(device=w_ih.device, dtype=w_ih.dtype)
    with torch.no_grad():
        layer.W.copy_(w_ih)
        assert layer.H is not None
        layer.H.copy_(w_hh)
        if layer.b is not None and b_ih is not None and b_hh is not None:
            layer.b.copy_(_bias(cell, b_ih, b_hh, f"{type(module).__name__} layer {k}"))
    return layer


def layers_from_torch(module: nn.Module, *, ignore_dropout: bool = False) -> list[Layer]:
    """One ostl Layer per layer of a PyTorch recurrent module, bottom first, weights copied.

    Args:
        module: an ``nn.RNN`` (tanh), ``nn.GRU``, ``nn.LSTM`` or their ``nn.*Cell`` forms.
        ignore_dropout: convert a multi-layer module with ``dropout > 0`` as in evaluation
            mode (without dropout) instead of refusing it.

    Raises:
        LayerTypeError: another module.
        UnsupportedError: an option without an exact ostl form (see the module docstring).
    """
    cell = _cell_of(module)
    _check_options(module, ignore_dropout)
    return [_layer(module, cell, k) for k in range(getattr(module, "num_layers", 1))]


def layer_from_torch(module: nn.Module, *, ignore_dropout: bool = False) -> Layer:
    """A single-layer PyTorch recurrent module as one ostl Layer (see :func:`layers_from_torch`).

    Raises:
        OptionError: a module of several layers (use :func:`layers_from_torch` or
            ``Network.from_torch``).
    """
    layers = layers_from_torch(module, ignore_dropout=ignore_dropout)
    if len(layers) != 1:
        raise OptionError(
            f"{type(module).__name__}(num_layers={len(layers)}) is {len(layers)} layers: use "
            "ostl.Network.from_torch(module, ...) or ostl.interop.torch_modules."
            "layers_from_torch(module) for the list of Layers"
        )
    return layers[0]


def readout_from_torch(linear: nn.Module) -> Readout:
    """An ``nn.Linear`` as an ostl :class:`~ostl.Readout`, weights copied.

    Raises:
        LayerTypeError: not an ``nn.Linear`` (or one not yet initialised, ``nn.LazyLinear``).
    """
    if not isinstance(linear, nn.Linear):
        raise LayerTypeError(
            f"Readout.from_torch expects an nn.Linear, got {type(linear).__name__}"
            + (" (a recurrent module converts with Layer.from_torch)" if _is_rnn(linear) else "")
        )
    if isinstance(linear.weight, nn.parameter.UninitializedParameter):
        raise LayerTypeError("Readout.from_torch: the nn.LazyLinear is not initialised yet")
    n_out, n_in = linear.weight.shape
    readout = Readout(n_in, n_out, bias=linear.bias is not None)
    readout = readout.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        readout.W.copy_(linear.weight)
        if readout.b is not None:
            readout.b.copy_(linear.bias)
    return readout


def _is_rnn(module: nn.Module) -> bool:
    return isinstance(module, tuple(_CELLS))


def network_from_torch(*modules: nn.Module, ignore_dropout: bool = False) -> Network:
    """A Network of PyTorch modules in order, e.g. ``network_from_torch(lstm, linear)``.

    Recurrent modules become their Layers (several for ``num_layers > 1``), ``nn.Linear`` a
    Readout; ostl Layers and Readouts are taken as they are. Sizes must chain.
    """
    if len(modules) == 1 and isinstance(modules[0], list | tuple | nn.Sequential | nn.ModuleList):
        modules = tuple(modules[0])  # a list (or nn.Sequential) of the modules works too
    layers: list[nn.Module] = []
    for m in modules:
        if isinstance(m, Layer | Readout):
            layers.append(m)
        elif isinstance(m, nn.Linear):
            layers.append(readout_from_torch(m))
        else:
            layers.extend(layers_from_torch(m, ignore_dropout=ignore_dropout))
    return Network(layers)
