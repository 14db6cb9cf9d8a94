"""Truncated BPTT runs online in the Learner: update every k steps, state carried, graph cut."""

from __future__ import annotations

import torch

import ostl
from ostl.rules import BPTT

from .oracles import mse, net_for, sequence


def _manual_tbptt(net: ostl.Network, xs: torch.Tensor, ts: torch.Tensor, k: int, lr: float):
    """Forward k steps from the carried, detached state; backward; SGD step; repeat."""
    params = list(net.parameters())
    state = net.init_state(xs.shape[1])
    for c in range(0, xs.shape[0], k):
        state = tuple(type(s)(*(v.detach() for v in s)) for s in state)
        loss = torch.zeros((), dtype=xs.dtype)
        for t in range(c, min(c + k, xs.shape[0])):
            y, state = net.step(xs[t], state)
            loss = loss + mse(y, ts[t])
        gs = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, gs):
                p -= lr * g


def test_tbptt_in_the_learner_updates_every_k_steps_with_the_state_carried() -> None:
    xs, ts = sequence(14, 2, 3)
    k, lr = 4, 0.05
    net = net_for("alif", [3, 5, 4], recurrent=True)
    learner = ostl.Learner(
        net,
        BPTT(truncation=k),
        loss_fn=mse,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr),
        update_every=k,
    )
    learner.reset(2)
    updates = []
    for x, t in zip(xs, ts):
        learner.step(x, t)
        updates.append(learner.updates)
    learner.end_sequence()  # the last, shorter chunk
    assert updates == [i // k for i in range(1, 15)] and learner.updates == 4
    ref = net_for("alif", [3, 5, 4], recurrent=True)
    _manual_tbptt(ref, xs, ts, k, lr)
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-10, atol=1e-12, msg=n)


def test_tbptt_cuts_the_graph_every_k_steps() -> None:
    net = net_for("lif", [3, 5], recurrent=True)
    xs, ts = sequence(9, 2, 3)
    runner = BPTT(truncation=3).bind(net)
    runner.reset(2)
    held = []
    for i, (x, t) in enumerate(zip(xs, ts)):
        runner.step(x, t, mse)
        attached = any(v.grad_fn is not None for s in runner.carry.state for v in s)
        assert attached == ((i + 1) % 3 != 0), i  # a graph inside a chunk, none at its end
        held.append(runner.carry.loss is None)
    assert held == [False, False, True] * 3


def test_tbptt_gradient_is_the_sum_of_chunk_gradients() -> None:
    """With weights fixed: Σ over chunks of BPTT from the carried state; k = T is BPTT."""
    net = net_for("lstm", [3, 5], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    full = ostl.gradients(net, BPTT(), xs, ts, mse)
    same = ostl.gradients(net, BPTT(truncation=10), xs, ts, mse)
    for n in full:
        torch.testing.assert_close(same[n], full[n], rtol=1e-12, atol=1e-14)
    g = ostl.gradients(net, BPTT(truncation=3), xs, ts, mse)
    params = dict(net.named_parameters())
    ref = {n: torch.zeros_like(p) for n, p in params.items()}
    state = net.init_state(2)
    for c in range(0, 10, 3):
        state = tuple(type(s)(*(v.detach() for v in s)) for s in state)
        loss = torch.zeros((), dtype=xs.dtype)
        for t in range(c, min(c + 3, 10)):
            y, state = net.step(xs[t], state)
            loss = loss + mse(y, ts[t])
        for n, gi in zip(params, torch.autograd.grad(loss, list(params.values()))):
            ref[n] += gi
    for n in g:
        torch.testing.assert_close(g[n], ref[n], rtol=1e-12, atol=1e-14)
    assert float((g["layers.0.W"] - full["layers.0.W"]).norm()) > 1e-4
