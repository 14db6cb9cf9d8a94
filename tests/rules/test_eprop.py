"""e-prop: the paper's traces and learning signals, and where it coincides with OSTL and BPTT."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import ostl
from ostl.rules import BPTT, OSTL, EProp

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

TOL = 1e-10
#: The e-prop paper's neurons: subtractive reset, reset not differentiated, no trained φ.
PAPER = {
    "lif": {"reset": "subtract", "detach_reset": True, "trainable": ()},
    "alif": {"detach_reset": True, "trainable": ()},
}


def _eprop_net(cell: str, recurrent: bool, **kw: object) -> ostl.Network:
    return net_for(cell, [3, 6], recurrent=recurrent, **{**PAPER[cell], **kw})


@pytest.mark.parametrize("cell", list(PAPER))
@pytest.mark.parametrize("recurrent", [True, False])
def test_symmetric_eprop_equals_ostl_diagonal(cell: str, recurrent: bool) -> None:
    """One recurrent LIF/ALIF layer (reset not differentiated) + memoryless Readout."""
    net = _eprop_net(cell, recurrent)
    xs, ts = sequence(15, 3, 3)
    assert_fires(net, xs, cell)
    g = ostl.gradients(net, EProp(), xs, ts, mse)
    ref = ostl.gradients(net, OSTL(recurrence="diagonal"), xs, ts, mse)
    for name in ref:
        assert_close(g[name], ref[name], TOL, name)


def _paper_eprop(net: ostl.Network, xs: Tensor, ts: Tensor) -> dict[str, Tensor]:
    """Bellec et al. 2020, Methods, written out for LIF and ALIF (symmetric feedback).

    ε_v^t = α ε_v^{t-1} + pre^t              (pre: x_i^t for W, z_i^{t-1} for H)
    ε_a^t = ψ^{t-1} ε_v^{t-1} + (ρ - ψ^{t-1} β) ε_a^{t-1}     (ALIF only)
    e^t = ψ^t (ε_v^t - β ε_a^t)              L_j^t = Σ_k W_out[k, j] ∂E_t/∂ŷ_k^t
    """
    layer, readout = net.layers
    cell = layer.cell
    p = cell.neuron_params()
    alif = isinstance(cell, ostl.cells.ALIF)
    alpha, theta = p["decay"], p["threshold"]
    rho = p["adaptation_decay"] if alif else torch.zeros_like(alpha)
    beta = p["beta"] if alif else torch.zeros_like(alpha)
    T, B, n_in = xs.shape
    N = layer.n_out
    v = torch.zeros(B, N, dtype=xs.dtype)
    a = torch.zeros_like(v)
    z = torch.zeros_like(v)
    psi = torch.zeros_like(v)
    eps = {n: (torch.zeros(B, N, m, dtype=xs.dtype),) * 2 for n, m in (("W", n_in), ("H", N))}
    grads = {n: torch.zeros_like(q) for n, q in net.named_parameters()}
    W, H = layer.W.detach(), None if layer.H is None else layer.H.detach()
    with torch.no_grad():
        for x, t in zip(xs, ts):
            pre = {"W": x, "H": z}
            cur = x @ W.T + (0 if H is None else z @ H.T)
            e = {}
            for n in eps:
                ev, ea = eps[n]
                ea = psi[..., None] * ev + (rho - psi * beta)[..., None] * ea
                ev = alpha[..., None] * ev + pre[n][:, None, :]
                eps[n] = (ev, ea)
                e[n] = ev - beta[..., None] * ea
            a = rho * a + z
            v = alpha * v + cur - theta * z
            A = theta + beta * a
            psi = cell.surrogate.derivative(v - A)
            z = (v - A > 0).to(v.dtype)
            y = readout(z)[0]
            dE = torch.func.grad(lambda y, t=t: mse(y, t))(y)
            L = dE @ readout.W.detach()  # the learning signal through the readout weights
            for n in eps:
                if n == "H" and H is None:
                    continue
                grads[f"layers.0.{n}"] += torch.einsum("bj,bj,bji->ji", L, psi, e[n])
            grads["layers.1.W"] += dE.T @ z
            grads["layers.1.b"] += dE.sum(0)
    return grads


@pytest.mark.parametrize("cell", list(PAPER))
def test_eprop_equals_the_papers_formulas(cell: str) -> None:
    """An independent implementation of the paper's equations (incl. ALIF's ε_a)."""
    net = _eprop_net(cell, recurrent=True)
    xs, ts = sequence(15, 3, 3)
    assert_fires(net, xs, cell)
    g = ostl.gradients(net, EProp(), xs, ts, mse)
    ref = _paper_eprop(net, xs, ts)
    for name in g:
        assert_close(g[name], ref[name], TOL, name)


@pytest.mark.parametrize("cell", list(PAPER))
def test_eprop_without_h_equals_bptt_and_the_reset_convention_matters(cell: str) -> None:
    net = _eprop_net(cell, recurrent=False)
    xs, ts = sequence(15, 3, 3)
    rep = ostl.compare_to_bptt(net, EProp(), xs, ts, mse)
    for row in rep.rows:
        assert row.reference_norm > 0 and row.relative_error <= TOL, rep.table()
    # Negative control: the reset's derivative is not negligible here, so the equality above
    # needs the same convention on both sides (BPTT of the network whose reset is detached).
    full = _eprop_net(cell, recurrent=False, detach_reset=False)
    diff = ostl.gradients(full, BPTT(), xs, ts, mse)["layers.0.W"]
    assert float((diff - ostl.gradients(net, BPTT(), xs, ts, mse)["layers.0.W"]).norm()) > 1e-3


def test_random_eprop_sends_the_readout_error_through_a_fixed_matrix() -> None:
    net = _eprop_net("lif", recurrent=False)
    xs, ts = sequence(15, 3, 3)
    rule = EProp(feedback="random", seed=3)
    g = ostl.gradients(net, rule, xs, ts, mse)
    R = rule.bind(net).feedback[1]
    assert R is not None and R.shape == net.layers[1].W.shape
    assert not torch.allclose(R, net.layers[1].W)
    assert torch.equal(R, EProp(feedback="random", seed=3).bind(net).feedback[1])
    assert not torch.equal(R, EProp(feedback="random", seed=4).bind(net).feedback[1])
    signals = [None if L is None else L @ R for L in loss_signals(net, xs, list(ts), mse)]
    ref = local_objective_grads(net, 0, xs, signals)
    for name in layer_names(net, 0):
        assert_close(g[name], ref[name], TOL, name)
    sym = ostl.gradients(net, EProp(), xs, ts, mse)
    for name in layer_names(net, 1):  # the readout learns from its true error either way
        assert_close(g[name], sym[name], 1e-13, name)
    assert float((g["layers.0.W"] - sym["layers.0.W"]).norm()) > 1e-3


def test_deep_eprop_is_the_ostl_sweep() -> None:
    """Documented generalisation: L_j^t = ∂E_t/∂z_j^t at step t, i.e. OSTL's sweep."""
    net = net_for("alif", [3, 5, 4], recurrent=True, detach_reset=True)
    xs, ts = sequence(10, 2, 3)
    for eprop, ostl_rule in (
        (EProp(), OSTL()),
        (EProp("random", seed=2), OSTL(feedback="random", seed=2)),
    ):
        g = ostl.gradients(net, eprop, xs, ts, mse)
        ref = ostl.gradients(net, ostl_rule, xs, ts, mse)
        for name in ref:
            assert_close(g[name], ref[name], 1e-13, name)


def test_eprop_refuses_a_network_without_readout_and_bad_options() -> None:
    net = ostl.Network([ostl.Layer(3, 4, "lif"), ostl.Layer(4, 2, "lif")]).double()
    with pytest.raises(ostl.UnsupportedError, match="Readout"):
        EProp().bind(net)
    with pytest.raises(ValueError, match="feedback"):
        EProp(feedback="weights")
