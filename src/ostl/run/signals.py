"""SIGINT and SIGTERM during training: finish the step, save the run, stop.

While a run trains its epochs (:meth:`ostl.run.run.Run.execute`), :class:`Signals` replaces
the handlers of SIGINT (Ctrl-C) and SIGTERM (``kill``, a batch scheduler's stop): the first
signal is only recorded. The run looks at it after every training step and at the end of every
epoch, where its state is consistent: it writes a checkpoint (resumable exactly, as one written
by ``stop_after_steps``) and the current weights (``model-last.safetensors``), then raises
:class:`Interrupted`. A second signal raises :class:`KeyboardInterrupt` at once (nothing more
is saved). The previous handlers are restored when the epochs end.

:class:`Interrupted` is a :class:`KeyboardInterrupt`: code that stops on Ctrl-C still stops.
``ostl train`` reports it in two lines (what was saved, the resume command) and exits with
status 128 + the signal number: 130 for SIGINT, 143 for SIGTERM.

Handlers can only be set from the main thread; elsewhere, and in a process group (the ranks
would have to agree on the step of the checkpoint), the signals keep their handlers.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["Signals", "Interrupted", "SIGNALS"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after training step ``step``.

    Attributes:
        signum: the signal number.
        step: the training steps done (the checkpoint's position).
        out: the run folder (None: the run had none and nothing was saved).
        checkpoint: a checkpoint was written (``ostl train --resume out`` continues the run).
    """

    def __init__(self, signum: int, step: int, out: Path | None, checkpoint: bool) -> None:
        self.signum, self.step, self.out, self.checkpoint = signum, step, out, checkpoint
        super().__init__(f"interrupted by {self.name} after step {step}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def status(self) -> int:
        """The exit status of a process stopped by the signal: 128 + its number."""
        return 128 + self.signum

    def report(self) -> str:
        """What ``ostl train`` prints: what was saved and how to continue."""
        head = f"interrupted by {self.name} after step {self.step}"
        if self.out is None:
            return f"{head}; no run folder: nothing was saved"
        if not self.checkpoint:
            return f"{head}; the current weights are in {self.out} (no checkpoint: not resumable)"
        return (
            f"{head}; checkpoint and current weights saved in {self.out}\n"
            f"continue with: ostl train --resume {self.out}"
        )


class Signals:
    """Records the first SIGINT/SIGTERM while active (a context manager); see the module.

    Args:
        enabled: set the handlers (False: a no-op, ``caught`` stays None).

    Attributes:
        caught: the number of the first signal received, None before.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.caught: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.caught is not None:  # the second: stop now
            raise KeyboardInterrupt
        self.caught = signum

    def __enter__(self) -> Signals:
        if self.enabled:
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
