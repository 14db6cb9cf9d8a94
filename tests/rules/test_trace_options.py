"""The trace rules' options: ``jacobians="derived"`` and low-precision ``trace_dtype``."""

from __future__ import annotations

import pytest
import torch

import ostl
from ostl.cells import CELLS
from ostl.engine.diagonal import DiagonalTrace
from ostl.engine.factorised import FactorisedTrace
from ostl.rules import Runner

from ..helpers import CELL_NAMES, DT, make_net, mse, sequence

CLOSED = [name for name, cls in CELLS.items() if cls.has_closed_form]


@pytest.mark.parametrize("name", CLOSED)
def test_derived_jacobians_give_the_closed_form_gradient(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = make_net(name, [3, 5], recurrent=True)
    xs, ts = sequence(12, 3, 3)
    want = ostl.gradients(net, ostl.OSTL(), xs, ts, mse)
    # the derived path must not touch the closed form at all
    monkeypatch.setattr(CELLS[name], "jacobians", lambda *a, **k: pytest.fail("closed form"))
    for rule in (ostl.OSTL(jacobians="derived"), ostl.rules.OSTTP(jacobians="derived")):
        got = ostl.gradients(net, rule, xs, ts, mse)
        if isinstance(rule, ostl.OSTL):
            for n, g in want.items():
                torch.testing.assert_close(got[n], g, rtol=1e-10, atol=1e-12)
    assert min(float(g.norm()) for g in want.values()) > 0


@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_traces_stay_close_to_full_precision(name: str, dtype: torch.dtype) -> None:
    net = make_net(name, [3, 6, 5], recurrent=False).float()
    xs, ts = sequence(20, 4, 3)
    xs, ts = xs.float(), ts.float()
    want = ostl.gradients(net, ostl.OSTL(), xs, ts, mse)
    got = ostl.gradients(net, ostl.OSTL(trace_dtype=dtype), xs, ts, mse)
    # within 8 machine epsilons of the storage dtype (bfloat16: 2^-7, float16: 2^-10): the
    # error of one rounding per step, not growing with T (the traces decay)
    bound = 8 * torch.finfo(dtype).eps
    for n, g in want.items():
        assert got[n].dtype == torch.float32
        if float(g.norm()) == 0:
            continue
        err = float((got[n] - g).norm() / g.norm())
        assert err < bound, (n, err)
    # it is an approximation, not a silent no-op: the stored traces are rounded (an RNN
    # without H stores none: its diagonal trace has no memory, y_t = tanh(W x_t + b))
    runner = ostl.OSTL(trace_dtype=dtype).bind(net)
    runner.reset(4)
    stored = [e for tr in runner.traces if tr is not None for e in tr.eps.values() if e.numel()]
    assert all(e.dtype == dtype for e in stored)
    diff = max(float((got[n] - want[n]).abs().max()) for n in want)
    assert (diff > 0) == bool(stored) and (bool(stored) or name == "rnn")


def test_low_precision_traces_halve_the_trace_memory() -> None:
    net = make_net("lif", [4, 8, 8], recurrent=True).float()
    runners = []
    for dtype in (None, torch.bfloat16):
        runner = ostl.OSTL(trace_dtype=dtype).bind(net)
        runner.reset(3)
        assert isinstance(runner, Runner)
        runners.append(runner)
    full, half = (
        sum(t.numel() * t.element_size() for tr in r.traces if tr for t in tr.eps.values())
        for r in runners
    )
    assert half * 2 == full
    assert all(e.dtype == torch.bfloat16 for tr in runners[1].traces if tr for e in tr.eps.values())


def test_low_precision_factorised_trace() -> None:
    torch.manual_seed(0)
    layer = ostl.Layer(3, 5, "lif", reset="subtract", detach_reset=True)
    with torch.no_grad():
        layer.W.mul_(3.0)
    net = ostl.Network([layer, ostl.Readout(5, 2)])
    runner = ostl.OSTL(trace_dtype=torch.bfloat16).bind(net)
    runner.reset(2)
    assert isinstance(runner.traces[0], FactorisedTrace)
    assert runner.traces[0].eps["W"].dtype == torch.bfloat16
    xs, ts = sequence(15, 2, 3)
    xs, ts = xs.float(), ts.float()
    want = ostl.gradients(net, ostl.OSTL(), xs, ts, mse)
    got = ostl.gradients(net, ostl.OSTL(trace_dtype=torch.bfloat16), xs, ts, mse)
    for n, g in want.items():
        assert float((got[n] - g).norm()) <= 3e-2 * float(g.norm())


def test_trace_options_are_checked() -> None:
    with pytest.raises(ValueError, match="jacobians must be 'auto' or 'derived'"):
        ostl.OSTL(jacobians="closed")
    with pytest.raises(ValueError, match="trace_dtype must be None or one of"):
        ostl.OSTL(trace_dtype=torch.int8)
    with pytest.raises(ValueError, match="trace_dtype must be None or one of"):
        ostl.rules.OSTTP(trace_dtype="bfloat16")  # type: ignore[arg-type]
    # an exact trace (H kept) does not take a low-precision dtype: said, not ignored
    net = make_net("lif", [3, 4], recurrent=True).float()
    runner = ostl.OSTL(recurrence="exact", trace_dtype=torch.bfloat16).bind(net)
    with pytest.raises(ValueError, match="exact trace"):
        runner.reset(2)
    # ... but layers without H use diagonal traces, which do
    ff = make_net("lif", [3, 4], recurrent=False).float()
    runner = ostl.OSTL(recurrence="exact", trace_dtype=torch.bfloat16).bind(ff)
    runner.reset(2)
    assert isinstance(runner, Runner) and isinstance(runner.traces[0], DiagonalTrace)


def test_full_precision_trace_dtype_is_exact() -> None:
    """trace_dtype equal to the network's dtype changes nothing (float64 == BPTT)."""
    net = make_net("snu", [3, 5], recurrent=False)
    xs, ts = sequence(10, 2, 3)
    rep = ostl.compare_to_bptt(net, ostl.OSTL(trace_dtype=DT), xs, ts, mse)
    assert rep.max_relative_error < 1e-10
