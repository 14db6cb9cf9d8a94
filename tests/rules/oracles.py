"""Autograd oracles and networks shared by the tests of the rule family (float64).

The *local-objective oracle*: for a learning signal S_t^l (B, n_l) that does not depend on the
weights, a rule that accumulates Σ_t S_t^l · dy_t^l/dθ^l computes exactly the autograd gradient
of Σ_t ⟨S_t^l, y_t^l⟩ w.r.t. θ^l, whenever layer l's trace is exact (no H, or an exact trace):
y^l depends on θ^l through layer l alone. It checks any signal (target projection, random
feedback, error projection), its sign and its timing, against plain BPTT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

import ostl
from ostl.rules import LossFn

from ..helpers import DT, TRAINABLE, make_net, mse, sequence
from ..registry import SPIKING

#: Every registered cell, including cells added after tests/helpers.py was written.
ALL_CELLS = list(ostl.CELLS)
#: Per-neuron parameters trained in these tests (so their traces are checked too).
TRAIN = {**TRAINABLE, "rf": {"trainable": ("decay", "frequency", "threshold")}}

__all__ = [
    "ALL_CELLS",
    "SPIKING",
    "net_for",
    "DT",
    "mse",
    "sequence",
    "layer_outputs",
    "loss_signals",
    "local_objective_grads",
    "layer_names",
    "firing_rates",
    "assert_fires",
    "assert_close",
]


def net_for(
    cell: str, sizes: list[int], recurrent: bool, n_out: int = 2, seed: int = 0, **kw: object
) -> ostl.Network:
    """tests/helpers.make_net, with trained φ for every cell and the RF's input gain raised."""
    extra = {} if cell in TRAINABLE else TRAIN.get(cell, {})  # make_net adds TRAINABLE's
    net = make_net(cell, sizes, recurrent, n_out=n_out, seed=seed, **{**extra, **kw})
    if cell == "rf":  # spike inputs to a deeper RF layer are sparse: more gain so it fires
        with torch.no_grad():
            for layer in net.typed_layers[1:-1]:
                layer.W.mul_(2.0)
    return net


def layer_outputs(net: ostl.Network, xs: Tensor) -> list[list[Tensor]]:
    """Every layer's output at every step, with autograd (the BPTT unroll)."""
    state = net.init_state(xs.shape[1])
    outs: list[list[Tensor]] = [[] for _ in net.layers]
    for x in xs:
        new = []
        for i, (layer, s) in enumerate(zip(net.layers, state)):
            x, s = layer(x, s)
            outs[i].append(x)
            new.append(s)
        state = tuple(new)
    return outs


def loss_signals(
    net: ostl.Network, xs: Tensor, targets: Sequence[Tensor | None], loss_fn: LossFn
) -> list[Tensor | None]:
    """∂E_t/∂ŷ_t (detached) at every step, None where the target is None."""
    with torch.no_grad():
        ys = net(xs)
    out = []
    for y, t in zip(ys, targets):
        out.append(None if t is None else torch.func.grad(lambda y, t=t: loss_fn(y, t))(y))
    return out


def local_objective_grads(
    net: ostl.Network, layer: int, xs: Tensor, signals: Sequence[Tensor | None]
) -> dict[str, Tensor]:
    """Autograd gradient of Σ_t ⟨S_t, y_t^layer⟩ w.r.t. the layer's parameters."""
    outs = layer_outputs(net, xs)[layer]
    total = sum(((S * y).sum() for S, y in zip(signals, outs) if S is not None), torch.zeros(()))
    names = layer_names(net, layer)
    params = dict(net.named_parameters())
    gs = torch.autograd.grad(total, [params[n] for n in names])
    return dict(zip(names, gs))


def layer_names(net: ostl.Network, layer: int) -> list[str]:
    return [n for n, p in net.named_parameters() if n.startswith(f"layers.{layer}.")]


def firing_rates(net: ostl.Network, xs: Tensor) -> list[float]:
    """Mean output of every stateful layer over the sequence (spike rate for spiking cells)."""
    with torch.no_grad():
        outs = layer_outputs(net, xs)
    return [float(torch.stack(o).mean()) for o, layer in zip(outs, net.layers) if layer.stateful]


def assert_fires(net: ostl.Network, xs: Tensor, cell: str) -> None:
    """Spiking layers fire, and not all the time: gradients through them are not vacuous."""
    if cell in SPIKING:
        for i, r in enumerate(firing_rates(net, xs)):
            assert 0.02 < r < 0.9, f"layer {i} of {cell} fires at rate {r:.3f}"


def assert_close(a: Tensor, b: Tensor, tol: float = 1e-10, name: str = "") -> None:
    """Relative agreement ‖a - b‖ ≤ tol ‖b‖, with b non-zero (a test that cannot fail is void)."""
    nb = float(b.norm())
    assert nb > 0, f"{name}: zero reference (vacuous comparison)"
    err = float((a - b).norm()) / nb
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e}"
