"""Small networks and inputs shared by the tests (float64, spiking cells made to spike)."""

from __future__ import annotations

import torch
from torch import Tensor

import ostl

DT = torch.float64
#: Every registered cell: adding a cell to the registry puts it through every test here.
CELL_NAMES = list(ostl.CELLS)
SPIKING = {"snu", "lif", "alif", "rf"}
#: Per-neuron parameters trained in the equivalence tests, so their traces are checked too.
TRAINABLE = {
    "snu": {"trainable": ("b", "decay")},
    "ssnu": {"trainable": ("b", "decay")},
    "lif": {"trainable": ("threshold", "decay")},
    "alif": {"trainable": ("threshold", "beta", "adaptation_decay")},
    "rf": {"trainable": ("decay", "frequency", "threshold")},
}
#: Input-weight gain per cell, so that spiking cells fire a fair fraction of the time.
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
