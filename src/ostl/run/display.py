"""What a training run shows while it trains: bars on a terminal, a few plain lines elsewhere.

:func:`display_mode` picks one of three modes from the ``progress`` switch and from stderr:

- ``"bars"`` (stderr is a terminal): tqdm bars, one over the epochs and one over each epoch's
  batches with the running loss and metric, redrawn in place;
- ``"lines"`` (stderr is a file, a pipe, a CI log): plain lines on stderr, never a carriage
  return: one line per epoch (train loss and metric, validation metric, seconds) and, within a
  long epoch, at most one line every :data:`LINE_INTERVAL` seconds, each after at least
  another :data:`LINE_FRACTION` of the epoch, so that a redirected run writes tens of lines
  rather than one per batch;
- None (``progress=False``, ``--no-progress``, and every rank but 0 of a data-parallel run):
  nothing while training; the command still prints its final table.

:class:`Display` shows one run in one of these modes; :class:`~.run.Run` drives it.
:func:`report` is what ``ostl train`` prints when the run ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

from ..tasks.data import is_terminal
from .config import RunResult

__all__ = ["display_mode", "Display", "report", "LINE_INTERVAL", "LINE_FRACTION"]

#: "lines" mode: the fewest seconds between two lines within an epoch.
LINE_INTERVAL = 30.0
#: "lines" mode: the smallest part of an epoch between two lines within it.
LINE_FRACTION = 0.1

B = TypeVar("B")


def display_mode(progress: bool, stream: TextIO | None = None) -> str | None:
    """``"bars"`` when ``stream`` (default: stderr) is a terminal, ``"lines"`` when not, None
    when ``progress`` is off (see the module docstring)."""
    if not progress:
        return None
    return "bars" if is_terminal(stream or sys.stderr) else "lines"


class Display:
    """The progress of one run (see the module docstring).

    Args:
        mode: ``"bars"``, ``"lines"`` or None (show nothing).
        label: what names the run in its lines and bars (the rule).
        epochs: the run's epochs.
        start: the first epoch this process trains (a resumed run starts later).
        metric: the name of the task's metric.
        stream: where to write (default: stderr).
        interval: "lines" mode: the fewest seconds between two lines within an epoch
            (default: :data:`LINE_INTERVAL`).
    """

    def __init__(
        self,
        mode: str | None,
        label: str,
        epochs: int,
        start: int,
        metric: str,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        if mode not in (None, "bars", "lines"):
            raise ValueError(f"display mode must be 'bars', 'lines' or None, got {mode!r}")
        self.mode, self.label, self.epochs, self.metric = mode, label, epochs, metric
        self.stream = stream or sys.stderr
        self.interval = LINE_INTERVAL if interval is None else interval
        self._epochs_bar: Any = None
        self._bar: Any = None
        if mode == "bars":
            self._epochs_bar = tqdm(
                total=epochs, initial=start - 1, desc=f"{label} epochs", file=self.stream
            )

    def batches(
        self, batches: Iterable[B], total: int, epoch: int
    ) -> tuple[Iterable[B], Callable[[float, float], None]]:
        """``batches`` to iterate over and the callback that shows the running loss and metric
        after each batch."""
        if self.mode == "bars":
            bar = self._bar = tqdm(
                batches, total=total, desc=f"epoch {epoch}", leave=False, file=self.stream
            )

            def show_bar(loss: float, value: float) -> None:
                bar.set_postfix(loss=f"{loss:.4f}", **{self.metric: f"{value:.4f}"})

            return bar, show_bar
        if self.mode == "lines":
            return batches, _EpochLines(self, total, epoch).after_batch
        return batches, lambda loss, value: None

    def epoch_end(
        self, epoch: int, loss: float, train_metric: float, valid: float, seconds: float
    ) -> None:
        """After an epoch and its validation."""
        name = self.metric
        if self._epochs_bar is not None:
            self._epochs_bar.set_postfix(loss=f"{loss:.4f}", **{f"valid_{name}": f"{valid:.4f}"})
            self._epochs_bar.update(1)
        elif self.mode == "lines":
            self.line(
                f"epoch {epoch}/{self.epochs}: train loss {loss:.4f}, {name} {train_metric:.4f}; "
                f"valid {name} {valid:.4f} ({seconds:.0f} s elapsed)"
            )

    def line(self, text: str) -> None:
        print(f"{self.label} {text}", file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bars (a stopped or interrupted run leaves them open otherwise)."""
        for bar in (self._bar, self._epochs_bar):
            if bar is not None:
                bar.close()
        self._bar = self._epochs_bar = None


class _EpochLines:
    """ "lines" mode within one epoch: a line when both enough time and enough of the epoch
    passed since the last one (never at the end: the epoch's own line follows)."""

    def __init__(self, display: Display, total: int, epoch: int) -> None:
        self.display, self.total, self.epoch = display, total, epoch
        self.done = self.shown = 0
        self.t0 = self.last = time.perf_counter()

    def after_batch(self, loss: float, value: float) -> None:
        self.done += 1
        now = time.perf_counter()
        due = now - self.last >= self.display.interval
        if not due or self.done - self.shown < LINE_FRACTION * self.total:
            return
        if self.done >= self.total:
            return
        self.shown, self.last = self.done, now
        d = self.display
        d.line(
            f"epoch {self.epoch}/{d.epochs}: {100 * self.done / self.total:.0f}% "
            f"({self.done}/{self.total} batches), loss {loss:.4f}, {d.metric} {value:.4f} "
            f"({now - self.t0:.0f} s)"
        )


def report(result: RunResult, out: Path) -> None:
    """What ``ostl train`` prints at the end: the table, or where a stopped run continues."""
    from .compare import format_table

    if result.stopped_at_step is not None:
        print(
            f"stopped after step {result.stopped_at_step}; checkpoint in {out / 'checkpoints'}; "
            f"continue with: ostl train --resume {out}"
        )
        return
    print(format_table([result]))
    if result.skipped_updates:
        print(f"skipped {result.skipped_updates} update(s) with NaN/Inf (--nonfinite skip)")
    if result.hardware is not None:
        hw = result.hardware
        drift = ", ".join(f"{k} {v:.4f}" for k, v in hw["drift"].items())
        print(
            f"PCM ({hw['update']}): {hw['program_events']} programming events "
            f"({hw['events_per_weight']:.1f} per weight); test {hw['test_programmed']:.4f} "
            f"after programming; after drift: {drift}"
        )
    print(f"run folder: {out}")
