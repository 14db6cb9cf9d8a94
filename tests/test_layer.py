"""Network.unroll: the one unroll (evaluation, rasters, the BPTT oracle), checked against steps."""

from __future__ import annotations

import torch

from .helpers import make_net, sequence


def test_unroll_equals_stepping_and_gives_every_layer_and_the_final_state() -> None:
    net = make_net("lif", [3, 5, 4], recurrent=True)
    xs, _ = sequence(7, 2, 3)
    with torch.no_grad():
        state = net.init_state(2)
        want = [[] for _ in net.layers]
        for x in xs:
            new = []
            for i, (layer, s) in enumerate(zip(net.layers, state)):
                x, s = layer(x, s)
                want[i].append(x)
                new.append(s)
            state = tuple(new)
        per_layer, final = net.unroll(xs, per_layer=True)
        ys, _ = net.unroll(xs)
    assert len(per_layer) == 3 and per_layer[1].shape == (7, 2, 4)
    for got, w in zip(per_layer, want):
        assert torch.equal(got, torch.stack(w))
    assert torch.equal(ys, per_layer[-1]) and torch.equal(net(xs).detach(), ys)
    for s, f in zip(state, final):
        for a, b in zip(s, f):
            assert torch.equal(a, b)
    assert float(per_layer[0].sum()) > 0  # the spiking layers fire (the check is not vacuous)


def test_unroll_continues_from_a_given_state() -> None:
    net = make_net("rnn", [3, 5], recurrent=True)
    xs, _ = sequence(8, 2, 3)
    with torch.no_grad():
        whole, _ = net.unroll(xs)
        first, state = net.unroll(xs[:3])
        rest, _ = net.unroll(xs[3:], state)
    assert torch.equal(torch.cat([first, rest]), whole)
