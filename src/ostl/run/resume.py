"""Resumable training epochs: the stream position, the epoch's accumulators, checkpointing.

:class:`Epoch` runs one training epoch one time step at a time and knows where it is: the
batch index and the step within the batch, the running loss and metric, and the outputs of the
batch so far. All of that goes into a checkpoint (:meth:`Epoch.state_dict`) together with the
learner, so that a run interrupted after any step continues from that step exactly
(``ostl.run.train.train(..., resume=True)``): the data order comes from a generator whose state at
the start of the epoch is saved, and the batches already trained are regenerated and skipped.

:class:`Checkpointer` decides when to write (every N steps, at the end of every epoch, when the
run is told to stop), writes through :func:`ostl.run.checkpoint.save_checkpoint` and reads the
checkpoint a resumed run starts from; it is the only place a training run reads or writes
checkpoints. :class:`RunOptions` are the checkpoint (and logging) options of a run,
:class:`Progress` what it carries across epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import distributed as dist
from ..errors import CheckpointError, OptionError
from ..learner import Learner
from ..tasks import Task
from ..tasks.data import Batch, as_list
from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .logs import LOG_EVERY, check_log_options
from .meter import MemoryMeter, StepTimer

__all__ = [
    "Epoch",
    "Checkpointer",
    "Stopped",
    "Progress",
    "RunOptions",
    "to_device",
    "check_run_options",
    "this_rank",
    "check_same_config",
    "has_checkpoint",
]


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised after the checkpoint at ``stop_after_steps`` (the run can be resumed)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped after step {step}")
        self.step = step


def to_device(batch: Batch, dev: torch.device) -> tuple[Tensor, list[Tensor | None]]:
    """The inputs and the per-step targets of ``batch`` on ``dev`` (:meth:`Batch.to`)."""
    placed = batch.to(dev)
    return placed.xs, as_list(placed.targets)


class Epoch:
    """One training epoch: learner steps over every batch, running loss and metric.

    Attributes:
        batch: index of the current batch in the epoch.
        t: steps done in the current batch.
    """

    def __init__(self, learner: Learner, task: Task, meter: MemoryMeter, timer: StepTimer) -> None:
        self.learner, self.task, self.meter, self.timer = learner, task, meter, timer
        self.begin()

    def begin(self) -> None:
        """Start of an epoch: position 0, empty accumulators."""
        self.metric = self.task.metric()
        self.loss_sum, self.loss_n = 0.0, 0
        self.batch, self.t = 0, 0
        self.ys: list[Tensor] = []

    def run(
        self,
        batches: Iterable[Batch],
        on_batch: Callable[[float, float], None],
        after_step: Callable[[], None] = lambda: None,
    ) -> tuple[float, float]:
        """Train from the current position to the end of the epoch; returns (loss, metric).

        ``after_step()`` runs after every step, with the position already advanced (it may
        checkpoint, or raise :class:`Stopped`).
        """
        learner, dev = self.learner, self.learner.net.device
        for b, batch in enumerate(batches):
            if b < self.batch:  # trained before the checkpoint: generated (same RNG), skipped
                continue
            batch = batch.to(dev)  # on CUDA: asynchronous copies from pinned memory
            xs, targets = batch.xs, as_list(batch.targets)
            t0 = self.t
            with self.timer:
                if t0 == 0 and (batch.reset or b == 0):
                    learner.reset(xs.shape[1])
                for t in range(t0, len(xs)):
                    with self.meter.step():
                        self.ys.append(learner.step(xs[t], targets[t]))
                    self.t = t + 1
                    self.timer.steps += 1  # now: a checkpoint mid-batch counts this step
                    after_step()
                loss_sum, loss_n = learner.runner.take_losses()  # the stream keeps running
                self.loss_sum, self.loss_n = self.loss_sum + loss_sum, self.loss_n + loss_n
                learner.end_sequence()
                self.meter.graph_freed()
            self.metric.update(torch.stack(self.ys), batch)
            self.batch, self.t, self.ys = b + 1, 0, []
            on_batch(self.loss_sum / max(self.loss_n, 1), self.metric.value())
        loss_sum, n = dist.all_reduce_sums([self.loss_sum, self.loss_n])  # over every rank
        dist.reduce_metric(self.metric)
        return loss_sum / max(n, 1), self.metric.value()

    def running(self) -> tuple[float, int]:
        """This rank's loss sum and count over the epoch so far (mid-batch included)."""
        runner = self.learner.runner
        return self.loss_sum + runner.loss_sum, self.loss_n + runner.n_losses

    def state_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "t": self.t,
            "loss_sum": self.loss_sum,
            "loss_n": self.loss_n,
            "metric": dict(vars(self.metric)),
            "ys": [y.clone() for y in self.ys],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.begin()
        self.batch, self.t = int(state["batch"]), int(state["t"])
        self.loss_sum, self.loss_n = float(state["loss_sum"]), int(state["loss_n"])
        for k, v in state["metric"].items():
            setattr(self.metric, k, v)
        dev = self.learner.net.device
        self.ys = [y.to(dev) for y in state["ys"]]


class Checkpointer:
    """The checkpoints of one run (``<run folder>/checkpoints``): resume, save, stop after N.

    It decides when to write (every N steps, at the end of every epoch, when the run is told to
    stop) and reads the checkpoint a resumed run starts from; a run without checkpoint options
    (or without a folder) writes none.

    Args:
        out: the run folder (None: no checkpoints).
        options: the run's checkpoint options.
    """

    def __init__(self, out: Path | None, options: RunOptions) -> None:
        self.directory = out / "checkpoints" if out is not None else Path()
        self.every, self.keep = options.checkpoint_every, options.keep
        self.stop_after = options.stop_after_steps
        self.active = out is not None and options.writes_checkpoints
        self.writable = out is not None  # an interrupted run writes one without the options

    def load(self, config: dict[str, Any]) -> dict[str, Any]:
        """The newest checkpoint, this rank's part at the top level; it must be of ``config``.

        Temporary files that killed writers left next to the checkpoints are ignored (and
        removed by the run folder, :meth:`~.outputs.RunFolder.remove_temps`)."""
        if not self.directory.is_dir():
            raise CheckpointError(
                f"{self.directory.parent}: no checkpoint to resume "
                f"(no folder {self.directory.name}/)"
            )
        saved = load_checkpoint(self.directory)
        check_same_config(saved["config"], config, self.directory)
        saved.update(this_rank(saved, self.directory))
        return saved

    def after_step(self, step: int, payload: Callable[[], dict[str, Any] | None]) -> None:
        """After training step ``step``: write if due; raise :class:`Stopped` at the stop."""
        if not self.active:
            return
        stop = self.stop_after is not None and step >= self.stop_after
        if stop or (self.every is not None and step % self.every == 0):
            self.save(payload(), step)
        if stop:
            raise Stopped(step)

    def save(
        self, payload: dict[str, Any] | None, step: int, *, force: bool = False
    ) -> Path | None:
        """Write one checkpoint (atomically; a poisoned payload is refused).

        In a process group only rank 0 has the payload (every rank's state, gathered) and
        writes; the other ranks pass None and write nothing. ``force``: write even without
        checkpoint options (an interrupted run), as long as the run has a folder.
        """
        if payload is None or not (self.active or (force and self.writable)):
            return None
        return save_checkpoint(self.directory, payload, step=step, keep=self.keep)


def has_checkpoint(out: str | Path) -> bool:
    """Whether the run folder ``out`` holds a completed checkpoint (temporary files of a
    write that never finished do not count): if not, ``--resume`` restarts the run."""
    return bool(list_checkpoints(Path(out) / "checkpoints"))


def this_rank(saved: dict[str, Any], where: Path) -> dict[str, Any]:
    """This rank's own part of a checkpoint (learner, epoch position, RNG, meters).

    A checkpoint written by N processes holds rank 0's part at the top level and the others'
    under ``"ranks"``; it resumes only with the same N (each rank holds its own sequences'
    state and traces).
    """
    n, world = int(saved.get("processes", 1)), dist.world_size()
    if n != world:
        raise CheckpointError(
            f"{where}: the checkpoint was written by {n} process(es), this run has {world}: "
            f"resume with the same number of processes (--nproc {n})"
        )
    r = dist.rank()
    return {} if r == 0 else dict(saved["ranks"][r - 1])


def check_same_config(saved: dict[str, Any], now: dict[str, Any], where: Path) -> None:
    """A checkpoint resumes only the run that wrote it. A field missing from the saved
    configuration (written before the field existed) is its default, as the run had it."""
    defaults = TrainConfig().to_json()
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"{where}: the checkpoint was written by a run with another configuration ({detail})"
        )


@dataclass
class Progress:
    """What a run carries across epochs (and into its checkpoints, with the model selection)."""

    epoch: int  # the current epoch (1-based)
    epoch_rng: Tensor  # the data generator's state at the start of ``epoch``
    history: list[dict[str, float]]
    elapsed: float = 0.0  # wall seconds before this process (resumed runs)

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> Progress:
        """From a checkpoint's ``"progress"`` (which also holds the model selection's keys)."""
        return cls(
            int(saved["epoch"]), saved["epoch_rng"], saved["history"], saved.get("elapsed", 0.0)
        )


@dataclass
class RunOptions:
    """The options of a run that are not its configuration (see :func:`ostl.run.train.train`):
    checkpoints, and the training scalars it logs (:mod:`.logs`).

    The run folder keeps ``checkpoint_every``, ``keep``, ``log_every`` and ``tensorboard``
    (``options.json``, :func:`~.outputs.write_options`): :func:`ostl.run.train.resume` and
    ``ostl train --resume`` continue with them unless given again. ``stop_after_steps`` and
    ``resume`` belong to one command only.
    """

    checkpoint_every: int | None = None
    keep: int = 3
    resume: bool = False
    stop_after_steps: int | None = None
    log_every: int = LOG_EVERY
    tensorboard: bool = False

    @property
    def writes_checkpoints(self) -> bool:
        return bool(self.checkpoint_every or self.stop_after_steps)

    def check(self, out: str | Path | None) -> None:
        check_run_options(out, self.checkpoint_every, self.keep, self.resume, self.stop_after_steps)
        check_log_options(out, self.log_every, self.tensorboard)


def check_run_options(
    out: str | Path | None,
    checkpoint_every: int | None,
    keep: int,
    resume: bool,
    stop_after_steps: int | None,
) -> None:
    for name, v in (("checkpoint_every", checkpoint_every), ("stop_after_steps", stop_after_steps)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise OptionError(f"{name} must be a positive int or None, got {v!r}")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep <= 0:
        raise OptionError(f"keep must be a positive int, got {keep!r}")
    if out is None and (resume or checkpoint_every or stop_after_steps):
        raise OptionError("checkpoints, resume and stop_after_steps need a run folder (out)")
