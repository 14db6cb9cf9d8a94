"""OSTTP: output layer as OSTL, hidden layers a fixed projection of the target, no locking."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import ostl
from ostl.rules import OSTL, OSTTP

from .oracles import (
    assert_close,
    assert_fires,
    layer_names,
    local_objective_grads,
    mse,
    net_for,
    sequence,
)

TOL = 1e-10


def _projected(runner_B: Tensor, targets: list[Tensor | None]) -> list[Tensor | None]:
    """The OSTTP hidden signal B y*_t / n_batch at every step (None without a target)."""
    return [None if t is None else t @ runner_B.T / t.shape[0] for t in targets]


def _sparse(ts: Tensor, every: int) -> list[Tensor | None]:
    """Targets at steps every-1, 2·every-1, ... only."""
    return [t if (i + 1) % every == 0 else None for i, t in enumerate(ts)]


@pytest.mark.parametrize("cell", ["lif", "alif", "lstm", "gru", "rf"])
@pytest.mark.parametrize(("recurrent", "recurrence"), [(False, "diagonal"), (True, "exact")])
@pytest.mark.parametrize("every", [1, 4])
def test_hidden_gradients_are_the_target_projection_through_exact_traces(
    cell: str, recurrent: bool, recurrence: str, every: int
) -> None:
    """θ^l's gradient = autograd of Σ_t ⟨B_l y*_t / B, y_t^l⟩: the signal, its sign (+B y*),
    its timing (zero at steps without a target, traces still running) and the traces."""
    net = net_for(cell, [3, 5, 4], recurrent=recurrent)
    xs, ts = sequence(12, 3, 3)
    assert_fires(net, xs, cell)
    targets = _sparse(ts, every)
    rule = OSTTP(recurrence=recurrence)
    g = ostl.gradients(net, rule, xs, targets, mse)
    projections = rule.bind(net).projections
    for layer in (0, 1):
        B = projections[layer]
        assert B is not None and B.shape == (net.layers[layer].n_out, 2)
        ref = local_objective_grads(net, layer, xs, _projected(B, targets))
        for name in layer_names(net, layer):
            assert_close(g[name], ref[name], TOL, name)


@pytest.mark.parametrize("cell", ["snu", "lif", "rnn", "lstm"])
@pytest.mark.parametrize("readout", [True, False])
def test_output_layer_gradients_equal_ostl(cell: str, readout: bool) -> None:
    """The output layer gets its true error: same gradients as OSTL (a Readout or a Layer)."""
    net = net_for(cell, [3, 5, 4], recurrent=True)
    if not readout:  # the top stateful layer is the output layer
        net = ostl.Network(list(net.layers)[:-1])
    xs, ts = sequence(10, 2, 3, n_out=net.n_out)
    g = ostl.gradients(net, OSTTP(), xs, ts, mse)
    ref = ostl.gradients(net, OSTL(), xs, ts, mse)
    top = len(net.layers) - 1
    for name in layer_names(net, top):
        assert_close(g[name], ref[name], 1e-12, name)
    assert float((g["layers.0.W"] - ref["layers.0.W"]).norm()) > 1e-6  # hidden layers differ


def test_readout_gradient_equals_bptt() -> None:
    net = net_for("lif", [3, 5, 4], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    rep = ostl.compare_to_bptt(net, OSTTP(), xs, ts, mse)
    assert rep["layers.2.W"].relative_error < 1e-12 and rep["layers.2.b"].relative_error < 1e-12
    assert rep["layers.0.W"].relative_error > 1e-3  # hidden layers: approximate


def test_hidden_gradients_ignore_the_readout_weights() -> None:
    """No weight transport: changing the weights above a hidden layer leaves its update alone."""
    net = net_for("lif", [3, 5, 4], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    before = ostl.gradients(net, OSTTP(), xs, ts, mse)
    with torch.no_grad():
        net.layers[2].W.mul_(-3.0).add_(0.5)
        net.layers[2].b.add_(1.0)
    after = ostl.gradients(net, OSTTP(), xs, ts, mse)
    for layer in (0, 1):
        for name in layer_names(net, layer):
            assert before[name].norm() > 0, name
            torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert not torch.allclose(after["layers.2.W"], before["layers.2.W"])  # the output did change
    # OSTL's hidden gradients do depend on the readout weights (the test can fail):
    with torch.no_grad():
        net.layers[2].W.mul_(2.0)
    o1 = ostl.gradients(net, OSTL(), xs, ts, mse)["layers.1.W"]
    with torch.no_grad():
        net.layers[2].W.mul_(-1.0)
    assert not torch.allclose(o1, ostl.gradients(net, OSTL(), xs, ts, mse)["layers.1.W"])


def test_hidden_gradients_ignore_the_loss_scale() -> None:
    """Target, not error: scaling the loss scales the output layer's gradient only."""
    net = net_for("alif", [3, 5, 4], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    g1 = ostl.gradients(net, OSTTP(), xs, ts, mse)
    g10 = ostl.gradients(net, OSTTP(), xs, ts, lambda y, t: 10 * mse(y, t))
    for name in layer_names(net, 0) + layer_names(net, 1):
        assert g1[name].norm() > 0, name
        torch.testing.assert_close(g10[name], g1[name], rtol=0, atol=0)
    torch.testing.assert_close(g10["layers.2.W"], 10 * g1["layers.2.W"])


def test_hidden_signal_is_a_batch_mean() -> None:
    """Two copies of one sample give the gradients of that sample alone (like the loss)."""
    net = net_for("lif", [3, 5, 4], recurrent=False)
    xs, ts = sequence(8, 1, 3)
    g1 = ostl.gradients(net, OSTTP(), xs, ts, mse)
    g2 = ostl.gradients(net, OSTTP(), xs.repeat(1, 2, 1), ts.repeat(1, 2, 1), mse)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name])


def test_projections_options_and_seed() -> None:
    net = net_for("rnn", [3, 40, 30], recurrent=False, n_out=25)
    B0 = OSTTP().bind(net).projections
    assert B0[-1] is None and B0[0] is not None and B0[1] is not None
    assert B0[0].shape == (40, 25) and B0[1].shape == (30, 25)
    assert float(B0[0].abs().max()) <= 25**-0.5  # default: uniform in ±1/√n_out
    assert float(B0[0].abs().max()) > 0.9 * 25**-0.5
    same = OSTTP().bind(net).projections
    other = OSTTP(seed=1).bind(net).projections
    assert torch.equal(same[0], B0[0]) and not torch.equal(other[0], B0[0])
    Bn = OSTTP(distribution="normal", scale=2.0).bind(net).projections[0]
    assert Bn is not None and 1.7 < float(Bn.std()) < 2.3 and float(Bn.abs().max()) > 2.0
    Bu = OSTTP(scale=0.5).bind(net).projections[0]
    assert Bu is not None and float(Bu.abs().max()) <= 0.5
    with pytest.raises(ValueError, match="distribution"):
        OSTTP(distribution="cauchy")
    with pytest.raises(ValueError, match="scale"):
        OSTTP(scale=-1.0)
    with pytest.raises(ValueError, match="recurrence"):
        OSTTP(recurrence="full")


def test_projections_stay_fixed_while_learning() -> None:
    net = net_for("lif", [3, 5, 4], recurrent=True)
    xs, ts = sequence(6, 2, 3)
    learner = ostl.Learner(
        net, OSTTP(), loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), lr=0.1)
    )
    B = [b.clone() for b in learner.runner.projections if b is not None]
    learner.reset(2)
    for x, t in zip(xs, ts):
        learner.step(x, t)
    assert learner.updates == 6
    assert all(torch.equal(b, c) for b, c in zip(B, learner.runner.projections))


# -- no update locking --------------------------------------------------------------------------
def _run(net: ostl.Network, unlocked: bool, xs: Tensor, targets: list, opt: str) -> ostl.Learner:
    optim = (
        torch.optim.Adam(net.parameters(), lr=0.01)
        if opt == "adam"
        else torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    )
    learner = ostl.Learner(net, OSTTP(), loss_fn=mse, optimizer=optim, unlocked=unlocked)
    learner.reset(xs.shape[1])
    for x, t in zip(xs, targets):
        learner.step(x, t)
    learner.end_sequence()
    return learner


@pytest.mark.parametrize("opt", ["adam", "sgd"])
@pytest.mark.parametrize("every", [1, 3])
def test_unlocked_schedule_gives_the_same_updates(opt: str, every: int) -> None:
    xs, ts = sequence(12, 2, 3)
    targets = _sparse(ts, every)
    start = net_for("alif", [3, 5, 4], recurrent=True)
    nets = [net_for("alif", [3, 5, 4], recurrent=True) for _ in range(2)]
    learners = [_run(n, u, xs, targets, opt) for n, u in zip(nets, (False, True))]
    assert learners[0].updates == learners[1].updates == 12 // every
    assert learners[0].mean_loss == learners[1].mean_loss
    moved = sum(
        float((p - q).detach().norm()) for p, q in zip(nets[1].parameters(), start.parameters())
    )
    assert moved > 1e-3
    for (n, p), q in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-14, msg=n)


def test_unlocked_update_lands_before_the_layer_above_runs() -> None:
    """Shown with instrumentation: when layer l+1 starts step t, layer l already holds its
    step-t update, and layer l's update never waited for the output."""
    net = net_for("lif", [3, 5, 4], recurrent=True)
    W0 = net.layers[0].W
    xs, ts = sequence(3, 2, 3)
    events: list[tuple[str, int, Tensor]] = []

    def spy(i: int, layer: ostl.Layer) -> None:  # the runner computes a Layer's currents first
        currents = layer.currents

        def wrapped(x: Tensor, s: object) -> object:
            events.append(("run", i, W0.detach().clone()))
            return currents(x, s)

        layer.currents = wrapped  # type: ignore[method-assign]

    for i, layer in enumerate(net.typed_layers):
        if isinstance(layer, ostl.Layer):
            spy(i, layer)
        else:
            layer.register_forward_pre_hook(
                lambda m, a, i=i: events.append(("run", i, W0.detach().clone()))
            )
    learner = ostl.Learner(
        net,
        OSTTP(),
        loss_fn=mse,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        unlocked=True,
    )
    apply = learner.runner.on_layer_update
    assert apply is not None

    def record(i: int) -> None:
        apply(i)
        events.append(("update", i, W0.detach().clone()))

    learner.runner.on_layer_update = record
    learner.reset(2)
    for x, t in zip(xs, ts):
        learner.step(x, t)
    kinds = [(k, i) for k, i, _ in events]
    assert (
        kinds
        == [("run", 0), ("update", 0), ("run", 1), ("update", 1), ("run", 2), ("update", 2)] * 3
    )
    for t in range(3):
        run0, upd0, run1 = events[6 * t], events[6 * t + 1], events[6 * t + 2]
        assert not torch.equal(run0[2], upd0[2])  # layer 0 moved at step t ...
        assert torch.equal(run1[2], upd0[2])  # ... before layer 1 ran step t


def test_unlocked_runner_accumulates_the_plain_gradients() -> None:
    """Runner level, weights fixed: the layer-by-layer path sums the same gradients."""
    net = net_for("snu", [3, 5, 4, 3], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    targets = _sparse(ts, 2)
    plain = ostl.gradients(net, OSTTP(), xs, targets, mse)
    runner = OSTTP().bind(net)
    order: list[int] = []
    runner.on_layer_update = order.append
    runner.reset(2)
    for x, t in zip(xs, targets):
        runner.step(x, t, mse)
    assert order == [0, 1, 2, 3] * 5
    for name, g in plain.items():
        torch.testing.assert_close(runner.grads[name], g, rtol=1e-13, atol=1e-15)


def test_unlocked_schedule_refuses_locked_rules_and_windows() -> None:
    net = net_for("lif", [3, 5], recurrent=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    # every registered rule whose signal is not the target's; OSTTP is the only other one
    locked = [n for n in ostl.RULES if getattr(ostl.rules.get_rule(n), "signal", None) != "target"]
    assert set(locked) == set(ostl.RULES) - {"osttp"}
    for rule in locked:
        with pytest.raises(ostl.UnsupportedError, match="update-locked"):
            ostl.Learner(net, rule, loss_fn=mse, optimizer=opt, unlocked=True)
    with pytest.raises(ValueError, match="update_every=1"):
        ostl.Learner(net, OSTTP(), loss_fn=mse, optimizer=opt, unlocked=True, update_every=2)


# -- bad targets ----------------------------------------------------------------------------------
def test_osttp_refuses_class_indices_and_mismatched_targets() -> None:
    net = net_for("lif", [3, 5], recurrent=False, n_out=4)
    xs, ts = sequence(4, 2, 3, n_out=4)
    with pytest.raises(ostl.DTypeError, match="one_hot"):
        ostl.gradients(net, OSTTP(), xs, torch.randint(0, 4, (4, 2)), mse)
    with pytest.raises(ostl.ShapeError, match=r"\(2, 4\)"):
        ostl.gradients(net, OSTTP(), xs, ts[..., :3], mse)
    with pytest.raises(ostl.ShapeError, match="last dimension"):
        ostl.gradients(net, OSTTP(), xs, ts[..., 0], mse)
    with pytest.raises(ostl.DTypeError, match="float64"):
        ostl.gradients(net, OSTTP(), xs, ts.float(), mse)
    # a one-hot target and a loss that takes it work
    labels = torch.randint(0, 4, (4, 2))
    onehot = torch.nn.functional.one_hot(labels, 4).to(torch.float64)

    def ce(y: Tensor, t: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(y, t)

    g = ostl.gradients(net, OSTTP(), xs, onehot, ce)
    assert all(torch.isfinite(v).all() and v.norm() > 0 for v in g.values())
