"""Small networks and inputs shared by the tests (float64, spiking cells made to spike)."""

from __future__ import annotations

import torch
from torch import Tensor

import ostl

from .registry import CELL_NAMES, SPIKING, neuron_params

__all__ = [
    "DT",
    "CELL_NAMES",
    "SPIKING",
    "TRAINABLE",
    "GAIN",
    "FIXED",
    "mse",
    "make_net",
    "sequence",
    "output_activity",
    "assert_spiking",
]

DT = torch.float64
#: Test setting, optional per cell (a new cell needs no entry): per-neuron parameters left
#: *fixed* in the equivalence tests. ALIF's membrane decay is a choice kept from when they were
#: written, not a limitation (they pass with it trained too; tests/engine/test_jacobians.py
#: trains all four): kept so that the oracle tests check exactly what they always have.
FIXED = {"alif": ("decay",)}
#: Per-neuron parameters trained in the equivalence tests, so their traces are checked too:
#: every per-neuron parameter of every registered cell (from the registry), less FIXED's.
TRAINABLE = {
    name: {"trainable": tuple(p for p in neuron_params(name) if p not in FIXED.get(name, ()))}
    for name in CELL_NAMES
    if neuron_params(name)
}
#: Test setting, optional per cell: the input-weight gain (default 2.5) that makes a spiking
#: cell fire a fair fraction of the time (assert_spiking fails, naming the cell, if it does not).
GAIN = {"rf": 6.0}


def mse(y: Tensor, target: Tensor) -> Tensor:
    return ((y - target) ** 2).mean()


def make_net(
    cell: str, sizes: list[int], recurrent: bool, n_out: int = 2, seed: int = 0, **kw: object
) -> ostl.Network:
    """Stateful layers of the given sizes (sizes[0] is the input) + a linear Readout, float64.

    Input weights are scaled up so that spiking cells fire a fair fraction of the time.
    """
    torch.manual_seed(seed)
    opts = {**TRAINABLE.get(cell, {}), **kw}
    layers: list[torch.nn.Module] = [
        ostl.Layer(a, b, cell, recurrent=recurrent, **opts) for a, b in zip(sizes, sizes[1:])
    ]
    layers.append(ostl.Readout(sizes[-1], n_out))
    net = ostl.Network(layers).to(DT)
    with torch.no_grad():
        for layer in net.layers[:-1]:
            layer.W.mul_(GAIN.get(cell, 2.5))
            if layer.H is not None:
                layer.H.mul_(1.5)
    return net


def sequence(T: int, B: int, n_in: int, n_out: int = 2, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(T, B, n_in, generator=g, dtype=DT) * 2
    ts = torch.randn(T, B, n_out, generator=g, dtype=DT)
    return xs, ts


def output_activity(net: ostl.Network, xs: Tensor) -> list[Tensor]:
    """Every stateful layer's outputs over the sequence, (T, B, N) each."""
    state = net.init_state(xs.shape[1])
    outs: list[list[Tensor]] = [[] for _ in net.layers]
    with torch.no_grad():
        for x in xs:
            for i, layer in enumerate(net.layers):
                x, s = layer(x, state[i])
                state = state[:i] + (s,) + state[i + 1 :]
                outs[i].append(x)
    return [torch.stack(o) for o, layer in zip(outs, net.layers) if layer.stateful]


def assert_spiking(net: ostl.Network, xs: Tensor, cell: str) -> None:
    """For spiking cells: every stateful layer spikes, and not all the time (tests not vacuous)."""
    if cell not in SPIKING:
        return
    for i, y in enumerate(output_activity(net, xs)):
        rate = float(y.mean())
        assert 0.02 < rate < 0.9, f"layer {i} of {cell} fires at rate {rate:.3f}"
