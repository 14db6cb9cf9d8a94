"""DFA with traces (the example rule of docs/extending.md): the error through fixed B_l."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import ostl
from ostl.rules import DFA, OSTL, OSTTP

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


@pytest.mark.parametrize("cell", ["alif", "gru", "rf"])
def test_hidden_gradients_are_the_projected_error(cell: str) -> None:
    net = net_for(cell, [3, 5, 4], recurrent=False)
    xs, ts = sequence(12, 3, 3)
    assert_fires(net, xs, cell)
    rule = DFA(seed=5)
    g = ostl.gradients(net, rule, xs, ts, mse)
    projections = rule.bind(net).projections
    errors = loss_signals(net, xs, list(ts), mse)
    for layer in (0, 1):
        B = projections[layer]
        assert B is not None
        ref = local_objective_grads(net, layer, xs, [e @ B.T for e in errors if e is not None])
        for name in layer_names(net, layer):
            assert_close(g[name], ref[name], 1e-10, name)
    exact = ostl.gradients(net, OSTL(), xs, ts, mse)
    for name in layer_names(net, 2):
        assert_close(g[name], exact[name], 1e-13, name)


def test_dfa_shares_osttps_projections_and_takes_any_target() -> None:
    net = net_for("lif", [3, 5, 4], recurrent=True, n_out=3)
    a, b = DFA(seed=2).bind(net).projections, OSTTP(seed=2).bind(net).projections
    assert all(torch.equal(x, y) for x, y in zip(a[:-1], b[:-1]))  # type: ignore[arg-type]
    xs, _ = sequence(6, 2, 3)
    labels = torch.randint(0, 3, (6, 2))

    def ce(y: Tensor, t: Tensor) -> Tensor:  # integer class targets: fine for DFA
        return torch.nn.functional.cross_entropy(y, t)

    g = ostl.gradients(net, DFA(), xs, labels, ce)
    assert all(torch.isfinite(v).all() and v.norm() > 0 for v in g.values())
    with pytest.raises(ostl.DTypeError):
        ostl.gradients(net, OSTTP(), xs, labels, ce)
