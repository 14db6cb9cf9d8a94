"""Prequential evaluation: test then train, no resets, recovery times, memory, interrupts."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from benchmarks.sync_detector import SyncDetector
from torch import Tensor

from ostl.errors import OptionError
from ostl.learner import Learner
from ostl.rules import BPTT, OSTL
from ostl.streams.learners import DEFAULT_STREAM_RULES, FullBPTTError, stream_rule
from ostl.streams.prequential import Prequential, prequential
from ostl.streams.recovery import cumulative_mean, recovery_times, windowed_mean

from .sine import Sine


def _learner(stream: Sine, spec: str, lr: float = 1e-2, sgd: bool = False) -> Learner:
    rule, every = stream_rule(spec)
    net = stream.network(hidden=(4,), seed=0)
    opt = (torch.optim.SGD if sgd else torch.optim.Adam)(net.parameters(), lr=lr)
    return Learner(net, rule, loss_fn=stream.loss_fn, optimizer=opt, update_every=every)


# -- the test-then-train contract -----------------------------------------------------------
@pytest.mark.parametrize("spec", ["ostl", "osttp", "tbptt-3"])
def test_each_prediction_comes_from_the_weights_before_that_steps_update(spec: str) -> None:
    """y_t equals net.step(x_t, state) run by hand under the weights held before step t (a
    snapshot after every step); with a large step size the weights after step t's update
    predict something else, so an update before the forward pass would show."""
    stream = Sine(steps=40)
    learner = _learner(stream, spec, lr=0.3)
    before = copy.deepcopy(learner.net)  # the weights before the next step
    state = before.init_state(1)
    gaps: list[float] = []

    def check(t: int, x: Tensor, y: Tensor, target: Any) -> None:
        nonlocal before, state
        with torch.no_grad():
            prev = state
            expected, state = before.step(x, state)
            after, _ = learner.net.step(x, prev)  # the weights after step t's update
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        gaps.append(float((after - y).abs().max()))
        before = copy.deepcopy(learner.net)

    result = prequential(stream, learner, window=10, on_step=check)
    assert result.steps == 40 and learner.updates == (40 if spec != "tbptt-3" else 13)
    assert max(gaps) > 1e-2  # the negative control: the updated weights predict otherwise
    assert result.errors.dtype == np.float32 and not np.isnan(result.errors).any()


def test_scores_are_the_streams_error_of_each_prediction() -> None:
    stream = Sine(steps=30, target_every=3)
    learner = _learner(stream, "ostl")
    seen: list[float] = []

    def record(t: int, x: Tensor, y: Tensor, target: Any) -> None:
        seen.append(float("nan") if target is None else float(stream.error(y, target)))

    result = prequential(stream, learner, window=5, on_step=record)
    np.testing.assert_array_equal(result.errors, np.array(seen, dtype=np.float32))
    assert np.isnan(result.errors[1::3]).all() and not np.isnan(result.errors[::3]).any()
    assert learner.updates == 10  # an update only at the steps with a target


# -- no resets: the state carries over the whole stream --------------------------------------
def _errors(chunk: int, hook: Any = None, steps: int = 60) -> np.ndarray:
    stream = Sine(steps=steps, drift_every=25)
    learner = _learner(stream, "ostl")
    resets: list[int] = []
    real = learner.reset

    def counted(batch: int) -> None:
        resets.append(batch)
        real(batch)

    learner.reset = counted  # type: ignore[method-assign]  # a spy that calls through
    result = Prequential(stream, learner, window=10, chunk_size=chunk).run(
        on_step=None if hook is None else lambda t, *a: hook(t, learner)
    )
    assert resets == [1]  # once, before the first step
    return result.errors


def test_the_chunk_size_changes_nothing_and_the_state_crosses_chunk_boundaries() -> None:
    whole = _errors(1000)
    np.testing.assert_array_equal(_errors(7), whole)
    np.testing.assert_array_equal(_errors(1), whole)

    # negative control: a reset of the state at a chunk boundary (step 7) changes what follows
    def reset_at_7(t: int, learner: Learner) -> None:
        if t == 6:
            learner.runner.reset(1)

    reset = _errors(7, hook=reset_at_7)
    np.testing.assert_array_equal(reset[:7], whole[:7])
    assert not np.array_equal(reset[7:], whole[7:])


# -- the rules of a stream ---------------------------------------------------------------------
def test_rule_specs_map_to_a_rule_and_its_update_schedule() -> None:
    rule, every = stream_rule("tbptt-16")
    assert isinstance(rule, BPTT) and rule.truncation == 16 and every == 16
    rule, every = stream_rule(" OSTL ")
    assert isinstance(rule, OSTL) and every == 1
    for spec in DEFAULT_STREAM_RULES:
        assert stream_rule(spec)[1] >= 1
    with pytest.raises(FullBPTTError, match="memory grows with the stream.*tbptt-16"):
        stream_rule("bptt")
    with pytest.raises(OptionError, match="unknown stream rule 'nope'.*tbptt-K"):
        stream_rule("nope")
    with pytest.raises(OptionError, match="at least 1"):
        stream_rule("tbptt-0")


def test_truncated_bptt_holds_memory_that_grows_with_k_and_not_with_the_stream() -> None:
    def held(spec: str, steps: int) -> int:
        stream = Sine(steps=steps)
        return prequential(stream, _learner(stream, spec, sgd=True), window=10).held_bytes

    k2, k8, k32 = held("tbptt-2", 64), held("tbptt-8", 64), held("tbptt-32", 64)
    assert k2 < k8 < k32
    per_step = (k32 - k8) / 24
    assert per_step > 0 and abs((k8 - k2) / 6 - per_step) < 0.1 * per_step  # linear in K
    assert held("tbptt-8", 256) == k8  # K steps held, however long the stream


def _held_after(steps: int, early: int) -> tuple[int, int]:
    """OSTL's held memory after ``early`` steps and after ``steps`` steps of one run."""
    stream = Sine(steps=steps)
    learner = _learner(stream, "ostl", sgd=True)  # SGD: the cheapest update
    p = Prequential(stream, learner, window=10, chunk_size=early)
    seen: list[int] = []
    p.run(on_chunk=lambda p: seen.append(p.meter.peak))
    assert p.done == steps and len(seen) == steps // early
    return seen[0], p.result().held_bytes


def test_ostl_holds_the_same_memory_after_40_and_400_steps() -> None:
    early, late = _held_after(400, 40)
    assert early > 0 and late == early


@pytest.mark.slow
def test_ostl_holds_the_same_memory_after_200_and_2000_steps() -> None:
    early, late = _held_after(2000, 200)
    assert early > 0 and late == early


# -- results -----------------------------------------------------------------------------------
def test_the_result_curves_and_summary() -> None:
    stream = Sine(steps=90, drift_every=30)
    result = prequential(stream, _learner(stream, "ostl"), window=10)
    e = result.errors.astype(np.float64)
    assert result.drifts == (30, 60) and result.length == 90 and not result.interrupted
    assert result.final_error == pytest.approx(e.mean())
    assert result.last_window_error == pytest.approx(e[-10:].mean())
    summary = result.to_json()
    assert summary["recovery"] == result.recovery() and len(summary["recovery"]) == 2
    assert summary["steps"] == 90 and summary["held_bytes"] == result.held_bytes > 0
    assert summary["updates"] == 90 and summary["steps_per_second"] > 0


def test_steps_beyond_the_stream_or_bad_options_are_refused() -> None:
    stream = Sine(steps=20)
    learner = _learner(stream, "ostl")
    with pytest.raises(OptionError, match="has 20 steps, asked for 30"):
        Prequential(stream, learner, steps=30)
    with pytest.raises(OptionError, match="window must be a positive integer"):
        Prequential(stream, learner, window=0)
    p = Prequential(stream, learner, steps=5)
    assert p.run().steps == 5
    with pytest.raises(OptionError, match="runs once"):
        p.run()


# -- interrupts keep what was done ------------------------------------------------------------
def test_an_exception_inside_a_step_keeps_the_steps_taken() -> None:
    stream = Sine(steps=60)
    whole = prequential(stream, _learner(stream, "ostl"), window=10, chunk_size=16).errors

    def ctrl_c(t: int, *args: Any) -> None:
        if t == 36:
            raise KeyboardInterrupt

    p = Prequential(stream, _learner(stream, "ostl"), window=10, chunk_size=16)
    with pytest.raises(KeyboardInterrupt):
        p.run(on_step=ctrl_c)
    partial = p.result()
    assert partial.interrupted and partial.steps == 37  # step 36 was taken and scored
    np.testing.assert_array_equal(partial.errors, whole[:37])
    assert partial.held_bytes > 0 and partial.seconds > 0

    stopped = Prequential(stream, _learner(stream, "ostl"), window=10, chunk_size=16)
    result = stopped.run(stop=lambda: stopped.learner.steps == 20)
    assert result.interrupted and result.steps == 20
    np.testing.assert_array_equal(result.errors, whole[:20])


# -- recovery times on hand-made error sequences ----------------------------------------------
def test_windowed_and_cumulative_means_skip_unscored_steps() -> None:
    e = np.array([1.0, np.nan, 3.0, 5.0, np.nan, np.nan, 7.0], dtype=np.float32)
    np.testing.assert_allclose(windowed_mean(e, 2), [1, 1, 3, 4, 5, np.nan, 7])
    np.testing.assert_allclose(cumulative_mean(e), [1, 1, 2, 3, 3, 3, 4])
    assert np.isnan(cumulative_mean(np.array([np.nan, 2.0])))[0]
    with pytest.raises(OptionError, match="window must be a positive integer"):
        windowed_mean(e, 0)


def test_recovery_after_a_jump_counts_the_steps_to_the_first_window_back_at_level() -> None:
    # level 1 before the drift at 50; 20 steps at 5, then back at 1: the first window of 10
    # wholly back at 1 ends at step 79, 30 steps after the drift (one step at 5 in a window
    # gives 1.4 > 1.1)
    e = np.r_[np.ones(50), np.full(20, 5.0), np.ones(80)]
    assert recovery_times(e, [50], 10) == [30]
    # a tolerance of 50 %: a window with two steps at 5 (1.8) is still above 1.5, one (1.4)
    # is not: recovered at the window ending at step 78
    assert recovery_times(e, [50], 10, tol=0.5) == [29]
    # a drift that does not hurt: exactly one window
    assert recovery_times(np.ones(100), [50], 10) == [10]


def test_recovery_is_none_when_not_back_before_the_next_drift() -> None:
    e = np.r_[np.ones(50), np.full(50, 5.0), np.full(50, 5.0)]
    # after the drift at 50, never back at 1 before the drift at 100; after the one at 100,
    # the level is 5 and the error stays there: one window
    assert recovery_times(e, [50, 100], 10) == [None, 10]
    # a drift too close to the next for one full window
    assert recovery_times(np.ones(100), [50, 55], 10) == [None, 10]


def test_recovery_near_a_zero_level_uses_the_absolute_tolerance() -> None:
    e = np.r_[np.zeros(40), np.full(40, 0.005)]
    assert recovery_times(e, [40], 10) == [10]  # within atol = 0.01 of 0
    assert recovery_times(e, [40], 10, atol=0.0) == [None]  # 10 % of 0 is 0


def test_recovery_counts_only_scored_steps() -> None:
    e = np.r_[np.ones(40), np.full(10, 9.0), np.ones(40)]
    e[::2] = np.nan  # half the steps have no target
    assert recovery_times(e, [40], 10) == [20]
    assert recovery_times(np.r_[np.full(20, np.nan), np.ones(20)], [20], 5) == [None]  # no level


def test_recovery_refuses_drifts_outside_the_errors_or_out_of_order() -> None:
    e = np.ones(50)
    for drifts in ([0], [50], [30, 20], [20, 20]):
        with pytest.raises(OptionError, match="drifts must increase"):
            recovery_times(e, drifts, 10)
    with pytest.raises(OptionError, match="non-negative"):
        recovery_times(e, [20], 10, tol=-1)


# -- host synchronisations ---------------------------------------------------------------------
def test_the_errors_are_read_back_once_per_chunk_not_per_step() -> None:
    """With the learner's own update verdicts kept on the device, the run reads back one
    tensor per chunk (the chunk's errors) and, at the end, the update count; on a GPU each
    read waits for the device."""
    stream = Sine(steps=30, target_every=2)
    rule, _ = stream_rule("ostl")
    net = stream.network(hidden=(4,), seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)  # no step count on the host, unlike Adam
    learner = Learner(net, rule, loss_fn=stream.loss_fn, optimizer=opt, nonfinite="skip")
    learner.guard_on_device = True
    with SyncDetector() as d:
        result = prequential(stream, learner, window=5, chunk_size=10)
    run = [s for s in d.syncs if "sine.py" not in s.where()]  # not the test stream's data
    reads = [s.op for s in run if s.where().endswith("in _read_back")]
    assert reads.count("cpu") == 3, d.report()  # .cpu() of each chunk's errors (then .numpy())
    others = [s for s in run if not s.where().endswith("in _read_back")]
    assert len(others) == 1 and "guard.py" in others[0].where(), d.report()  # result().updates
    assert result.steps == 30 and np.isnan(result.errors[1::2]).all()
