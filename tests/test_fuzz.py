"""Property-based fuzzing (hypothesis): random sizes, cells and rules; malformed inputs.

- Well-formed: results are finite and of the right shapes, and the exact rules (RTRL; OSTL with
  one stateful layer, recurrence exact) equal BPTT in float64.
- Malformed: every bad input raises one of the library's own errors (ostl.OSTLError), never a
  crash deep inside torch.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ostl
from ostl.rules import BPTT, OSTL, RTRL

from .helpers import CELL_NAMES, make_net, mse, sequence

FUZZ = settings(
    max_examples=20, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
#: Every registered rule with its defaults, plus OSTL's exact trace (a code path of its own).
RULES = {**ostl.RULES, "ostl-exact": lambda: OSTL(recurrence="exact")}


sizes = st.integers(1, 5)


@FUZZ
@given(
    cell=st.sampled_from(CELL_NAMES),
    rule=st.sampled_from(sorted(RULES)),
    hidden=st.lists(sizes, min_size=1, max_size=2),
    n_in=sizes,
    n_out=st.integers(1, 3),
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    recurrent=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_networks_learn_finite_and_shaped(
    cell: str, rule: str, hidden: list[int], n_in: int, n_out: int, B: int, T: int,
    recurrent: bool, seed: int,
) -> None:  # fmt: skip
    if rule == "rtrl" and len(hidden) > 1:
        hidden = hidden[:1]  # keep the influence matrix small
    net = make_net(cell, [n_in, *hidden], recurrent, n_out=n_out, seed=seed)
    xs, ts = sequence(T, B, n_in, n_out, seed=seed + 1)
    grads = ostl.gradients(net, RULES[rule](), xs, ts, mse)
    params = dict(net.named_parameters())
    assert grads.keys() == {n for n, p in params.items() if p.requires_grad}
    for n, g in grads.items():
        assert g.shape == params[n].shape and torch.isfinite(g).all(), n
    learner = ostl.Learner(
        net, RULES[rule](), loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        update_every=None if rule == "bptt" else 1,
    )  # fmt: skip
    learner.reset(B)
    for t in range(T):
        y = learner.step(xs[t], ts[t])
        assert y.shape == (B, n_out) and torch.isfinite(y).all()
    learner.end_sequence()
    assert all(torch.isfinite(p).all() for p in net.parameters())


@FUZZ
@given(
    cell=st.sampled_from(CELL_NAMES),
    n_in=sizes,
    n=sizes,
    n_out=st.integers(1, 3),
    B=st.integers(1, 3),
    T=st.integers(1, 6),
    recurrent=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_rules_equal_bptt(
    cell: str, n_in: int, n: int, n_out: int, B: int, T: int, recurrent: bool, seed: int
) -> None:
    net = make_net(cell, [n_in, n], recurrent, n_out=n_out, seed=seed)
    xs, ts = sequence(T, B, n_in, n_out, seed=seed + 1)
    want = ostl.gradients(net, BPTT(), xs, ts, mse)
    for rule in (OSTL(recurrence="exact"), RTRL()):
        got = ostl.gradients(net, rule, xs, ts, mse)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-8, atol=1e-10, msg=f"{rule} {k}")


def _malformed() -> st.SearchStrategy[tuple[str, object]]:
    """(what, a bad x_t for a net with n_in=3, batch 2) pairs."""
    good = torch.rand(2, 3, dtype=torch.float64)
    bad_floats = st.sampled_from([float("nan"), float("inf"), -float("inf")])
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).filter(lambda s: s != [2, 3])
    return st.one_of(
        shapes.map(lambda s: ("shape", torch.rand(tuple(s), dtype=torch.float64))),
        st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]).map(
            lambda d: ("dtype", good.to(d))
        ),
        bad_floats.map(lambda v: ("nonfinite", good.clone().index_fill_(1, torch.tensor([1]), v))),
        st.sampled_from([None, 3.0, "x", [[0.0] * 3] * 2]).map(lambda v: ("type", v)),
    )


@FUZZ
@given(bad=_malformed(), rule=st.sampled_from(["bptt", "ostl", "osttp", "rtrl"]))
def test_malformed_inputs_raise_the_library_errors(bad: tuple[str, object], rule: str) -> None:
    what, x = bad
    net = make_net("lif", [3, 4], recurrent=True, n_out=2)
    learner = ostl.Learner(
        net, rule, loss_fn=mse, optimizer=torch.optim.SGD(net.parameters(), lr=0.1)
    )
    learner.reset(2)
    with pytest.raises(ostl.OSTLError):
        learner.step(x, torch.zeros(2, 2, dtype=torch.float64))  # type: ignore[arg-type]
    # a malformed target (x well-formed): wrong kind, non-finite, wrong batch or output size
    x_ok = torch.rand(2, 3, dtype=torch.float64)
    targets: list[object] = [torch.zeros(3, 2, dtype=torch.float64), torch.zeros(2, 3)]
    if what in ("nonfinite", "type") and x is not None:
        targets.append(x)
    for target in targets:
        learner.reset(2)
        with pytest.raises(ostl.OSTLError):
            learner.step(x_ok, target)


@FUZZ
@given(
    T=st.integers(1, 4),
    n_targets=st.integers(0, 6),
    batch=st.integers(1, 4),
    rule=st.sampled_from(["bptt", "ostl", "osttp"]),
)
def test_sequence_batch_mismatches_raise_the_library_errors(
    T: int, n_targets: int, batch: int, rule: str
) -> None:
    net = make_net("snu", [3, 4], recurrent=False, n_out=2)
    xs, ts = sequence(T, 2, 3, 2)
    targets = torch.zeros(n_targets, batch, 2, dtype=torch.float64)
    if n_targets == T and batch == 2:
        return  # well-formed
    with pytest.raises(ostl.OSTLError):
        ostl.gradients(net, rule, xs, targets, mse)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    cell=st.sampled_from(CELL_NAMES),
    rule=st.sampled_from(["bptt", "ostl", "osttp", "eprop", "snap", "dfa"]),
    hidden=st.lists(sizes, min_size=1, max_size=2),
    B=st.integers(1, 3),
    T=st.integers(2, 5),
    cut=st.integers(1, 9),
    recurrent=st.booleans(),
)
def test_resume_at_a_random_step_is_bit_identical(
    cell: str, rule: str, hidden: list[int], B: int, T: int, cut: int, recurrent: bool
) -> None:
    xs, ts = sequence(T, B, 3, 2, seed=cut)
    steps = [(k, t) for k in range(2) for t in range(T)]
    cut = min(cut, len(steps) - 1)

    def learner() -> ostl.Learner:
        net = make_net(cell, [3, *hidden], recurrent, n_out=2, seed=5)
        return ostl.Learner(
            net, RULES[rule](), loss_fn=mse, optimizer=torch.optim.Adam(net.parameters(), 1e-2),
            update_every=None if rule == "bptt" else 1,
        )  # fmt: skip

    def run(lrn: ostl.Learner, part: list[tuple[int, int]]) -> None:
        for _, t in part:
            if t == 0:
                lrn.reset(B)
            lrn.step(xs[t], ts[t] if t % 2 else None)
            if t == T - 1:
                lrn.end_sequence()

    full, first, second = learner(), learner(), learner()
    run(full, steps)
    run(first, steps[:cut])
    second.load_state_dict(first.state_dict())
    run(second, steps[cut:])
    for k, v in full.net.state_dict().items():
        assert torch.equal(v, second.net.state_dict()[k]), k
