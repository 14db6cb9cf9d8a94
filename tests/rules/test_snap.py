"""SnAp-1: exact for a diagonal H (where diagonal OSTL is not), and equal to a brute-force
SnAp-1 (the RTRL influence matrix masked to one-step reach) for a dense H."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import ostl
from ostl.rules import OSTL, SnAp

from .oracles import ALL_CELLS, assert_close, assert_fires, layer_names, mse, net_for, sequence

TOL = 1e-10


def _diagonal_h(net: ostl.Network) -> None:
    """Zero every off-diagonal entry of every gate block of H: each neuron sees its own past."""
    with torch.no_grad():
        for layer in net.typed_layers:
            if isinstance(layer, ostl.Layer) and layer.H is not None:
                G, N = layer.n_gates, layer.n_out
                layer.H.view(G, N, N).mul_(torch.eye(N, dtype=layer.H.dtype))


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_snap1_is_exact_for_a_diagonal_h_and_diagonal_ostl_is_not(cell: str) -> None:
    net = net_for(cell, [3, 5], recurrent=True)
    _diagonal_h(net)
    xs, ts = sequence(15, 3, 3)
    assert_fires(net, xs, cell)
    rep = ostl.compare_to_bptt(net, SnAp(), xs, ts, mse)
    for row in rep.rows:
        assert row.reference_norm > 0 and row.relative_error <= TOL, rep.table()
    # the H_pp self term matters: without it (diagonal OSTL) the gradient is off
    diag = ostl.compare_to_bptt(net, OSTL(recurrence="diagonal"), xs, ts, mse)
    assert diag["layers.0.W"].relative_error > 1e-4, diag.table()


@pytest.mark.parametrize("cell", ["snu", "lif", "rnn", "lstm"])
def test_snap1_without_h_equals_diagonal_ostl(cell: str) -> None:
    net = net_for(cell, [3, 5, 4], recurrent=False)
    xs, ts = sequence(10, 2, 3)
    g = ostl.gradients(net, SnAp(), xs, ts, mse)
    ref = ostl.gradients(net, OSTL(), xs, ts, mse)
    for name in ref:
        assert_close(g[name], ref[name], 1e-13, name)


def _brute_force_snap1(net: ostl.Network, xs: Tensor, ts: Tensor) -> dict[str, Tensor]:
    """SnAp-1 by definition (Menick et al. 2021), one sample at a time, for [Layer, Readout]:
    M_t = mask ⊙ (∂S_t/∂θ + (∂S_t/∂S_{t-1}) M_{t-1}), the full Jacobians from torch.func and
    mask[s, θ] = 1 iff parameter θ belongs to the neuron that owns state entry s."""
    layer, readout = net.typed_layers
    assert isinstance(layer, ostl.Layer)
    names = [n for n, _ in layer.named_parameters()]
    params = dict(layer.named_parameters())
    N, k = layer.n_out, len(layer.cell.state_names())
    o = layer.cell.output_index()
    sizes = [params[n].numel() for n in names]
    owner = torch.cat(
        [
            torch.arange(params[n].shape[0]).repeat_interleave(params[n][0].numel()) % N
            if params[n].dim() == 2
            else torch.arange(params[n].numel()) % N
            for n in names
        ]
    )
    mask = (torch.arange(k * N)[:, None] % N == owner[None, :]).to(xs.dtype)

    def step(theta: Tensor, S: Tensor, x: Tensor) -> Tensor:
        p = {n: c.view_as(params[n]) for n, c in zip(names, theta.split(sizes))}
        state = layer.cell.State(*S.split(N))
        _, new = torch.func.functional_call(layer, p, (x, state))
        return torch.cat(tuple(new))

    theta = torch.cat([params[n].detach().flatten() for n in names])
    B = xs.shape[1]
    S = torch.zeros(B, k * N, dtype=xs.dtype)
    M = torch.zeros(B, k * N, theta.numel(), dtype=xs.dtype)
    g = torch.zeros_like(theta)
    for x, t in zip(xs, ts):
        for b in range(B):
            D = torch.func.jacrev(step, argnums=1)(theta, S[b], x[b])
            immediate = torch.func.jacrev(step, argnums=0)(theta, S[b], x[b])
            M[b] = mask * (immediate + D @ M[b])
        S = torch.stack([step(theta, S[b], x[b]) for b in range(B)]).detach()
        y = readout(S[:, o * N : (o + 1) * N])[0].detach()
        L = torch.func.grad(lambda y, t=t: mse(y, t))(y) @ readout.W.detach()  # (B, N)
        g += torch.einsum("bn,bnp->p", L, M[:, o * N : (o + 1) * N])
    return {f"layers.0.{n}": c.view_as(params[n]) for n, c in zip(names, g.split(sizes))}


@pytest.mark.parametrize("cell", ["lif", "alif", "rnn", "lstm", "gru"])
def test_snap1_with_dense_h_equals_the_masked_influence_matrix(cell: str) -> None:
    net = net_for(cell, [3, 4], recurrent=True)
    xs, ts = sequence(8, 2, 3)
    assert_fires(net, xs, cell)
    g = ostl.gradients(net, SnAp(), xs, ts, mse)
    ref = _brute_force_snap1(net, xs, ts)
    for name in layer_names(net, 0):
        assert_close(g[name], ref[name], TOL, name)
    # a dense H makes SnAp-1 an approximation, different from diagonal OSTL too
    rep = ostl.compare_to_bptt(net, SnAp(), xs, ts, mse)
    assert rep["layers.0.W"].relative_error > 1e-4, rep.table()
    diag = ostl.gradients(net, OSTL(), xs, ts, mse)["layers.0.W"]
    assert float((diag - g["layers.0.W"]).norm()) > 1e-6


def test_snap_options() -> None:
    net = net_for("rnn", [3, 5, 4], recurrent=True)
    xs, ts = sequence(6, 2, 3)
    g = ostl.gradients(net, SnAp(feedback="random", seed=1), xs, ts, mse)
    ref = ostl.gradients(net, SnAp(), xs, ts, mse)
    assert_close(g["layers.2.W"], ref["layers.2.W"], 1e-13, "readout")
    assert float((g["layers.0.W"] - ref["layers.0.W"]).norm()) > 1e-6
    with pytest.raises(ValueError, match="feedback"):
        SnAp(feedback="symmetric")
