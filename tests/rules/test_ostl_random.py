"""OSTL rnd: fixed random matrices replace the transposed weights in the sweep across layers."""

from __future__ import annotations

import pytest
import torch

import ostl
from ostl.rules import OSTL

from .oracles import (
    assert_close,
    assert_fires,
    layer_names,
    local_objective_grads,
    loss_signals,
    mse,
    net_for,
    sequence,
)


@pytest.mark.parametrize("cell", ["snu", "lif", "lstm", "rf"])
def test_hidden_signal_is_the_error_through_the_fixed_matrix(cell: str) -> None:
    """[Layer, Readout]: layer 0 learns from ∂E_t/∂ŷ_t · R, R fixed random of W_out's shape."""
    net = net_for(cell, [3, 5], recurrent=False)
    xs, ts = sequence(12, 3, 3)
    assert_fires(net, xs, cell)
    rule = OSTL(feedback="random", seed=7)
    g = ostl.gradients(net, rule, xs, ts, mse)
    R = rule.bind(net).feedback[1]
    assert R is not None and R.shape == net.layers[1].W.shape
    signals = [None if L is None else L @ R for L in loss_signals(net, xs, list(ts), mse)]
    ref = local_objective_grads(net, 0, xs, signals)
    for name in layer_names(net, 0):
        assert_close(g[name], ref[name], 1e-10, name)
    exact = ostl.gradients(net, OSTL(), xs, ts, mse)
    for name in layer_names(net, 1):
        assert_close(g[name], exact[name], 1e-13, name)
    assert float((g["layers.0.W"] - exact["layers.0.W"]).norm()) > 1e-3


def test_random_matrices_are_fixed_by_the_seed_and_ignore_the_weights() -> None:
    net = net_for("lif", [3, 5, 4], recurrent=True)
    a = OSTL(feedback="random").bind(net).feedback
    assert a[0] is None and all(f is not None for f in a[1:])
    assert [tuple(f.shape) for f in a[1:] if f is not None] == [(4, 5), (2, 4)]
    b = OSTL(feedback="random").bind(net).feedback
    c = OSTL(feedback="random", seed=1).bind(net).feedback
    assert all(torch.equal(x, y) for x, y in zip(a[1:], b[1:]))  # type: ignore[arg-type]
    assert not torch.equal(a[1], c[1])  # type: ignore[arg-type]
    with torch.no_grad():  # the matrices are drawn from the seed, not from the weights
        net.layers[1].W.mul_(-2.0)
        net.layers[2].W.mul_(3.0)
    d = OSTL(feedback="random").bind(net).feedback
    assert all(torch.equal(x, y) for x, y in zip(a[1:], d[1:]))  # type: ignore[arg-type]
