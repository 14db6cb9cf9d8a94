"""The diagonal trace: its reduced layouts equal the full one, the factorised trace equals it
where it applies, and the fused kernel gives the PyTorch path's gradients for every cell."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import ostl
from ostl import kernels
from ostl.cells import CELLS
from ostl.engine import diagonal, factorised, neuron_jacobians
from ostl.rules import get_rule

from ..helpers import CELL_NAMES, DT, TRAINABLE, make_net, mse, sequence
from ..registry import PRESETS

REDUCED = [n for n, c in CELLS.items() if c.has_output_map or not c.reads_previous_output]


def _run_traces(
    layer: ostl.Layer, plans: list[diagonal.DiagonalPlan], steps: int = 12, B: int = 4
) -> list[list[dict[str, Tensor]]]:
    """Every plan's gradients at every step for the same inputs and random signals."""
    traces = [diagonal.init(p, B, DT, torch.device("cpu")) for p in plans]
    state = layer.init_state(B)
    out: list[list[dict[str, Tensor]]] = [[] for _ in plans]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(steps):
            x = torch.rand(B, layer.n_in, generator=g, dtype=DT) * 2
            y_prev = getattr(state, layer.cell.output)
            a_in, a_rec = layer.currents(x, state)
            state, J = neuron_jacobians(layer.cell, a_in, a_rec, state)
            L = torch.randn(B, layer.n_out, generator=g, dtype=DT)
            for i, p in enumerate(plans):
                traces[i], grads = diagonal.advance(p, traces[i], J, x, y_prev, L, layer.H)
                assert grads is not None
                out[i].append(grads)
    return out


@pytest.mark.parametrize("name", REDUCED)
@pytest.mark.parametrize("recurrent", [False, True])
def test_reduced_trace_equals_full_trace(name: str, recurrent: bool) -> None:
    """Same gradient every step, with y's trace (and, for an RNN, every trace) not stored."""
    torch.manual_seed(3)
    layer = ostl.Layer(3, 5, name, recurrent=recurrent, **TRAINABLE.get(name, {})).double()
    with torch.no_grad():
        layer.W.mul_(2.5)
    full, reduced = diagonal.plan(layer, reduce_output=False), diagonal.plan(layer)
    assert full.mode == "full" and reduced.mode in ("map", "memoryless")
    assert len(reduced.mem) == len(full.mem) - 1
    got, want = _run_traces(layer, [reduced, full])
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for n in b:
            torch.testing.assert_close(a[n], b[n], rtol=1e-10, atol=1e-12)
    assert sum(float(v.norm()) for g in want for v in g.values()) > 0


def _factorisable(recurrent: bool) -> ostl.Layer:
    torch.manual_seed(7)
    layer = ostl.Layer(
        3, 5, "lif", recurrent=recurrent, bias=True, reset="subtract", detach_reset=True
    ).double()
    with torch.no_grad():
        layer.W.mul_(3.0)
    return layer


@pytest.mark.parametrize("recurrent", [False, True])
def test_factorised_trace_equals_diagonal_trace(recurrent: bool) -> None:
    layer = _factorisable(recurrent)
    B, cpu = 4, torch.device("cpu")
    fp, dp = factorised.plan(layer), diagonal.plan(layer)
    fact, diag = factorised.init(fp, B, DT, cpu), diagonal.init(dp, B, DT, cpu)
    size = sum(e.numel() for e in fact.eps.values())
    assert size * 5 == sum(e.numel() for e in diag.eps.values())  # one presynaptic trace each
    state = layer.init_state(B)
    rate = 0.0
    with torch.no_grad():
        for _ in range(15):
            x = torch.rand(B, 3, dtype=DT) * 2
            y_prev = state.z
            state, J = neuron_jacobians(layer.cell, *layer.currents(x, state), state)
            L = torch.randn(B, 5, dtype=DT)
            fact, got = factorised.advance(fp, fact, J, x, y_prev, L)
            diag, want = diagonal.advance(dp, diag, J, x, y_prev, L)
            assert got is not None and want is not None and got.keys() == want.keys()
            for n, g in got.items():
                torch.testing.assert_close(g, want[n], rtol=1e-10, atol=1e-12)
            rate += float(state.z.mean()) / 15
    assert 0 < rate < 0.9


def test_factorised_trace_is_chosen_only_where_exact() -> None:
    assert factorised.applies(_factorisable(True))
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
        assert not factorised.applies(layer), layer
    net = ostl.Network([_factorisable(False), ostl.Readout(5, 2)])
    runner = ostl.OSTL().bind(net)
    runner.reset(2)
    assert isinstance(runner.traces[0], factorised.FactorisedTrace)


def test_ostl_with_factorised_traces_equals_bptt() -> None:
    net = ostl.Network([_factorisable(False), ostl.Readout(5, 2)]).double()
    xs = torch.rand(15, 3, 3, dtype=DT) * 2
    ts = torch.randn(15, 3, 2, dtype=DT)
    rep = ostl.compare_to_bptt(net, "ostl", xs, ts, mse)
    assert rep.max_relative_error < 1e-10 and min(r.reference_norm for r in rep.rows) > 0


@pytest.mark.skipif(not kernels.available(), reason="no C compiler: PyTorch path only")
@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("rule", PRESETS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_and_pytorch_traces_give_the_same_gradients(
    name: str, rule: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Targets at some steps only (update-only and update-and-contract calls); every cell."""
    net = make_net(name, [3, 6, 5], recurrent=True, bias=True).to(dtype)
    xs, ts = sequence(12, 4, 3)
    xs, ts = xs.to(dtype), ts.to(dtype)
    targets: list[Tensor | None] = [t if i % 3 == 2 else None for i, t in enumerate(ts)]
    calls = [0]
    real = kernels._kernel

    def counting(*args: object, **kw: object) -> object:
        calls[0] += 1
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "_kernel", counting)
    got = ostl.gradients(net, get_rule(rule), xs, targets, mse)
    with kernels.disabled():
        want = ostl.gradients(net, get_rule(rule), xs, targets, mse)
    stores = any(e.numel() for tr in _traces(net, rule) if tr is not None for e in tr.eps.values())
    assert (calls[0] > 0) == stores, calls  # the C path ran wherever a trace is stored
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    for n, g in want.items():
        torch.testing.assert_close(got[n], g, **tol)
    assert max(float(g.norm()) for g in want.values()) > 0


def _traces(net: ostl.Network, rule: str) -> tuple[object, ...]:
    runner = get_rule(rule).bind(net)
    runner.reset(1)
    return tuple(tr for tr in runner.traces if hasattr(tr, "eps") and hasattr(tr, "D"))
