"""Trace rules are presets on one engine: each preset is a point on the axes, every preset runs
every cell through the same step, and combinations no preset names work without new code."""

from __future__ import annotations

import pytest
import torch

import ostl
from ostl.engine import TraceEngine
from ostl.rules import DFA, OSTL, OSTTP, EProp, SnAp, TraceRule

from ..registry import missing_rules
from .oracles import ALL_CELLS, assert_close, local_objective_grads, net_for, sequence

#: preset -> (trace, signal, needs_readout): the whole definition of each published rule;
#: every registered TraceRule has a row (checked below)
TABLE: list[tuple[TraceRule, tuple[str, str, bool]]] = [
    (OSTL(), ("diagonal", "backprop", False)),
    (OSTL(recurrence="exact"), ("exact", "backprop", False)),
    (OSTL(feedback="random"), ("diagonal", "random", False)),
    (OSTTP(), ("diagonal", "target", False)),
    (OSTTP(recurrence="exact"), ("exact", "target", False)),
    (EProp(), ("diagonal", "backprop", True)),
    (EProp(feedback="random"), ("diagonal", "random", True)),
    (SnAp(), ("snap1", "backprop", False)),
    (SnAp(feedback="random"), ("snap1", "random", False)),
    (DFA(), ("diagonal", "error", False)),
]


def test_every_registered_preset_has_a_row() -> None:
    assert not missing_rules((r for r, _ in TABLE), TraceRule), "add rows to TABLE for these"


@pytest.mark.parametrize(("rule", "axes"), TABLE, ids=lambda r: repr(r))
def test_each_preset_is_a_point_on_the_axes(rule: TraceRule, axes: tuple[str, str, bool]) -> None:
    assert (rule.trace, rule.signal, rule.needs_readout) == axes
    assert type(rule).__mro__[1] in (TraceRule, ostl.rules.osttp.ProjectionRule)
    # a preset adds a constructor and a name, no behaviour: nothing but these is overridden
    own = set(vars(type(rule))) - {"__init__", "__doc__", "__module__", "name", "signal_kind",
                                   "__annotations__", "__qualname__",
                                   "__abstractmethods__", "_abc_impl"}  # fmt: skip
    assert not own, own


@pytest.mark.parametrize("cell", ALL_CELLS)
@pytest.mark.parametrize(("rule", "axes"), TABLE, ids=lambda r: repr(r))
def test_every_preset_runs_every_cell_through_the_same_step(
    rule: TraceRule, axes: tuple[str, str, bool], cell: str
) -> None:
    net = net_for(cell, [3, 4, 3], recurrent=True)
    engine = rule.engine(net)
    assert type(engine) is TraceEngine
    xs, ts = sequence(6, 2, 3)
    carry = engine.init(2)
    total = 0.0
    for x, t in zip(xs, ts):
        y, grads, carry = engine.step(None, carry, x, t, ostl.losses.mse)
        assert grads is not None and set(grads) == {n for n, _ in net.named_parameters()}
        total += sum(float(g.norm()) for g in grads.values())
    assert y.shape == (2, 2) and total > 0 and int(carry.stats.t) == 6


def test_a_combination_no_preset_names_needs_no_code() -> None:
    """Target projection with SnAp-1 traces; e-prop with half-precision traces; the exact trace
    with the target signal is OSTTP(recurrence='exact'), and with one recurrent layer its hidden
    gradient is the exact gradient of the local objective (the oracle of test_osttp.py)."""
    net = net_for("lif", [3, 5, 4], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    g = ostl.gradients(net, TraceRule("snap1", "target"), xs, ts, ostl.losses.mse)
    assert all(bool(torch.isfinite(v).all()) for v in g.values())
    half = ostl.gradients(net.float(), EProp(trace_dtype=torch.bfloat16), xs.float(),
                          ts.float(), ostl.losses.mse)  # fmt: skip
    full = ostl.gradients(net, EProp(), xs.float(), ts.float(), ostl.losses.mse)
    for n, v in full.items():
        assert float((half[n] - v).norm()) <= 0.05 * float(v.norm()) + 1e-6, n
    net = net_for("lif", [3, 5], recurrent=True).double()
    xs, ts = sequence(10, 2, 3)
    custom = ostl.gradients(net, TraceRule("exact", "target", seed=3), xs, ts, ostl.losses.mse)
    preset = ostl.gradients(net, OSTTP(recurrence="exact", seed=3), xs, ts, ostl.losses.mse)
    for n, v in preset.items():
        assert torch.equal(custom[n], v)
    B0 = OSTTP(seed=3).bind(net).projections[0]
    assert B0 is not None
    signals = [t @ B0.T / t.shape[0] for t in ts]
    want = local_objective_grads(net, 0, xs, signals)
    for n, v in want.items():
        assert_close(custom[n], v, 1e-10, n)


def test_the_axes_are_checked() -> None:
    with pytest.raises(ValueError, match="trace must be one of"):
        TraceRule("full")
    with pytest.raises(ValueError, match="signal must be one of"):
        TraceRule("diagonal", "symmetric")
    with pytest.raises(ValueError, match="scale must be a positive float"):
        TraceRule(scale=0.0)
