"""Denormal floats: runner steps flush them (ostl.numerics), and restore the caller's mode."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import ostl
from ostl import numerics
from ostl.engine.diagonal import DiagonalTrace
from ostl.numerics import denormals_flushed, flush_denormals

# setting the current mode again changes nothing and tells whether the CPU supports it
pytestmark = pytest.mark.skipif(
    not torch.set_flush_denormal(denormals_flushed()),
    reason="this CPU cannot flush denormals (no FTZ/DAZ)",
)


@pytest.fixture(autouse=True)
def ieee_mode() -> Iterator[None]:
    """Each test starts with denormals kept and leaves the process as it found it."""
    before, enabled = denormals_flushed(), numerics.ENABLED
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(before)
    numerics.ENABLED = enabled


def test_flush_denormals_scopes_the_mode() -> None:
    assert not denormals_flushed()
    with flush_denormals():
        assert denormals_flushed()
    assert not denormals_flushed()
    torch.set_flush_denormal(True)  # a caller who flushes already keeps flushing
    with flush_denormals():
        assert denormals_flushed()
    assert denormals_flushed()


def test_a_runner_step_flushes_and_restores() -> None:
    seen: list[bool] = []

    def loss(y: Tensor, target: Tensor) -> Tensor:
        seen.append(denormals_flushed())
        return ((y - target) ** 2).mean()

    net = ostl.Network([ostl.Layer(3, 4, "lif"), ostl.Readout(4, 2)])
    runner = ostl.OSTL().bind(net)
    runner.reset(2)
    runner.step(torch.ones(2, 3), torch.zeros(2, 2), loss)
    numerics.ENABLED = False
    runner.step(torch.ones(2, 3), torch.zeros(2, 2), loss)
    assert seen == [True, False]
    assert not denormals_flushed()


def subnormal_trace_entries(flush: bool, steps: int = 900) -> int:
    """Count subnormal entries of a float32 LIF trace after one input spike and silence.

    The trace of W decays by about the leak (0.9) per silent step: after ~830 steps it is
    below float32's smallest normal (1.2e-38), and it reaches zero only ~150 steps later.
    """
    numerics.ENABLED = flush
    torch.manual_seed(0)
    net = ostl.Network([ostl.Layer(3, 4, "lif"), ostl.Readout(4, 2)])
    runner = ostl.OSTL().bind(net)
    runner.reset(2)
    x = torch.zeros(2, 3)
    runner.step(torch.ones(2, 3), None, lambda y, t: y.sum())
    trace = runner.traces[0]
    assert isinstance(trace, DiagonalTrace)
    eps = trace.eps["W"]
    assert bool((eps != 0).any()), "the input spike must leave a trace"
    for _ in range(steps):
        runner.step(x, None, lambda y, t: y.sum())
    tiny = torch.finfo(torch.float32).tiny
    eps = trace.eps["W"]
    return int(((eps != 0) & (eps.abs() < tiny)).sum())


def test_decayed_traces_hold_no_denormals() -> None:
    assert subnormal_trace_entries(flush=False) > 0  # the control: IEEE keeps them
    assert subnormal_trace_entries(flush=True) == 0


def test_the_command_flushes_for_the_whole_process() -> None:
    code = (
        "import sys; from ostl.run.cli import main; from ostl.numerics import denormals_flushed; "
        "main(['list']); sys.exit(0 if denormals_flushed() else 3)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_learner_step_flushes_its_optimizer_update_too() -> None:
    seen: list[bool] = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):  # type: ignore[no-untyped-def,override]
            seen.append(denormals_flushed())
            return super().step(closure)

    net = ostl.Network([ostl.Layer(3, 4, "lif"), ostl.Readout(4, 2)])
    for rule, every in (("ostl", 1), ("bptt", None)):
        learner = ostl.Learner(
            net,
            rule,
            loss_fn=lambda y, t: ((y - t) ** 2).mean(),
            optimizer=Recording(net.parameters(), lr=0.1),
            update_every=every,
        )
        learner.reset(2)
        learner.step(torch.ones(2, 3), torch.zeros(2, 2))
        learner.end_sequence()
    assert seen == [True, True]  # OSTL's update inside step, BPTT's in end_sequence
    assert not denormals_flushed()
