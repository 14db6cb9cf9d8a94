"""The trace engine: reduced (output-map) traces equal full ones; sizes; layouts."""

from __future__ import annotations

import pytest
import torch

import ostl
from ostl.cells import CELLS
from ostl.traces import DiagonalTrace, FactorisedTrace, diagonal_trace, neuron_jacobians

from .helpers import DT, TRAINABLE

MAPPED = [name for name, cls in CELLS.items() if cls.has_output_map]


def test_the_spiking_cells_declare_an_output_map() -> None:
    assert {"snu", "ssnu", "lif", "alif"} <= set(MAPPED)


@pytest.mark.parametrize("name", MAPPED)
def test_output_map_agrees_with_step(name: str) -> None:
    layer = ostl.Layer(3, 5, name, recurrent=True, **TRAINABLE.get(name, {})).double()
    state = layer.init_state(4)
    p = layer.cell.neuron_params()
    with torch.no_grad():
        for _ in range(6):
            y, state = layer(torch.rand(4, 3, dtype=DT) * 3, state)
            torch.testing.assert_close(layer.cell.output_map(state, p), y)


@pytest.mark.parametrize("name", MAPPED)
@pytest.mark.parametrize("recurrent", [False, True])
def test_reduced_trace_equals_full_trace(name: str, recurrent: bool) -> None:
    """Same gradient contraction every step, with one stored trace fewer per parameter."""
    torch.manual_seed(3)
    layer = ostl.Layer(3, 5, name, recurrent=recurrent, **TRAINABLE.get(name, {})).double()
    with torch.no_grad():
        layer.W.mul_(2.5)
    B = 4
    full = DiagonalTrace(layer, B, DT, torch.device("cpu"), reduce_output=False)
    reduced = DiagonalTrace(layer, B, DT, torch.device("cpu"))
    assert reduced.reduced and not full.reduced
    k = len(layer.cell.state_names())
    assert all(e.shape[0] == k - 1 for e in reduced.eps.values())
    state = layer.init_state(B)
    spikes = 0.0
    with torch.no_grad():
        for _ in range(12):
            x = torch.rand(B, 3, dtype=DT) * 2
            y_prev = getattr(state, layer.cell.output)
            a_in, a_rec = layer.currents(x, state)
            state, J = neuron_jacobians(layer.cell, a_in, a_rec, state)
            full.update(J, x, y_prev)
            reduced.update(J, x, y_prev)
            L = torch.randn(B, 5, dtype=DT)
            got, want = dict(reduced.grads(L)), dict(full.grads(L))
            for n in want:
                torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)
            spikes += float(getattr(state, layer.cell.output).mean())
    assert any(float(g.norm()) > 0 for g in want.values())
    if name != "ssnu":
        assert 0 < spikes / 12 < 0.95  # the spiking branch and its reset were exercised


CLOSED = [name for name, cls in CELLS.items() if cls.has_closed_form]
ALL_PARAMS = {
    "snu": ("b", "decay"),
    "ssnu": ("b", "decay"),
    "lif": ("decay", "threshold"),
    "alif": ("decay", "adaptation_decay", "beta", "threshold"),
}
VARIANTS = {
    "lif": [
        {"reset": "hard"},
        {"reset": "subtract"},
        {"detach_reset": True},
        {"reset": "subtract", "detach_reset": True},
    ],
    "alif": [{}, {"detach_reset": True}],
}


def test_the_shipped_spiking_cells_have_closed_forms() -> None:
    assert {"snu", "ssnu", "lif", "alif"} <= set(CLOSED)


@pytest.mark.parametrize("name", CLOSED)
@pytest.mark.parametrize("recurrent", [False, True])
def test_closed_form_jacobians_equal_derived(name: str, recurrent: bool) -> None:
    for opts in VARIANTS.get(name, [{}]):
        for trainable in (ALL_PARAMS.get(name, ()), ()):
            torch.manual_seed(5)
            layer = ostl.Layer(3, 6, name, recurrent=recurrent, trainable=trainable, **opts)
            layer = layer.double()
            with torch.no_grad():
                layer.W.mul_(3.0)
            state = layer.init_state(4)
            with torch.no_grad():
                for _ in range(5):  # reach states with spikes, resets and adaptation
                    x = torch.rand(4, 3, dtype=DT) * 2
                    a_in, a_rec = layer.currents(x, state)
                    new_c, Jc = neuron_jacobians(layer.cell, a_in, a_rec, state)
                    new_d, Jd = neuron_jacobians(layer.cell, a_in, a_rec, state, derive=True)
                    for c, d in zip(new_c, new_d):
                        torch.testing.assert_close(c, d)
                    for field, c, d in zip(Jd._fields, Jc, Jd):
                        assert (c is None) == (d is None), field
                        if c is not None:
                            torch.testing.assert_close(c, d, msg=f"{name} {opts} {field}")
                    state = new_c
            assert float(getattr(state, layer.cell.output).sum()) > 0 or name == "ssnu"


def _factorisable(recurrent: bool, bias: bool = True) -> ostl.Layer:
    torch.manual_seed(7)
    layer = ostl.Layer(
        3, 5, "lif", recurrent=recurrent, bias=bias, reset="subtract", detach_reset=True
    ).double()
    with torch.no_grad():
        layer.W.mul_(3.0)
    return layer


@pytest.mark.parametrize("recurrent", [False, True])
def test_factorised_trace_equals_diagonal_trace(recurrent: bool) -> None:
    layer = _factorisable(recurrent)
    B = 4
    cpu = torch.device("cpu")
    fact, diag = FactorisedTrace(layer, B, DT, cpu), DiagonalTrace(layer, B, DT, cpu)
    assert sum(e.numel() for e in fact.eps.values()) * 5 == sum(
        e.numel() for e in diag.eps.values()
    )  # one presynaptic trace instead of one per postsynaptic neuron
    state = layer.init_state(B)
    rate = 0.0
    with torch.no_grad():
        for _ in range(15):
            x = torch.rand(B, 3, dtype=DT) * 2
            y_prev = state.z
            state, J = neuron_jacobians(layer.cell, *layer.currents(x, state), state)
            fact.update(J, x, y_prev)
            diag.update(J, x, y_prev)
            L = torch.randn(B, 5, dtype=DT)
            want = dict(diag.grads(L))
            for n, g in fact.grads(L):
                torch.testing.assert_close(g, want[n], rtol=1e-10, atol=1e-12)
            rate += float(state.z.mean()) / 15
    assert 0 < rate < 0.9


def test_factorised_trace_is_chosen_only_where_exact() -> None:
    assert isinstance(
        diagonal_trace(_factorisable(True), 2, DT, torch.device("cpu")), FactorisedTrace
    )
    not_factorisable = [
        ostl.Layer(3, 5, "lif", reset="subtract"),  # reset differentiated: per-neuron recursion
        ostl.Layer(3, 5, "lif", reset="hard", detach_reset=True),  # (1 - z) leak per neuron
        ostl.Layer(3, 5, "lif", reset="subtract", detach_reset=True, trainable=("threshold",)),
        ostl.Layer(3, 5, "alif", detach_reset=True),
        ostl.Layer(3, 5, "rnn"),
    ]
    uneven = ostl.Layer(3, 5, "lif", reset="subtract", detach_reset=True)
    uneven.cell.decay[0] = 0.5  # per-neuron decays: no longer one presynaptic trace
    not_factorisable.append(uneven)
    for layer in not_factorisable:
        assert not FactorisedTrace.applies(layer), layer
        assert isinstance(
            diagonal_trace(layer, 2, torch.float32, torch.device("cpu")), DiagonalTrace
        )


def test_ostl_with_factorised_traces_equals_bptt() -> None:
    net = ostl.Network([_factorisable(False), ostl.Readout(5, 2)]).double()
    xs = torch.rand(15, 3, 3, dtype=DT) * 2
    ts = torch.randn(15, 3, 2, dtype=DT)
    runner = ostl.OSTL().bind(net)
    runner.reset(3)
    assert isinstance(runner.traces[0], FactorisedTrace)
    rep = ostl.compare_to_bptt(net, "ostl", xs, ts, lambda y, t: ((y - t) ** 2).mean())
    assert rep.max_relative_error < 1e-10 and min(r.reference_norm for r in rep.rows) > 0
