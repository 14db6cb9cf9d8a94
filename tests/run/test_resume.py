"""Resume equivalence: a learner interrupted at any step and restored from its state_dict (via
a checkpoint file) ends with bit-identical weights to the uninterrupted learner."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest
import torch

import ostl
from ostl.errors import CheckpointError
from ostl.rules import BPTT, OSTL, OSTTP
from ostl.run.checkpoint import load_checkpoint, save_checkpoint

from ..helpers import make_net, mse, sequence

RULES = {
    "bptt": lambda: BPTT(),
    "bptt-truncated": lambda: BPTT(truncation=3),
    "ostl": lambda: OSTL(),
    "ostl-exact": lambda: OSTL(recurrence="exact"),
    "ostl-rnd": lambda: OSTL(feedback="random", seed=3),
    "osttp": lambda: OSTTP(seed=2),
    "rtrl": lambda: ostl.rules.RTRL(),
    "eprop": lambda: ostl.rules.EProp(feedback="random"),
    "snap": lambda: ostl.rules.SnAp(),
    "dfa": lambda: ostl.rules.DFA(),
}
T, B, SEQS = 6, 3, 2


def _learner(rule_name: str, cell: str, update_every: int | None) -> ostl.Learner:
    net = make_net(cell, [4, 5, 5], recurrent=True, n_out=2, seed=4)
    return ostl.Learner(
        net,
        RULES[rule_name](),
        loss_fn=mse,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-2),
        update_every=update_every,
    )


def _stream() -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for k in range(SEQS):
        xs, ts = sequence(T, B, 4, 2, seed=10 + k)
        ts[::2] = float("nan")  # a target at odd steps only: marked, replaced by None below
        out.append((xs, ts))
    return out


def _run(learner: ostl.Learner, start: int = 0, stop: int | None = None) -> None:
    """Global steps [start, stop) of the stream: SEQS sequences of T steps."""
    for g in range(start, SEQS * T if stop is None else stop):
        k, t = divmod(g, T)
        xs, ts = _stream()[k]
        if t == 0:
            learner.reset(B)
        tgt = None if torch.isnan(ts[t]).any() else ts[t]
        learner.step(xs[t], tgt)
        if t == T - 1:
            learner.end_sequence()


def _weights(learner: ostl.Learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.net.state_dict().items()}


@pytest.mark.parametrize("rule", list(RULES))
def test_interrupted_and_resumed_is_bit_identical(rule: str, tmp_path: Path) -> None:
    update_every = None if rule.startswith("bptt") else 1
    cell = "lif" if rule in ("eprop", "snap") else "snu"
    if rule == "ostl-exact":
        cell = "lstm"
    full = _learner(rule, cell, update_every)
    _run(full)
    rng = random.Random(zlib.crc32(rule.encode()))
    for stop in sorted({rng.randrange(1, SEQS * T), T + 2}):
        first = _learner(rule, cell, update_every)
        _run(first, 0, stop)
        save_checkpoint(tmp_path, {"learner": first.state_dict()}, step=stop)
        del first
        resumed = _learner(rule, cell, update_every)
        torch.manual_seed(123)  # nothing may depend on the global RNG
        resumed.load_state_dict(load_checkpoint(tmp_path)["learner"])
        _run(resumed, stop)
        a, b = _weights(full), _weights(resumed)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{rule}: {k} differs after resuming at step {stop}"
        assert resumed.updates == full.updates and resumed.steps == full.steps


def test_learner_state_of_another_setup_is_refused() -> None:
    a = _learner("ostl", "snu", 1)
    b = _learner("ostl", "snu", None)
    with pytest.raises(CheckpointError, match="update_every"):
        b.load_state_dict(a.state_dict())
    c = _learner("osttp", "snu", 1)
    with pytest.raises(CheckpointError, match="rule"):
        c.load_state_dict(a.state_dict())
    with pytest.raises(CheckpointError, match="Learner state_dict"):
        c.load_state_dict({"weights": 1})


def test_every_registered_rule_is_covered() -> None:
    assert {type(make()) for make in RULES.values()} == set(ostl.RULES.values())


@pytest.mark.parametrize("rule", ["bptt", "ostl", "osttp"])
def test_state_dict_is_a_snapshot_unaffected_by_later_steps(rule: str) -> None:
    update_every = None if rule == "bptt" else 1
    full = _learner(rule, "snu", update_every)
    _run(full)
    first = _learner(rule, "snu", update_every)
    _run(first, 0, 8)
    sd = first.state_dict()
    _run(first, 8)  # keeps training: the snapshot must not change
    resumed = _learner(rule, "snu", update_every)
    resumed.load_state_dict(sd)
    _run(resumed, 8)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
