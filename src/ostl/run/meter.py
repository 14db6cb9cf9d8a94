"""Time per step of a training run; the memory meter (:class:`ostl.meter.MemoryMeter`, held
memory between steps) is re-exported here for the run's modules."""

from __future__ import annotations

import time

from ..meter import MemoryMeter

__all__ = ["MemoryMeter", "StepTimer"]


class StepTimer:
    """Wall time spent in training steps, and how many steps.

    The training loop times each batch (``with timer:``) and counts its steps one by one, so
    that a checkpoint written mid-batch holds every step done (:meth:`total`: the seconds,
    the current batch's so far included).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.steps = 0
        self._t0: float | None = None

    def __enter__(self) -> StepTimer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
        self._t0 = None

    def total(self) -> float:
        """The seconds so far, the current interval's included (for a checkpoint)."""
        running = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self.seconds + running

    @property
    def per_step(self) -> float:
        """Seconds per time step (nan before the first)."""
        return self.seconds / self.steps if self.steps else float("nan")
