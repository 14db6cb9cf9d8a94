"""Per-neuron Jacobians: closed forms equal the torch.func derivation; cells' declarations hold."""

from __future__ import annotations

import pytest
import torch

import ostl
from ostl.cells import CELLS
from ostl.cells.base import dense
from ostl.engine import neuron_jacobians

from ..helpers import DT, TRAINABLE
from ..registry import CLOSED, MAPPED, neuron_params

#: Every per-neuron parameter of every cell (from the registry): all trained, then none.
ALL_PARAMS = {name: neuron_params(name) for name in CELLS}
#: Test setting: the options whose code paths differ in a closed form (checked in turn).
VARIANTS = {
    "lif": [
        {"reset": "hard"},
        {"reset": "subtract"},
        {"detach_reset": True},
        {"reset": "subtract", "detach_reset": True},
    ],
    "alif": [{}, {"detach_reset": True}],
}


def test_the_fast_paths_stay_declared() -> None:
    # a guard that these cells keep their fast paths: a hand list on purpose
    assert {"snu", "ssnu", "lif", "alif"} <= set(MAPPED)
    assert {"snu", "ssnu", "lif", "alif", "rnn", "lstm", "gru"} <= set(CLOSED)


@pytest.mark.parametrize("name", MAPPED)
def test_output_map_agrees_with_step(name: str) -> None:
    layer = ostl.Layer(3, 5, name, recurrent=True, **TRAINABLE.get(name, {})).double()
    state = layer.init_state(4)
    p = layer.cell.neuron_params()
    with torch.no_grad():
        for _ in range(6):
            y, state = layer(torch.rand(4, 3, dtype=DT) * 3, state)
            torch.testing.assert_close(layer.cell.output_map(state, p), y)


@pytest.mark.parametrize("name", list(CELLS))
def test_reads_previous_output_is_declared_truthfully(name: str) -> None:
    """A cell that says no state variable reads y_{t-1} directly has a zero output column in
    its derived ∂s_t/∂s_{t-1}; the engine relies on it (it does not store y's trace)."""
    torch.manual_seed(1)
    layer = ostl.Layer(3, 5, name, recurrent=True, **TRAINABLE.get(name, {})).double()
    state = layer.cell.State(*(torch.randn(4, 5, dtype=DT) for _ in layer.cell.state_names()))
    with torch.no_grad():
        a_in, a_rec = layer.currents(torch.rand(4, 3, dtype=DT) * 2, state)
        _, J = neuron_jacobians(layer.cell, a_in, a_rec, state, derive=True)
    o = layer.cell.output_index()
    column = dense(J, state[0], layer.n_gates).state[..., o]
    if layer.cell.reads_previous_output:
        assert float(column.abs().sum()) > 0 or name == "rnn", name
    else:
        assert float(column.abs().max()) == 0.0, name


@pytest.mark.parametrize("name", CLOSED)
@pytest.mark.parametrize("recurrent", [False, True])
def test_closed_form_jacobians_equal_derived(name: str, recurrent: bool) -> None:
    for opts in VARIANTS.get(name, [{}]):
        for trainable in (ALL_PARAMS.get(name, ()), ()):
            torch.manual_seed(5)
            kw = {"trainable": trainable} if trainable else {}
            layer = ostl.Layer(3, 6, name, recurrent=recurrent, **kw, **opts).double()
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
                    ref, G = state[0], layer.n_gates
                    dc, dd = dense(Jc, ref, G), dense(Jd, ref, G)
                    for field, c, d in zip(dd._fields, dc, dd):
                        assert (c is None) == (d is None), field
                        if c is not None:
                            torch.testing.assert_close(c, d, msg=f"{name} {opts} {field}")
                    state = new_c
            assert float(getattr(state, layer.cell.output).abs().sum()) > 0


def test_jacobians_take_the_parameters_given() -> None:
    """φ passed explicitly replaces the cell's own (the engine's params override)."""
    layer = ostl.Layer(3, 4, "lif", trainable=("decay",)).double()
    state = layer.cell.State(torch.rand(2, 4, dtype=DT), torch.zeros(2, 4, dtype=DT))
    a_in, _ = layer.currents(torch.rand(2, 3, dtype=DT), state)
    p = {n: v.detach().clone() for n, v in layer.cell.neuron_params().items()}
    p["decay"] = torch.full((4,), 0.5, dtype=DT)
    for derive in (False, True):
        new, _ = neuron_jacobians(layer.cell, a_in.detach(), None, state, p, derive=derive)
        torch.testing.assert_close(new.v, 0.5 * state.v + a_in[:, 0].detach())
