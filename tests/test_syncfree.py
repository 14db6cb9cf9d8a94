"""Host synchronisations in ``Learner.step``: none between updates, one verdict per update
(none with ``nonfinite="skip"`` and the verdicts on the device), counted on the CPU with the
detector of benchmarks/sync_detector.py and, on a GPU, with CUDA's own sync debug mode."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from benchmarks.sync_detector import SyncDetector

import ostl
from ostl.engine.carry import finite_flags
from ostl.guard import Tally
from ostl.rules import BPTT, OSTL, RTRL, Rule, TraceRule

from .helpers import make_net, mse, sequence
from .registry import RULES_AND_VARIANTS

#: every trace rule, with the variants that take other code paths (exact traces, feedback)
TRACE_RULES = [r for r in RULES_AND_VARIANTS if isinstance(r, TraceRule)]
#: a spiking cell and a gated one
CELLS = ["lif", "lstm"]
EVERY = 3  # update_every: steps 2, 5, 8, ... update


def _learner(
    rule: Rule | str,
    cell: str = "lif",
    *,
    nonfinite: str = "raise",
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    update_every: int | None = EVERY,
    max_skips: int = 100,
) -> ostl.Learner:
    net = make_net(cell, [3, 4, 4], recurrent=True)
    opt = optimizer(net.parameters(), lr=0.01)
    return ostl.Learner(net, rule, loss_fn=mse, optimizer=opt, update_every=update_every,
                        nonfinite=nonfinite, max_skips=max_skips)  # fmt: skip


def _syncs_per_step(
    learner: ostl.Learner, T: int = 9, targets_at: Callable[[int], bool] = lambda t: t != 4
) -> list[list[str]]:
    """The syncs recorded in each of T steps (a target at the steps ``targets_at`` says)."""
    xs, ts = sequence(T, 2, 3)
    learner.reset(2)
    out = []
    for t in range(T):
        with SyncDetector() as d:
            learner.step(xs[t], ts[t] if targets_at(t) else None)
        out.append([str(s) for s in d.syncs])
    return out


def _update_steps(T: int = 9) -> list[int]:
    return [t for t in range(T) if (t + 1) % EVERY == 0]


# -- the detector ---------------------------------------------------------------------------
def test_the_detector_catches_each_kind_of_sync_and_only_those() -> None:
    t, mask = torch.tensor([1.5, -2.0]), torch.tensor([True, False])
    reads: list[tuple[str, Callable[[], object]]] = [
        ("item", lambda: t[0].item()),
        ("__float__", lambda: float(t[0])),
        ("__int__", lambda: int(t[0])),
        ("__bool__", lambda: 1 if t[0] > 0 else 0),
        ("tolist", lambda: t.tolist()),
        ("cpu", lambda: t.cpu()),
        ("__index__", lambda: [1, 2, 3][torch.tensor(1)]),
        ("nonzero", lambda: torch.nonzero(mask)),
        ("__getitem__ with a boolean mask", lambda: t[mask]),
        ("__format__", lambda: f"{t[0]:.2f}"),
        ("equal", lambda: torch.equal(t, t)),
        ("tensor(..., device=...) (a host-to-device copy)", lambda: torch.tensor(1.0, device="cpu")),  # noqa: E501
    ]  # fmt: skip
    for op, fn in reads:
        with SyncDetector() as d:
            fn()
        assert [s.op for s in d.syncs] == [op], (op, d.report())
        assert d.syncs[0].where().startswith(__file__), d.syncs[0].where()
    with SyncDetector() as d:  # device-side work: nothing to record
        ok = torch.isfinite(t).all()
        u = torch.where(ok, t * 2, t)[torch.tensor([0])] + t.sum()
        t[0:1].add_(torch.where(ok, 0.0, float("nan")))
    assert d.count() == 0 and u.shape == (1,), d.report()


def test_the_detector_fails_a_step_with_a_deliberate_item(monkeypatch: pytest.MonkeyPatch) -> None:
    learner = _learner("ostl")
    syncs = _syncs_per_step(learner)
    assert not any(syncs[t] for t in range(9) if t not in _update_steps())
    original = learner.runner.step

    def step_and_read(*args: object) -> torch.Tensor:
        y = original(*args)  # type: ignore[arg-type]
        _ = y.sum().item()  # what a careless loss log would do
        return y

    monkeypatch.setattr(learner.runner, "step", step_and_read)
    syncs = _syncs_per_step(learner)
    assert all(any("item at" in s and "step_and_read" in s for s in syncs[t]) for t in range(9))


# -- trace rules ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("rule", TRACE_RULES, ids=repr)
def test_trace_rules_sync_only_to_read_the_verdict_of_an_update(rule: Rule, cell: str) -> None:
    syncs = _syncs_per_step(_learner(rule, cell))
    for t, found in enumerate(syncs):
        if t in _update_steps():  # "raise" raises at the update: it reads its one verdict
            assert len(found) == 1 and "guard.py" in found[0], (t, found)
        else:
            assert found == [], (t, found)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("rule", TRACE_RULES, ids=repr)
def test_skip_with_verdicts_on_the_device_makes_no_sync_once_the_optimizer_has_state(
    rule: Rule, cell: str
) -> None:
    learner = _learner(rule, cell, nonfinite="skip")
    learner.guard_on_device = True  # the default on a GPU
    syncs = _syncs_per_step(learner, T=12)
    first = _update_steps()[0]  # Adam creates its state: decided on the host, one read
    assert len(syncs[first]) == 1 and "guard.py" in syncs[first][0], syncs[first]
    assert [s for t, s in enumerate(syncs) if t != first] == [[]] * 11, syncs
    assert learner.updates == 4 and learner.skipped == 0  # the counts, read back now


def test_sgd_without_state_is_decided_on_the_device_from_its_first_update() -> None:
    learner = _learner("ostl", nonfinite="skip", optimizer=torch.optim.SGD)
    learner.guard_on_device = True
    assert _syncs_per_step(learner) == [[]] * 9


def test_the_oracles_check_each_input_as_it_comes_only_under_raise() -> None:
    for rule in (BPTT(), RTRL()):
        raising = _syncs_per_step(_learner(rule, update_every=None))
        want = [2 if t != 4 else 1 for t in range(9)]  # x_t, and the target where there is one
        assert [len(s) for s in raising] == want, raising
        assert all("errors.py" in x and "all_finite" in x for s in raising for x in s), raising
        skipping = _learner(rule, nonfinite="skip", update_every=None)
        skipping.guard_on_device = True
        assert _syncs_per_step(skipping) == [[]] * 9
        with SyncDetector() as d:
            skipping.end_sequence()
        assert d.count() == 1  # Adam's first step (it creates its state), on the host


def test_max_skips_is_enforced_with_one_read_per_max_skips_updates() -> None:
    learner = _learner("ostl", nonfinite="skip", optimizer=torch.optim.SGD, update_every=1,
                       max_skips=4)  # fmt: skip
    learner.guard_on_device = True
    syncs = _syncs_per_step(learner, T=12, targets_at=lambda t: True)
    reads = [t for t, s in enumerate(syncs) if s]
    assert reads == [3, 7, 11] and all(len(syncs[t]) == 1 for t in reads), syncs
    assert all("guard.py" in syncs[t][0] and "in read" in syncs[t][0] for t in reads)


def test_finite_flags_tell_each_tensor_on_the_device_without_overflow() -> None:
    big = torch.full((4,), 3e38)  # finite, but its sum of squares overflows float32
    cases = [big, torch.ones(0), torch.ones(3, dtype=torch.float64), torch.arange(3)]
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = torch.ones(5)
        t[2] = bad
        cases.append(t)
    with SyncDetector() as d:
        flags = finite_flags(cases)
    assert d.count() == 0, d.report()
    assert flags.tolist() == [True, True, True, False, False, False]  # integers are left out


def test_the_tally_counts_verdicts_on_the_device_like_the_host() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        tally, want = Tally(), [0, 0, 0]
        for _ in range(30):
            ok = bool(torch.rand((), generator=gen) < 0.6)
            how = int(torch.randint(0, 3, (), generator=gen))  # on the device, or on the host
            if how == 0:
                tally.add(torch.tensor(ok))
            elif ok:
                tally.took()
            else:
                tally.skipped_one()
            want = [want[0] + ok, want[1] + (not ok), 0 if ok else want[2] + 1]
            assert tally.most_in_a_row() >= want[2]  # the bound that spares the reads
            if torch.rand((), generator=gen) < 0.2:
                assert tally.read() == want
        assert tally.read() == want and tally.unread == 0


def test_mean_loss_reads_back_once() -> None:
    learner = _learner("ostl")
    _syncs_per_step(learner)
    with SyncDetector() as d:
        loss = learner.mean_loss
    assert d.count() == 1 and loss > 0
    n = learner.runner.n_losses
    assert n == 8 and learner.runner.loss_sum == pytest.approx(loss * n)


# -- the device verdict gives the host's results ---------------------------------------------
def _snapshot(learner: ostl.Learner) -> dict[str, torch.Tensor]:
    out = {f"net.{k}": v.clone() for k, v in learner.net.state_dict().items()}
    for i, p in enumerate(learner.net.parameters()):
        for k, v in learner.optimizer.state.get(p, {}).items():
            out[f"opt.{i}.{k}"] = v.clone()
    out.update({f"runner.{k}": v.clone() for k, v in learner.runner.named_state()})
    return out


def _run(on_device: bool, poison: str, rule: Rule) -> tuple[list[object], list[dict]]:
    """A skip learner over 2 sequences with one fault; what it holds after each step."""

    def sgd(params: object, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)  # type: ignore[arg-type]

    learner = _learner(rule, "lif", nonfinite="skip", update_every=2, optimizer=sgd)
    learner.guard_on_device = on_device
    xs, ts = sequence(10, 2, 3)
    xs, ts = xs.clone(), ts.clone()
    if poison == "x":
        xs[3, 0, 1] = float("nan")
    elif poison == "target":
        ts[5, 1, 0] = float("inf")
    counts, states = [], []
    for _ in range(2):
        learner.reset(2)
        for t in range(10):
            if poison == "lr":  # an infinite rate at step 5: that update makes the weights Inf
                learner.optimizer.param_groups[0]["lr"] = float("inf") if t == 5 else 0.01
            learner.step(xs[t], ts[t])
            counts.append((learner.updates, learner.skipped, learner.skips_in_a_row))
            states.append(_snapshot(learner))
        learner.end_sequence()
    return counts, states


@pytest.mark.parametrize("poison", ["x", "target", "lr"])
@pytest.mark.parametrize("rule", [OSTL(), OSTL(recurrence="exact"), BPTT()], ids=repr)
def test_verdicts_on_the_device_give_the_weights_and_counts_of_the_host(
    poison: str, rule: Rule
) -> None:
    host_counts, host_states = _run(False, poison, rule)
    dev_counts, dev_states = _run(True, poison, rule)
    assert host_counts == dev_counts
    assert host_counts[-1][1] >= 1  # the fault did make a skip: the test is not vacuous
    for t, (a, b) in enumerate(zip(host_states, dev_states)):
        assert a.keys() == b.keys(), t
        for k, v in a.items():
            torch.testing.assert_close(b[k], v, rtol=0, atol=0, equal_nan=True, msg=f"{t} {k}")


def test_a_dead_learner_raises_the_same_error_with_verdicts_on_the_device() -> None:
    messages = []
    for on_device in (False, True):
        learner = _learner("ostl", nonfinite="skip", optimizer=torch.optim.SGD, update_every=1,
                           max_skips=5)  # fmt: skip
        learner.guard_on_device = on_device
        xs, ts = sequence(20, 2, 3)
        learner.reset(2)
        learner.step(xs[0], ts[0])
        learner.optimizer.param_groups[0]["lr"] = 1e308  # gradients ~1e10: the weights overflow
        with pytest.raises(ostl.NonFiniteError, match="5 updates in a row") as e:
            for t in range(1, 20):
                learner.step(xs[t], ts[t] * 1e10)
        messages.append((str(e.value), learner.steps, learner.updates, learner.skipped))
    assert messages[0] == messages[1]
    assert messages[0][1:] == (6, 1, 5) and "made layers" in messages[0][0]


# -- on a GPU -----------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("rule", ["ostl", "osttp", "eprop", "snap", "dfa"])
def test_no_step_synchronises_on_cuda(rule: str) -> None:
    xs, ts = (t.cuda() for t in sequence(16, 2, 3))
    for cell in CELLS:
        net = make_net(cell, [3, 4, 4], recurrent=True).cuda()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)  # state on the device
        learner = ostl.Learner(net, rule, loss_fn=mse, optimizer=opt, update_every=2,
                               nonfinite="skip")  # fmt: skip
        learner.reset(2)
        for t in range(4):  # the first update creates the momentum: read on the host
            learner.step(xs[t], ts[t])
        bad = xs[9].clone()
        bad[0, 0] = float("nan")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for t in range(4, 16):
                learner.step(bad if t == 9 else xs[t], ts[t] if t != 6 else None)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert learner.skipped == 1 and learner.updates == 7  # read back after the run
        assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("rule", ["ostl", "osttp", "eprop", "snap", "dfa"])
def test_steps_between_updates_do_not_synchronise_on_cuda_under_raise(rule: str) -> None:
    xs, ts = (t.cuda() for t in sequence(12, 2, 3))
    for cell in CELLS:
        net = make_net(cell, [3, 4, 4], recurrent=True).cuda()
        learner = ostl.Learner(net, rule, loss_fn=mse, update_every=4,
                               optimizer=torch.optim.Adam(net.parameters()))  # fmt: skip
        learner.reset(2)
        for t in range(12):
            if (t + 1) % 4:  # not an update: no sync allowed
                torch.cuda.set_sync_debug_mode("error")
            try:
                learner.step(xs[t], ts[t])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert learner.updates == 3
