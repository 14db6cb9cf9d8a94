"""Cells: hand-computed trajectories, agreement with torch.nn cells, Jacobians vs torch.func."""

from __future__ import annotations

import math

import pytest
import torch

import ostl
from ostl.cells import CELLS
from ostl.cells.base import dense
from ostl.engine import neuron_jacobians

from ..helpers import CELL_NAMES, DT, TRAINABLE, make_net, output_activity, sequence
from ..registry import SPIKING

F64 = dict(dtype=DT)


def _run(layer: ostl.Layer, xs: torch.Tensor) -> list[object]:
    state = layer.init_state(xs.shape[1])
    out = []
    with torch.no_grad():
        for x in xs:
            _, state = layer(x, state)
            out.append(state)
    return out


def _scalar_layer(cell: str, **kw: object) -> ostl.Layer:
    """One neuron, one input of weight 1, no bias: a_t = x_t."""
    layer = ostl.Layer(1, 1, cell, bias=False, **kw).double()
    with torch.no_grad():
        layer.W.fill_(1.0)
    return layer


def test_snu_trajectory_by_hand() -> None:
    layer = _scalar_layer("snu", decay=0.5, b=-1.0)
    xs = torch.tensor([0.8, 0.6, 0.3, -2.0], **F64).view(4, 1, 1)
    st = _run(layer, xs)
    # s1 = relu(0.8) = 0.8, y1 = [0.8 - 1 > 0] = 0
    # s2 = relu(0.6 + 0.5*0.8*1) = 1.0, y2 = 0 (1.0 - 1 = 0 is not > 0)
    # s3 = relu(0.3 + 0.5*1.0) = 0.8, y3 = 0 ... with s2 exactly 1: no spike
    # s4 = relu(-2 + 0.4) = 0
    assert [float(s.s) for s in st] == pytest.approx([0.8, 1.0, 0.8, 0.0])
    assert [float(s.y) for s in st] == [0.0, 0.0, 0.0, 0.0]
    xs = torch.tensor([1.5, 0.5, 0.5], **F64).view(3, 1, 1)
    st = _run(layer, xs)
    # s1 = 1.5 -> y1 = 1; reset: s2 = relu(0.5 + 0.5*1.5*(1-1)) = 0.5, y2 = 0; s3 = 0.75
    assert [float(s.s) for s in st] == pytest.approx([1.5, 0.5, 0.75])
    assert [float(s.y) for s in st] == [1.0, 0.0, 0.0]


def test_soft_snu_output_is_sigmoid() -> None:
    layer = _scalar_layer("ssnu", decay=0.5, b=-1.0)
    st = _run(layer, torch.tensor([0.8, 0.6], **F64).view(2, 1, 1))
    y1 = 1 / (1 + math.exp(-(0.8 - 1)))
    s2 = 0.6 + 0.5 * 0.8 * (1 - y1)
    assert float(st[0].y) == pytest.approx(y1)
    assert float(st[1].s) == pytest.approx(s2)
    assert float(st[1].y) == pytest.approx(1 / (1 + math.exp(-(s2 - 1))))


@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_lif_trajectory_by_hand(reset: str) -> None:
    layer = _scalar_layer("lif", decay=0.5, threshold=1.0, reset=reset)
    st = _run(layer, torch.tensor([0.6, 0.9, 0.4], **F64).view(3, 1, 1))
    # v1 = 0.6; v2 = 0.3 + 0.9 = 1.2 -> spike; v3: hard = 0 + 0.4, subtract = 0.6 + 0.4 - 1
    v3 = 0.4 if reset == "hard" else 0.6 + 0.4 - 1.0
    assert [float(s.v) for s in st] == pytest.approx([0.6, 1.2, v3])
    assert [float(s.z) for s in st] == [0.0, 1.0, 0.0]


def test_alif_threshold_adapts() -> None:
    layer = _scalar_layer("alif", decay=0.5, adaptation_decay=0.5, beta=1.0, threshold=1.0)
    st = _run(layer, torch.tensor([1.5, 0.0, 1.5, 1.5], **F64).view(4, 1, 1))
    # v1=1.5 a1=0 -> z1=1; v2=0.75-1=-0.25 a2=1; v3=-0.125+1.5=1.375 a3=0.5 A=1.5 -> 0
    # v4 = 0.6875+1.5 = 2.1875, a4 = 0.25, A = 1.25 -> 1
    assert [float(s.v) for s in st] == pytest.approx([1.5, -0.25, 1.375, 2.1875])
    assert [float(s.a) for s in st] == pytest.approx([0.0, 1.0, 0.5, 0.25])
    assert [float(s.z) for s in st] == [1.0, 0.0, 0.0, 1.0]


def _match_torch_cell(ours: ostl.Layer, theirs: torch.nn.Module) -> None:
    with torch.no_grad():
        theirs.weight_ih.copy_(ours.W)
        theirs.weight_hh.copy_(ours.H)
        theirs.bias_ih.copy_(ours.b)
        theirs.bias_hh.zero_()  # ours has one bias per gate (see gru.py on b_hn)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_rate_cells_match_torch_nn(name: str) -> None:
    ours = ostl.Layer(3, 4, name, recurrent=True).double()
    with torch.no_grad():
        ours.b.uniform_(-0.5, 0.5)
    theirs = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[name](
        3, 4
    ).double()
    _match_torch_cell(ours, theirs)
    xs = torch.randn(6, 2, 3, **F64)
    state = ours.init_state(2)
    h = torch.zeros(2, 4, **F64)
    c = torch.zeros(2, 4, **F64)
    for x in xs:
        y, state = ours(x, state)
        if name == "lstm":
            h, c = theirs(x, (h, c))
            torch.testing.assert_close(state.c, c)
        else:
            h = theirs(x, h)
        torch.testing.assert_close(y, h)


def _random_state(layer: ostl.Layer, B: int) -> object:
    """A non-trivial state: spikes 0/1, everything else random."""
    st = layer.init_state(B)
    fields = []
    for name, t in zip(st._fields, st):
        if name == layer.cell.output and layer.cell.spiking:
            fields.append((torch.rand_like(t) < 0.5).to(t.dtype))
        elif name == "y":
            fields.append(torch.rand_like(t))
        else:
            fields.append(torch.randn_like(t))
    return type(st)(*fields)


def _full_jac(f, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.func.jacrev(f)(x)


@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("derive", [True, False], ids=["derived", "default-path"])
def test_derived_jacobians_equal_jacrev_of_the_step(name: str, derive: bool) -> None:
    """Every per-neuron block equals torch.func.jacrev of the whole step, and the whole-step
    Jacobian has no entry outside those blocks (the step really is per neuron)."""
    B, N = 3, 4
    layer = ostl.Layer(2, N, name, recurrent=True, **TRAINABLE.get(name, {})).double()
    cell = layer.cell
    state = _random_state(layer, B)
    x = torch.randn(B, 2, **F64) * 2
    a_in, a_rec = layer.currents(x, state)
    a_in, a_rec = a_in.detach(), a_rec.detach()
    _, J_entries = neuron_jacobians(cell, a_in, a_rec, state, derive=derive)
    J = dense(J_entries, state[0], layer.n_gates)
    k = len(state)
    S = torch.stack(tuple(state), dim=-1)  # (B, N, k)
    p = {n: v.detach() for n, v in cell.neuron_params().items()}

    def out(a_in=a_in, a_rec=a_rec, S=S, p=p):  # type: ignore[no-untyped-def]
        new = cell.step(a_in, a_rec, cell.State(*S.unbind(-1)), p)
        return torch.stack(tuple(new), dim=-1)  # (B, N, k)

    eye_b = torch.eye(B, **F64)[:, None, None, :, None, None]
    eye_n = torch.eye(N, **F64)[None, :, None, None, :, None]
    # state: (B, N, k, B, N, k)
    full = _full_jac(lambda S: out(S=S), S)
    want = eye_b * eye_n * J.state[:, :, :, None, None, :]
    torch.testing.assert_close(full, want)
    # currents: (B, N, k, B, G, N)
    for cur, Jc in (("a_in", J.a_in), ("a_rec", J.a_rec)):
        full = _full_jac(lambda a, cur=cur: out(**{cur: a}), a_in if cur == "a_in" else a_rec)
        want = (
            torch.eye(B, **F64)[:, None, None, :, None, None]
            * torch.eye(N, **F64)[None, :, None, None, None, :]
            * Jc[:, :, :, None, :, None]
        )
        torch.testing.assert_close(full, want)
    # trainable per-neuron parameters: (B, N, k, N) for each
    for i, pname in enumerate(cell.trainable_names):
        full = _full_jac(lambda v, pname=pname: out(p={**p, pname: v}), p[pname])
        want = torch.eye(N, **F64)[None, :, None, :] * J.params[:, :, :, i, None]
        torch.testing.assert_close(full, want)
    assert J.state.shape == (B, N, k, k)
    # non-vacuous: the blocks are not all zero (RNN/GRU have no direct J_s: their memory
    # flows through a_rec, whose block is checked above)
    assert J.a_in.abs().sum() > 0 and J.a_rec.abs().sum() > 0
    if name not in ("rnn",):
        assert J.state.abs().sum() > 0


def test_every_registered_cell_is_tested() -> None:
    assert set(CELLS) >= set(CELL_NAMES)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_spiking_is_declared_truthfully(name: str) -> None:
    """``Cell.spiking`` against the outputs of a recurrent layer driven to fire: a spiking
    cell's outputs are exactly 0 or 1, and both occur; any other cell's are mostly neither."""
    net = make_net(name, [3, 6], recurrent=True)
    xs, _ = sequence(20, 3, 3)
    for i, y in enumerate(output_activity(net, xs)):
        binary = (y == 0) | (y == 1)
        if CELLS[name].spiking:
            assert bool(binary.all()), f"{name} declares spiking; layer {i} outputs non-spikes"
            assert 0 < float(y.mean()) < 1, f"layer {i} of {name}: silent or saturated"
        else:
            frac = float(binary.double().mean())
            assert frac < 0.5, f"{name} declares no spiking; layer {i}: {frac:.0%} 0 or 1"


def test_every_spiking_set_is_the_registrys() -> None:
    """The library derives its spiking set from the cells' declarations (nothing by hand)."""
    from ostl.tasks.base import SPIKING_CELLS

    assert SPIKING_CELLS == SPIKING == {n for n, c in CELLS.items() if c.spiking}
    assert "snu" in SPIKING and "ssnu" not in SPIKING  # the soft SNU's output is a sigmoid


def test_cell_options_are_checked() -> None:
    with pytest.raises(ValueError, match="reset"):
        ostl.Layer(2, 3, "lif", reset="soft")
    with pytest.raises(ValueError, match="per-neuron parameters"):
        ostl.Layer(2, 3, "lif", trainable=("tau",))
    with pytest.raises(ValueError, match="unknown cell"):
        ostl.Layer(2, 3, "izhikevich")
    with pytest.raises(ValueError, match="neurons"):
        ostl.Layer(2, 3, ostl.cells.LIF(4))
