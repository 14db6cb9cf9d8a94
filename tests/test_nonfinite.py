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


def _state(learner: ostl.Learner) -> dict[str, torch.Tensor]:
    """Weights and optimizer state tensors, cloned."""
    out = {f"net.{k}": v.detach().clone() for k, v in learner.net.state_dict().items()}
    for i, p in enumerate(learner.net.parameters()):
        for k, v in learner.optimizer.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                out[f"opt.{i}.{k}"] = v.clone()
    return out


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def _huge_step_learner(nonfinite: str, max_skips: int = 100) -> ostl.Learner:
    """float32, SGD with momentum: two good updates, then lr=1e30 (the next step overflows)."""
    net = make_net("lif", [3, 4], recurrent=True).float()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    learner = ostl.Learner(net, "ostl", loss_fn=mse, optimizer=opt, nonfinite=nonfinite,
                           max_skips=max_skips)  # fmt: skip
    xs, ts = sequence(2, 2, 3)
    learner.reset(2)
    for t in range(2):
        learner.step(xs[t].float(), ts[t].float())
    assert learner.updates == 2
    opt.param_groups[0]["lr"] = 1e30
    return learner


def test_a_step_that_makes_the_weights_non_finite_is_undone_and_raised() -> None:
    learner = _huge_step_learner("raise")
    before = _state(learner)
    assert any(k.endswith("momentum_buffer") for k in before)
    x, t = torch.rand(2, 3), torch.full((2, 2), 1e10)  # grads ~1e10: 1e10 x 1e30 is Inf
    with pytest.raises(ostl.NonFiniteError, match=r"optimizer step at step 3 \(update 3\) made "
                       r"layers\.0\.W, .* non-finite .*lr=1e\+30") as e:  # fmt: skip
        learner.step(x, t)
    assert "The weights were not updated" in str(e.value)
    _assert_same(_state(learner), before)  # weights and momentum exactly as before the step
    assert learner.updates == 2


def test_skip_undoes_such_steps_and_a_dead_learner_raises() -> None:
    learner = _huge_step_learner("skip", max_skips=5)
    before = _state(learner)
    x, t = torch.rand(2, 3), torch.full((2, 2), 1e10)
    for _ in range(4):
        learner.step(x, t)
    assert learner.skipped == 4 and learner.updates == 2
    _assert_same(_state(learner), before)
    with pytest.raises(ostl.NonFiniteError, match=r"5 updates in a row were skipped.*made "
                       r"layers\.0\.W, .* non-finite.*not learning"):  # fmt: skip
        learner.step(x, t)
    learner.optimizer.param_groups[0]["lr"] = 0.01  # a sane rate: updates are taken again
    learner.step(x, torch.zeros(2, 2))
    assert learner.updates == 3 and learner.skips_in_a_row == 0
    assert learner.state_dict()["skips_in_a_row"] == 0


def test_an_optimizer_step_that_overflows_is_an_ostl_error() -> None:
    net = make_net("lif", [3, 4], recurrent=True).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e38)  # lr / (1 - beta1) overflows float32
    for policy in ("raise", "skip"):
        learner = ostl.Learner(net, "ostl", loss_fn=mse, optimizer=opt, nonfinite=policy)
        before = _state(learner)
        xs, ts = sequence(1, 2, 3)
        learner.reset(2)
        with pytest.raises(ostl.NonFiniteError, match=r"optimizer step at step 1 \(update 1\) "
                           r"failed: value cannot be converted.*lr=1e\+38"):  # fmt: skip
            learner.step(xs[0].float(), ts[0].float())
        _assert_same(_state(learner), before)  # the moments it had written are undone too
        assert not opt.state


def test_the_cli_reports_an_overflowing_learning_rate_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ostl.run.cli import main

    from .run.test_cli import TINY

    assert main(["train", *TINY, "--lr", "1e38", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: the optimizer step at step 1 (update 1) failed: value cannot be" in err


def _unlocked(nonfinite: str) -> ostl.Learner:
    net = make_net("snu", [3, 4, 4], recurrent=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return ostl.Learner(net, "osttp", loss_fn=mse, optimizer=opt, unlocked=True,
                        nonfinite=nonfinite)  # fmt: skip


@pytest.mark.parametrize("where", ["x_t", "target_t"])
def test_unlocked_skip_updates_no_layer_at_a_bad_step_and_counts_one_skip(where: str) -> None:
    learner = _unlocked("skip")
    xs, ts = sequence(30, 2, 3)
    (xs if where == "x_t" else ts)[20, 0, 0] = float("nan")
    learner.reset(2)
    for t in range(30):
        before = _state(learner)
        learner.step(xs[t], ts[t])
        if t == 20:
            _assert_same(_state(learner), before)  # no layer, not even the lowest, moved
            assert learner.skipped == 1
    assert learner.skipped == 1  # the poisoned stream was restarted: no skip after it
    assert learner.updates == 29
    for p in learner.net.parameters():
        assert torch.isfinite(p).all()


def test_unlocked_raise_names_the_input_and_updates_no_layer() -> None:
    learner = _unlocked("raise")
    xs, ts = sequence(6, 2, 3)
    xs[3, 1, 2] = float("inf")
    learner.reset(2)
    for t in range(3):
        learner.step(xs[t], ts[t])
    before = _state(learner)
    with pytest.raises(ostl.NonFiniteError, match="x_t at step 3 of the sequence"):
        learner.step(xs[3], ts[3])
    _assert_same(_state(learner), before)
    assert learner.updates == 3


def _poisoned_learner_state(key: str) -> tuple[ostl.Learner, dict[str, object]]:
    net = make_net("snu", [3, 4], recurrent=True)
    opt = torch.optim.Adam(net.parameters())
    learner = ostl.Learner(net, "osttp", loss_fn=mse, optimizer=opt)
    xs, ts = sequence(3, 2, 3)
    learner.reset(2)
    for t in range(3):
        learner.step(xs[t], ts[t])
    state = learner.state_dict()
    if key == "net":
        state["net"]["layers.0.W"][0, 0] = float("nan")
    else:
        state["optimizer"]["state"][1]["exp_avg_sq"][0] = float("inf")
    return learner, state


@pytest.mark.parametrize(
    ("key", "named"), [("net", "net.layers.0.W"), ("optimizer", "optimizer.state.1.exp_avg_sq")]
)
def test_a_checkpoint_with_nan_or_inf_is_refused_on_load(
    tmp_path: Path, key: str, named: str
) -> None:
    from ostl.run.checkpoint import save_checkpoint

    learner, state = _poisoned_learner_state(key)
    before = _state(learner)
    with pytest.raises(ostl.CheckpointError, match=f"NaN or Inf in {named}"):
        learner.load_state_dict(state)
    _assert_same(_state(learner), before)  # nothing was loaded
    path = save_checkpoint(tmp_path, {"learner": state}, step=1, require_finite=False)
    with pytest.raises(ostl.CheckpointError, match=f"NaN or Inf in learner.{named}") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    assert load_checkpoint(path, require_finite=False)["learner"]["steps"] == 3
    good = save_checkpoint(tmp_path, {"learner": learner.state_dict()}, step=0)
    with pytest.warns(UserWarning, match="holds NaN or Inf"):  # the folder: the good one
        assert load_checkpoint(tmp_path)["learner"]["steps"] == 3
    assert good.exists()
