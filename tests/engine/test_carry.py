"""The carry: one generic checkpoint round trip for every rule, memory accounting, errors."""

from __future__ import annotations

import io

import pytest
import torch

import ostl
from ostl.engine import carry as tree
from ostl.rules import BPTT, OSTL, OSTTP, Rule, TraceRule

from ..helpers import make_net, mse, sequence
from ..registry import RULES_AND_VARIANTS, missing_rules

#: Every registered rule and its variants (tests/registry.py), and combinations whose carries
#: differ: a trace kind with another signal, half-precision traces.
RULES: list[Rule] = [
    *RULES_AND_VARIANTS,
    TraceRule("snap1", "target"),
    OSTL(trace_dtype=torch.bfloat16),
]


def test_every_registered_rule_is_resumed() -> None:
    assert not missing_rules(RULES), "add these to RULES_AND_VARIANTS in tests/registry.py"


@pytest.mark.parametrize("rule", RULES, ids=repr)
@pytest.mark.parametrize("cell", ["lif", "alif", "lstm"])
def test_a_saved_carry_continues_exactly(rule: Rule, cell: str) -> None:
    """Stop mid-sequence, save through torch.save (weights_only load), restore into a fresh
    runner: the rest of the sequence gives bit-identical outputs and gradients."""
    net = make_net(cell, [3, 4, 3], recurrent=True)
    xs, ts = sequence(10, 2, 3)
    targets = [t if i % 2 else None for i, t in enumerate(ts)]
    runner = rule.bind(net)
    runner.reset(2)
    for t in range(6):
        runner.step(xs[t], targets[t], mse)
    buf = io.BytesIO()
    torch.save(runner.state_dict(), buf)
    ys = [runner.step(xs[t], targets[t], mse) for t in range(6, 10)]
    runner.flush()

    other = rule.bind(net)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True), mse)
    assert other.steps == 6
    for t in range(6, 10):
        assert torch.equal(other.step(xs[t], targets[t], mse), ys[t - 6])
    other.flush()
    for n, g in runner.grads.items():
        assert torch.equal(other.grads[n], g), n
    assert max(float(g.norm()) for g in runner.grads.values()) > 0
    assert other.loss_sum == runner.loss_sum and other.n_losses == runner.n_losses == 5


def test_a_carry_of_another_network_is_refused_by_name() -> None:
    runner = OSTL().bind(make_net("lif", [3, 4], recurrent=True))
    runner.reset(2)
    saved = runner.state_dict()
    other = OSTL().bind(make_net("lif", [3, 5], recurrent=True))
    with pytest.raises(
        ostl.CheckpointError, match=r"layers\.0\.W: expected a tensor of shape \(5, 3\)"
    ):
        other.load_state_dict(saved)
    with pytest.raises(ostl.CheckpointError, match="expected rule 'ostl'"):
        OSTL().bind(make_net("lif", [3, 4], recurrent=True)).load_state_dict({"rule": "bptt"})


def test_state_bytes_counts_everything_the_rule_holds() -> None:
    """Online rules: flat in T. BPTT: its open window grows (it is part of the carry)."""
    net = make_net("lif", [3, 4], recurrent=True)
    xs, ts = sequence(20, 2, 3)
    for rule, grows in ((OSTL(), False), (OSTTP(), False), (BPTT(), True)):
        runner = rule.bind(net)
        runner.reset(2)
        sizes = []
        for t in range(20):
            runner.step(xs[t], ts[t], mse)
            sizes.append(runner.state_bytes())
        assert (sizes[-1] > sizes[1]) == grows, (rule, sizes[1], sizes[-1])
        names = [n for n, _ in runner.named_state()]
        assert any(n.startswith("carry.stats") for n in names)


def test_pack_and_unpack_walk_any_tree() -> None:
    from typing import NamedTuple

    class P(NamedTuple):
        a: torch.Tensor
        b: dict[str, torch.Tensor]
        c: tuple[torch.Tensor | None, ...]

    x = P(torch.ones(2), {"k": torch.zeros(3)}, (None, torch.arange(4.0)))
    packed = tree.pack(x)
    assert packed == {"a": packed["a"], "b": {"k": packed["b"]["k"]}, "c": [None, packed["c"][1]]}
    back = tree.unpack(x, packed)
    assert isinstance(back, P) and torch.equal(back.c[1], x.c[1]) and back.c[0] is None
    assert [n for n, _ in tree.named_tensors(x)] == ["a", "b.k", "c.1"]
    with pytest.raises(ostl.CheckpointError, match=r"carry\.b: expected the entries \['k'\]"):
        tree.unpack(x, {**packed, "b": {}})
