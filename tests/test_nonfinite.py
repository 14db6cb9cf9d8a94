"""Numerical guards: NaN/Inf is raised with the step and tensor named, or the update skipped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ostl
from ostl.rules import BPTT, OSTL, OSTTP
from ostl.run.checkpoint import list_checkpoints, load_checkpoint

from .helpers import make_net, mse, sequence


def _learner(rule: object, nonfinite: str = "raise", update_every: int | None = 1) -> ostl.Learner:
    net = make_net("snu", [3, 4], recurrent=True)
    return ostl.Learner(
        net,
        rule,  # type: ignore[arg-type]
        loss_fn=mse,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        update_every=update_every,
        nonfinite=nonfinite,
    )


def test_the_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        _learner(OSTL(), nonfinite="ignore")
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        ostl.Learner(make_net("snu", [3, 4], False), "ostl", loss_fn=mse, optimizer="adam")  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", [BPTT(), OSTL(), OSTTP()])
def test_raise_names_the_tensor_and_the_step(rule: ostl.rules.Rule) -> None:
    xs, ts = sequence(6, 2, 3)
    for where, tensor in [("x_t", xs), ("target_t", ts)]:
        learner = _learner(rule, update_every=None if isinstance(rule, BPTT) else 1)
        before = {k: v.clone() for k, v in learner.net.state_dict().items()}
        tensor = tensor.clone()
        tensor[3, 0, 0] = float("nan")
        learner.reset(2)
        a, b = (tensor, ts) if where == "x_t" else (xs, tensor)
        with pytest.raises(ostl.NonFiniteError, match=f"{where} at step 3 of the sequence"):
            for t in range(6):
                learner.step(a[t], b[t])
        # no update was made from the poisoned step
        assert learner.updates == (3 if not isinstance(rule, BPTT) else 0)
        if isinstance(rule, BPTT):
            for k, v in learner.net.state_dict().items():
                assert torch.equal(v, before[k])


def test_a_non_finite_learning_signal_is_named() -> None:
    learner = _learner(OSTL())
    learner.reset(2)
    xs, ts = sequence(4, 2, 3)

    def bad_loss(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (y.sqrt() * 0 + (y - t) ** 2).mean() if y.min() < 0 else mse(y, t)

    learner.loss_fn = bad_loss
    learner.net.layers[-1].b.data.fill_(-10.0)  # negative outputs: sqrt gives NaN gradients
    with pytest.raises(ostl.NonFiniteError, match="learning signal dE_t/dy_t at step 0"):
        learner.step(xs[0], ts[0])


def test_a_poisoned_trace_raises_at_the_update_naming_it() -> None:
    learner = _learner(OSTL(), update_every=None)
    learner.reset(2)
    xs, ts = sequence(4, 2, 3)
    learner.step(xs[0], ts[0])
    trace = learner.runner.traces[0]
    assert trace is not None
    next(iter(trace.eps.values())).view(-1)[0] = float("inf")
    learner.step(xs[1], ts[1])
    with pytest.raises(ostl.NonFiniteError, match=r"non-finite gradient at step 2.*traces\.0"):
        learner.end_sequence()
    assert learner.updates == 0


@pytest.mark.parametrize("rule", [BPTT(), OSTL(), OSTTP()])
def test_skip_counts_and_keeps_the_weights_finite(rule: ostl.rules.Rule) -> None:
    update_every = None if isinstance(rule, BPTT) else 1
    learner = _learner(rule, "skip", update_every)
    xs, ts = sequence(6, 2, 3)
    xs[2, 0, 1] = float("nan")
    for _ in range(2):
        learner.reset(2)
        for t in range(6):
            learner.step(xs[t], ts[t])
        learner.end_sequence()
    assert learner.skipped >= 1
    for p in learner.net.parameters():
        assert torch.isfinite(p).all()
    if not isinstance(rule, BPTT):  # the stream was restarted: the next steps update again
        assert learner.updates == 12 - learner.skipped and learner.skipped == 2


def test_train_skip_writes_no_poisoned_checkpoint(tmp_path: Path) -> None:
    from ostl.run.train import TrainConfig, train
    from ostl.tasks import get_task

    from .run.test_resume_train import TINY

    task = get_task("digits", **TINY.task_options)
    original = task.train_batches

    def poisoned(batch_size: int, gen: torch.Generator):  # type: ignore[no-untyped-def]
        for i, b in enumerate(original(batch_size, gen)):
            if i == 1:
                xs = b.xs.clone()
                xs[2, 0, 0] = float("nan")
                b = b._replace(xs=xs)
            yield b

    task.train_batches = poisoned  # type: ignore[method-assign]
    cfg = replace(TINY, nonfinite="skip", epochs=1)
    result = train(cfg, tmp_path / "run", progress=False, task=task, checkpoint_every=2)
    assert result.skipped_updates >= 1
    for path in list_checkpoints(tmp_path / "run" / "checkpoints"):
        for v in load_checkpoint(path)["learner"]["net"].values():
            assert torch.isfinite(v).all()
    with pytest.raises(ostl.NonFiniteError, match="x_t at step 2"):
        train(replace(cfg, nonfinite="raise"), tmp_path / "r2", progress=False, task=task,
              checkpoint_every=2)  # fmt: skip
    assert isinstance(TrainConfig, type)


def test_all_finite_fast_path_and_its_overflow_fallback() -> None:
    from ostl.errors import all_finite

    big = torch.full((4,), 3e38)  # finite, but its float32 sum overflows to inf
    assert all_finite([big, torch.ones(3, dtype=torch.float64)])
    assert all_finite([torch.arange(3)])  # integers are never non-finite
    assert all_finite([])
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = torch.ones(5)
        t[2] = bad
        assert not all_finite([torch.ones(2), t])
        assert not all_finite(iter([big, t]))  # a generator is read once, the fallback too
    both = torch.tensor([float("inf"), float("-inf")])  # their sum is nan: still caught
    assert not all_finite([both])
