"""Prequential (test-then-train) evaluation of one learner on one stream.

::

    stream = get_stream("drift")
    net = stream.network(seed=0)
    learner = Learner(net, "ostl", loss_fn=stream.loss_fn,
                      optimizer=torch.optim.Adam(net.parameters(), lr=stream.defaults.lr))
    result = prequential(stream, learner, window=500)
    result.final_error, result.recovery(), result.held_bytes

The contract, at every step t of the stream (one stream: batch 1, no resets):

1. ``y_t = learner.step(x_t, target_t)``: the learner predicts ``y_t`` from ``x_t`` and its
   state, *then* learns from ``target_t`` (inside the same call: its update on this step's
   target comes after the forward pass that produced ``y_t``). So ``y_t`` is what the network
   predicted with the weights it had before seeing ``target_t``: the same as
   ``net.step(x_t, state)`` under those weights;
2. at a step with a target, ``stream.error(y_t, target_t)`` is that step's score; steps
   without a target are not scored (NaN in :attr:`PrequentialResult.errors`).

``learner.reset(1)`` is called once, before the first step: the network state and the rules'
traces then carry over the whole stream, across chunk boundaries (the chunk size changes
nothing but how often the errors are read back). The errors of a chunk stay on the learner's
device until the chunk ends (one read-back per chunk, not per step).

The result keeps one float32 per step (4 MB for a million steps) and derives from it the
windowed and cumulative curves and the recovery time after each drift
(:mod:`ostl.streams.recovery`). *Held memory* is the most memory the learner kept from one
step to the next (network state, traces, gradients and, for truncated BPTT, the activations
saved for its backward pass), as measured by :class:`ostl.meter.MemoryMeter`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError
from ..learner import Learner
from ..meter import MemoryMeter
from ..tasks.data import transfer
from .base import Stream
from .recovery import DEFAULT_ATOL, DEFAULT_TOL, cumulative_mean, recovery_times, windowed_mean

__all__ = [
    "prequential",
    "Prequential",
    "PrequentialResult",
    "HeldMemory",
    "DEFAULT_WINDOW",
    "DEFAULT_CHUNK",
]

#: Steps per window of the windowed error (and of the recovery times).
DEFAULT_WINDOW = 500
#: Steps per chunk of the stream (the errors are read back once per chunk).
DEFAULT_CHUNK = 1000

#: ``on_step(t, x_t, y_t, target_t)``: called after step t (0-based) is taken and scored.
StepHook = Callable[[int, Tensor, Tensor, Any], None]


class HeldMemory(Protocol):
    """What measures the learner's held memory (:class:`ostl.meter.MemoryMeter`).

    Attributes:
        peak: the most bytes held so far.
        count_graph: the learner keeps an autograd graph between updates (BPTT): every step
            is wrapped in :meth:`step` and sampled; otherwise the memory is sampled after the
            first step and after every chunk (it does not change between steps).
    """

    peak: int
    count_graph: bool

    def step(self) -> Any:
        """A context manager around one ``learner.step``."""

    def sample(self) -> None:
        """Record the memory held now."""


@dataclass
class PrequentialResult:
    """What a prequential run measured.

    Attributes:
        label: what names the learner (the rule spec).
        metric: the stream's metric (lower is better).
        errors: per-step errors, float32, NaN at steps without a target.
        length: the steps the run was to take (``steps`` or the stream's length).
        window: steps per window.
        drifts: the stream's drifts within the steps taken.
        held_bytes: the peak held memory (see the module docstring).
        seconds: wall time of the run (reading the stream, the steps, the scores).
        updates: optimizer steps taken.
        interrupted: the run stopped before ``length`` steps.
        tol: relative tolerance of :meth:`recovery` (:mod:`ostl.streams.recovery`).
        atol: absolute tolerance of :meth:`recovery`.
    """

    label: str
    metric: str
    errors: np.ndarray
    length: int
    window: int
    drifts: tuple[int, ...]
    held_bytes: int
    seconds: float
    updates: int
    interrupted: bool = False
    tol: float = DEFAULT_TOL
    atol: float = DEFAULT_ATOL
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def steps(self) -> int:
        """Steps taken."""
        return len(self.errors)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")

    def windowed(self) -> np.ndarray:
        """The windowed mean error at every step (float64)."""
        if "windowed" not in self._cache:
            self._cache["windowed"] = windowed_mean(self.errors, self.window)
        out: np.ndarray = self._cache["windowed"]
        return out

    def cumulative(self) -> np.ndarray:
        """The mean error since the start at every step (float64)."""
        if "cumulative" not in self._cache:
            self._cache["cumulative"] = cumulative_mean(self.errors)
        out: np.ndarray = self._cache["cumulative"]
        return out

    @property
    def final_error(self) -> float:
        """The mean error over every scored step (the prequential error of the run)."""
        return float(self.cumulative()[-1]) if self.steps else float("nan")

    @property
    def last_window_error(self) -> float:
        """The mean error over the last ``window`` steps."""
        return float(self.windowed()[-1]) if self.steps else float("nan")

    def recovery(self) -> list[int | None]:
        """Steps to recover after each drift (:func:`ostl.streams.recovery.recovery_times`)."""
        return recovery_times(self.errors, self.drifts, self.window, tol=self.tol, atol=self.atol)

    def to_json(self) -> dict[str, Any]:
        """A summary of the run, without the per-step errors."""
        return {
            "rule": self.label,
            "metric": self.metric,
            "steps": self.steps,
            "length": self.length,
            "interrupted": self.interrupted,
            "window": self.window,
            "final_error": _number(self.final_error),
            "last_window_error": _number(self.last_window_error),
            "drifts": list(self.drifts),
            "recovery": self.recovery(),
            "tol": self.tol,
            "atol": self.atol,
            "held_bytes": self.held_bytes,
            "seconds": self.seconds,
            "steps_per_second": _number(self.steps_per_second),
            "updates": self.updates,
        }


def _number(x: float) -> float | None:
    """JSON has no NaN: None."""
    return None if x != x else x


class Prequential:
    """One learner over one stream, test then train (see the module docstring).

    Build it, then :meth:`run` it once; :meth:`result` is what was done so far, also after
    :meth:`run` was stopped by an exception (e.g. ``KeyboardInterrupt`` from Ctrl-C).

    Args:
        stream: the stream.
        learner: the learner (batch 1; :meth:`run` calls ``learner.reset(1)`` once).
        steps: steps to take (None: the whole stream; required for an endless one).
        window: steps per window of the windowed error and the recovery times.
        seed: the stream's seed (:meth:`Stream.chunks`).
        chunk_size: steps per chunk read from the stream.
        label: what names the learner in the result (default: the rule's name).
        meter: what measures the held memory (default:
            :class:`ostl.meter.MemoryMeter` of the learner).
        tol: relative tolerance of the recovery times.
        atol: absolute tolerance of the recovery times.
    """

    def __init__(
        self,
        stream: Stream,
        learner: Learner,
        *,
        steps: int | None = None,
        window: int = DEFAULT_WINDOW,
        seed: int = 0,
        chunk_size: int = DEFAULT_CHUNK,
        label: str | None = None,
        meter: HeldMemory | None = None,
        tol: float = DEFAULT_TOL,
        atol: float = DEFAULT_ATOL,
    ) -> None:
        self.stream, self.learner = stream, learner
        self.length = _length(stream, steps)
        for name, v in (("window", window), ("chunk_size", chunk_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise OptionError(f"{name} must be a positive integer, got {v!r}")
        if not (tol >= 0 and atol >= 0):
            raise OptionError(f"tol and atol must be non-negative, got tol={tol}, atol={atol}")
        self.window, self.seed, self.chunk_size = window, seed, chunk_size
        self.tol, self.atol = tol, atol
        self.label = label or learner.rule.name
        if meter is None:
            meter = MemoryMeter(learner)
        self.meter = meter
        self._per_step = meter.count_graph  # a graph: sample every step
        self.errors = np.full(self.length, np.nan, dtype=np.float32)
        self.done = 0  # steps taken and scored, read back into self.errors
        self.seconds = 0.0
        self._started = False
        self._pending: tuple[Tensor, np.ndarray, int] | None = None  # the chunk being taken

    def run(
        self,
        *,
        on_step: StepHook | None = None,
        on_chunk: Callable[[Prequential], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> PrequentialResult:
        """Take the steps; return :meth:`result`.

        Args:
            on_step: called after every step (see :data:`StepHook`), for checks and hooks.
            on_chunk: called after every chunk (progress).
            stop: checked after every step: True stops the run there (``interrupted``).
        """
        if self._started:
            raise OptionError("a Prequential runs once: build a new one (and a new learner)")
        self._started = True
        self.learner.reset(1)
        t0 = time.perf_counter()
        try:
            for xs, targets in self.stream.chunks(self.seed, self.chunk_size):
                stopped = self._chunk(xs, targets, on_step, stop)
                if on_chunk is not None:
                    on_chunk(self)
                if stopped or self.done >= self.length:
                    break
        finally:
            self._read_back()
            self.meter.sample()
            self.seconds += time.perf_counter() - t0
        return self.result()

    def _chunk(
        self, xs: Tensor, targets: Any, on_step: StepHook | None, stop: Callable[[], bool] | None
    ) -> bool:
        """Take one chunk's steps (at most those left); True if ``stop`` said so."""
        dev = self.learner.net.device
        n = min(len(xs), self.length - self.done)
        steps = list(transfer(xs[:n], dev).unbind(0))
        tgts = _targets(targets, n, dev)
        if self._per_step:  # the graph's saved inputs: count one step's, not the chunk's storage
            steps = [x.clone() for x in steps]
            tgts = [None if t is None else t.clone() for t in tgts]
        scored = np.array([t is not None for t in tgts], dtype=bool)
        buf = torch.zeros(n, dtype=torch.float32, device=dev)
        self._pending = (buf, scored, 0)
        learner, stream, meter = self.learner, self.stream, self.meter
        for i in range(n):
            x, target = steps[i], tgts[i]
            with meter.step() if self._per_step else nullcontext():
                y = learner.step(x, target)  # y_t: predicted before learning from target_t
            if target is not None:
                buf[i] = stream.error(y, target)  # on the device: no read-back per step
            self._pending = (buf, scored, i + 1)
            if self.done + i == 0 and not self._per_step:
                meter.sample()  # the state and traces exist from the first step on
            if on_step is not None:
                on_step(self.done + i, x, y, target)
            if stop is not None and stop():
                self._read_back()
                return True
        if not self._per_step:
            meter.sample()
        self._read_back()
        return False

    def _read_back(self) -> None:
        """Move the errors of the steps taken in the current chunk into :attr:`errors`."""
        if self._pending is None:
            return
        buf, scored, k = self._pending
        self._pending = None
        values = buf[:k].cpu().numpy()
        self.errors[self.done : self.done + k] = np.where(scored[:k], values, np.nan)
        self.done += k

    def result(self) -> PrequentialResult:
        """What was done so far (the steps taken and read back)."""
        self._read_back()
        drifts = tuple(d for d in self.stream.drifts if 0 < d < self.done)
        return PrequentialResult(
            label=self.label,
            metric=self.stream.metric,
            errors=self.errors[: self.done],
            length=self.length,
            window=self.window,
            drifts=drifts,
            held_bytes=int(self.meter.peak),
            seconds=self.seconds,
            updates=self.learner.updates,
            interrupted=self.done < self.length,
            tol=self.tol,
            atol=self.atol,
        )


def _length(stream: Stream, steps: int | None) -> int:
    """The steps to take: ``steps``, or the stream's length (checked against each other)."""
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise OptionError(f"steps must be a positive integer or None, got {steps!r}")
    length = stream.length
    if steps is None:
        if length is None:
            raise OptionError(f"the stream {stream.name!r} is endless: give the steps to take")
        return length
    if length is not None and steps > length:
        raise OptionError(f"the stream {stream.name!r} has {length:,} steps, asked for {steps:,}")
    return steps


def _targets(targets: Any, n: int, dev: torch.device) -> list[Tensor | None]:
    """The first n per-step targets of a chunk on ``dev`` (None at steps without one), moved
    as the training batches are (:func:`ostl.tasks.data.transfer`)."""
    if isinstance(targets, Tensor):
        return list(transfer(targets[:n], dev).unbind(0))
    return [None if t is None else transfer(t, dev) for t in list(targets)[:n]]


def prequential(
    stream: Stream,
    learner: Learner,
    steps: int | None = None,
    window: int = DEFAULT_WINDOW,
    seed: int = 0,
    *,
    on_step: StepHook | None = None,
    **options: Any,
) -> PrequentialResult:
    """Test then train ``learner`` over ``stream``; see :class:`Prequential` for the options
    and :meth:`Prequential.run` for ``on_step``, the module docstring for the contract."""
    p = Prequential(stream, learner, steps=steps, window=window, seed=seed, **options)
    return p.run(on_step=on_step)
