"""The contract every rule keeps: every cell, compare_to_bptt, online learning in the Learner."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import ostl
from ostl.rules import BPTT, DFA, OSTL, OSTTP, RTRL, EProp, Rule, SnAp, get_rule

from ..registry import RULES_AND_VARIANTS, missing_rules
from .oracles import ALL_CELLS, assert_fires, mse, net_for, sequence

#: Every registered rule with its default options (checked below), plus the variants with
#: other code paths: the table is tests/registry.py's, shared with tests/engine/test_carry.py.
RULES: list[Rule] = RULES_AND_VARIANTS

#: Exact for one stateful layer without H under a Readout (docs/theory.md).
EXACT_SHALLOW = {
    repr(r) for r in (BPTT(), RTRL(), OSTL(), OSTL(recurrence="exact"), EProp(), SnAp())
}


def test_registry_names_every_rule() -> None:
    assert set(ostl.RULES) >= {"bptt", "rtrl", "ostl", "osttp", "eprop", "snap", "dfa"}
    for name, cls in ostl.RULES.items():
        assert isinstance(get_rule(name), cls) and cls.name == name
    assert ostl.OSTTP is OSTTP and ostl.EProp is EProp and ostl.SnAp is SnAp and ostl.DFA is DFA
    # the contract covers them all, and only registered rules
    assert not missing_rules(RULES), "add these to RULES_AND_VARIANTS in tests/registry.py"
    assert {type(r) for r in RULES} == set(ostl.RULES.values())


@pytest.mark.parametrize("cell", ALL_CELLS)
@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_every_rule_runs_with_every_cell(rule: Rule, cell: str) -> None:
    """Two recurrent layers of the cell + Readout: finite, non-zero gradients for every
    parameter, keyed and shaped like named_parameters()."""
    net = net_for(cell, [3, 4, 3], recurrent=True)
    xs, ts = sequence(8, 2, 3)
    assert_fires(net, xs, cell)
    g = ostl.gradients(net, rule, xs, ts, mse)
    params = dict(net.named_parameters())
    assert set(g) == set(params)
    for name, v in g.items():
        assert v.shape == params[name].shape and v.dtype == params[name].dtype, name
        assert bool(torch.isfinite(v).all()), name
        assert float(v.norm()) > 0, f"{name}: zero gradient"


def _mixed_net() -> ostl.Network:
    """Different cells, a memoryless layer in the middle, a stateful output layer."""
    torch.manual_seed(0)
    net = ostl.Network(
        [
            ostl.Layer(3, 5, "lif", recurrent=True),
            ostl.Readout(5, 4),
            ostl.Layer(4, 4, "lstm"),
            ostl.Layer(4, 2, "gru", recurrent=True),
        ]
    ).double()
    with torch.no_grad():
        net.layers[0].W.mul_(2.5)  # so that the LIF layer fires
    return net


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_every_rule_runs_on_a_mixed_network_or_says_why_not(rule: Rule) -> None:
    net = _mixed_net()
    xs, ts = sequence(8, 2, 3)
    if isinstance(rule, EProp):
        with pytest.raises(ostl.UnsupportedError, match="must end with an ostl.Readout"):
            ostl.gradients(net, rule, xs, ts, mse)
        return
    g = ostl.gradients(net, rule, xs, ts, mse)
    assert all(bool(torch.isfinite(v).all()) for v in g.values())
    assert all(float(g[f"layers.{i}.W"].norm()) > 0 for i in range(4))


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_compare_to_bptt_works_for_every_rule(rule: Rule) -> None:
    net = net_for("alif", [3, 5], recurrent=False)
    xs, ts = sequence(10, 2, 3)
    rep = ostl.compare_to_bptt(net, rule, xs, ts, mse)
    assert [r.name for r in rep.rows] == [n for n, _ in net.named_parameters()]
    for r in rep.rows:
        assert -1 - 1e-12 <= r.cosine <= 1 + 1e-12 and r.relative_error >= 0
    # the Readout learns from its true error under every rule (memoryless: exact)
    assert rep["layers.1.W"].relative_error < 1e-12, rep.table()
    assert repr(rule) in rep.table()
    # one stateful layer without H: the rules with an exact trace and true signal are exact
    if repr(rule) in EXACT_SHALLOW:
        assert rep.max_relative_error < 1e-10, rep.table()
    else:
        assert rep.max_relative_error > 1e-6, rep.table()


# -- online learning -----------------------------------------------------------------------------
def _task(T: int = 20, B: int = 4) -> tuple[Tensor, Tensor]:
    """Sparse input spikes; targets are smooth functions of their low-pass filtered history."""
    g = torch.Generator().manual_seed(0)
    xs = (torch.rand(T, B, 4, generator=g, dtype=torch.float64) < 0.3).double() * 2
    f = torch.zeros(B, 4, dtype=torch.float64)
    ts = []
    for x in xs:
        f = 0.8 * f + 0.2 * x
        ts.append(torch.stack([f[:, 0] - f[:, 1], f[:, 2] + f[:, 3] - 0.5], -1))
    return xs, torch.stack(ts)


def _task_net(cell: str, freeze_hidden: bool = False) -> ostl.Network:
    torch.manual_seed(0)
    net = ostl.Network(
        [
            ostl.Layer(4, 12, cell, recurrent=True),
            ostl.Layer(12, 12, cell, recurrent=True),
            ostl.Readout(12, 2),
        ]
    ).double()
    if freeze_hidden:
        for p in net.layers[:-1].parameters():
            p.requires_grad_(False)
    return net


def _train(net: ostl.Network, rule: Rule, epochs: int, lr: float = 0.01) -> list[float]:
    params = [p for p in net.parameters() if p.requires_grad]
    learner = ostl.Learner(
        net, rule, loss_fn=mse, optimizer=torch.optim.Adam(params, lr=lr), update_every=1
    )
    xs, ts = _task()
    losses = []
    for _ in range(epochs):
        learner.reset(xs.shape[1])
        for x, t in zip(xs, ts):
            learner.step(x, t)
        learner.end_sequence()
        losses.append(learner.mean_loss)
    assert learner.updates == epochs * xs.shape[0]
    return losses


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_every_rule_reduces_the_loss_online(rule: Rule) -> None:
    """update_every=1 on a small synthetic stream: two recurrent LIF layers + Readout."""
    losses = _train(_task_net("lif"), rule, epochs=8)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lif", "alif"])
@pytest.mark.parametrize("rule", [OSTTP(), DFA(), EProp(), OSTL(feedback="random")], ids=repr)
def test_hidden_layers_learn_beyond_the_readout(cell: str, rule: Rule) -> None:
    """Longer online training: the rule's hidden updates beat training the readout alone."""
    readout_only = _train(_task_net(cell, freeze_hidden=True), OSTL(), epochs=40)[-1]
    full = _train(_task_net(cell), rule, epochs=40)[-1]
    assert full < 0.8 * readout_only, (full, readout_only)


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_no_rule_keeps_anything_per_time_step(rule: Rule) -> None:
    """What a rule holds (state, traces, gradients, fixed matrices) does not grow with T."""
    net = net_for("alif", [3, 4, 3], recurrent=True)
    learner = ostl.Learner(
        net, rule, loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), lr=1e-3)
    )
    xs, ts = sequence(40, 2, 3)
    learner.reset(2)
    held = []
    for i, (x, t) in enumerate(zip(xs, ts)):
        learner.step(x, t)
        if i in (9, 39):
            held.append(learner.state_bytes())
    assert held[0] == held[1] > 0
