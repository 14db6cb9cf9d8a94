"""The BPTT oracle: exact rules equal autograd BPTT in float64 (DESIGN.md §2 table)."""

from __future__ import annotations

import pytest
import torch

import ostl
from ostl.rules import BPTT, OSTL, RTRL

from .helpers import CELL_NAMES, assert_spiking, make_net, mse, sequence

TOL = 1e-8


def _check_exact(rep: ostl.Comparison) -> None:
    for row in rep.rows:
        assert row.reference_norm > 0, f"{row.name}: zero reference gradient (vacuous test)"
        assert row.relative_error <= TOL, rep.table()


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("recurrence", ["diagonal", "exact"])
def test_shallow_ostl_without_h_equals_bptt(cell: str, recurrence: str) -> None:
    net = make_net(cell, [3, 5], recurrent=False)
    xs, ts = sequence(15, 3, 3)
    assert_spiking(net, xs, cell)
    _check_exact(ostl.compare_to_bptt(net, OSTL(recurrence=recurrence), xs, ts, mse))


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_shallow_ostl_exact_with_h_equals_bptt(cell: str) -> None:
    net = make_net(cell, [3, 5], recurrent=True)
    xs, ts = sequence(15, 3, 3)
    assert_spiking(net, xs, cell)
    _check_exact(ostl.compare_to_bptt(net, OSTL(recurrence="exact"), xs, ts, mse))


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_rtrl_two_layers_with_h_equals_bptt(cell: str) -> None:
    net = make_net(cell, [3, 4, 3], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    assert_spiking(net, xs, cell)
    _check_exact(ostl.compare_to_bptt(net, RTRL(), xs, ts, mse))


def _layer_params(net: ostl.Network, i: int) -> list[str]:
    return [n for n, _ in net.named_parameters() if n.startswith(f"layers.{i}.")]


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize(("recurrent", "recurrence"), [(False, "diagonal"), (True, "exact")])
def test_deep_ostl_equals_bptt_with_upper_states_detached(
    cell: str, recurrent: bool, recurrence: str
) -> None:
    """OSTL's gradient of θ^l == BPTT's in the net where layers above l see a detached past."""
    net = make_net(cell, [3, 5, 4], recurrent=recurrent)
    xs, ts = sequence(12, 2, 3)
    assert_spiking(net, xs, cell)
    g = ostl.gradients(net, OSTL(recurrence=recurrence), xs, ts, mse)
    for layer in range(len(net.layers)):
        ref = ostl.gradients(net, BPTT(detach_above=layer), xs, ts, mse)
        for name in _layer_params(net, layer):
            assert ref[name].norm() > 0, name
            err = (g[name] - ref[name]).norm() / ref[name].norm()
            assert err <= TOL, f"{name}: relative error {err:.3e}"


@pytest.mark.parametrize("cell", ["lif", "rnn", "lstm"])
def test_deep_ostl_differs_from_full_bptt(cell: str) -> None:
    """Negative control: the detached-oracle test above could fail. Full BPTT differs for
    the lowest layer (OSTL drops the paths through the upper layers' past)."""
    net = make_net(cell, [3, 5, 4], recurrent=True)
    xs, ts = sequence(12, 2, 3)
    rep = ostl.compare_to_bptt(net, OSTL(recurrence="exact"), xs, ts, mse)
    assert rep["layers.0.W"].relative_error > 1e-4
    assert rep["layers.2.W"].relative_error <= TOL  # the readout's gradient is exact


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_diagonal_ostl_with_h_is_approximate_and_reported(cell: str) -> None:
    net = make_net(cell, [3, 5], recurrent=True)
    xs, ts = sequence(15, 3, 3)
    rep = ostl.compare_to_bptt(net, OSTL(recurrence="diagonal"), xs, ts, mse)
    assert rep["layers.0.H"].relative_error > 1e-4, rep.table()
    assert rep["layers.0.W"].relative_error > 1e-4, rep.table()
    for row in rep.rows:
        assert -1.0 <= row.cosine <= 1.0 + 1e-12
    assert rep.min_cosine < 1 - 1e-8
    assert "layers.0.H" in rep.table() and "cosine" in rep.table()


@pytest.mark.parametrize("rule", [OSTL(recurrence="exact"), RTRL()])
def test_sparse_targets_and_class_targets(rule: ostl.rules.Rule) -> None:
    """Targets only at some steps (None elsewhere), cross-entropy on class indices."""
    net = make_net("lif", [3, 5], recurrent=True, n_out=3)
    xs, _ = sequence(12, 4, 3)
    labels = torch.tensor([0, 2, 1, 2])
    targets = [None] * 11 + [labels]
    ce = torch.nn.functional.cross_entropy
    _check_exact(ostl.compare_to_bptt(net, rule, xs, targets, ce))
    # and a target every third step
    targets = [labels if t % 3 == 2 else None for t in range(12)]
    _check_exact(ostl.compare_to_bptt(net, rule, xs, targets, ce))


def test_gradients_leave_weights_and_grad_untouched() -> None:
    net = make_net("snu", [3, 4], recurrent=True)
    xs, ts = sequence(5, 2, 3)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for rule in ("bptt", "ostl", "rtrl"):
        ostl.gradients(net, rule, xs, ts, mse)
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


def test_truncated_bptt_equals_sum_of_chunk_gradients() -> None:
    """BPTT(truncation=k): each chunk of k steps back-propagated alone, state carried."""
    net = make_net("lif", [3, 5], recurrent=True)
    xs, ts = sequence(12, 2, 3)
    k = 4
    got = ostl.gradients(net, BPTT(truncation=k), xs, ts, mse)
    full = ostl.gradients(net, BPTT(), xs, ts, mse)
    params = dict(net.named_parameters())
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    state = net.init_state(2)
    for c in range(0, 12, k):
        state = tuple(type(s)(*(t.detach() for t in s)) for s in state)
        loss = torch.zeros((), dtype=xs.dtype)
        for t in range(c, c + k):
            y, state = net.step(xs[t], state)
            loss = loss + mse(y, ts[t])
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            want[n] += g
    for n in params:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)
    # and truncation really truncates: the recurrent weights' gradient differs from full BPTT
    assert (got["layers.0.H"] - full["layers.0.H"]).norm() > 1e-6 * full["layers.0.H"].norm()
