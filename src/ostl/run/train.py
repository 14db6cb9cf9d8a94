"""Training loop of ``ostl train``: one task, one cell, one rule; a run folder with everything.

Schedule (the same budget for every rule: epochs, batch size, optimizer, learning rate):

- ``schedule="online"`` (default): the online rules (OSTL, OSTTP, e-prop, RTRL) update the
  weights after *every* time step (``update_every=1``, the point of online learning); BPTT
  updates once per sequence (``update_every=None``: it must see the whole sequence; for streams
  cut into chunks, once per chunk, i.e. truncated BPTT). Truncated BPTT (``--rule-opt
  truncation=K``) updates at the end of each K-step window, its natural cadence.
- ``schedule="sequence"``: every rule updates once per sequence (or chunk), from the gradient
  accumulated over it (where OSTL with one stateful layer equals BPTT exactly); truncated
  BPTT too, from its windows' gradients summed.
- ``schedule="every-K"``: the online rules update every K steps (and at the end of each
  sequence), from the gradient summed over those steps; BPTT as under ``online``. With
  several processes, one all-reduce per K steps instead of one per step.
- ``schedule="delayed"`` / ``"delayed-every-K"``: as ``online`` / ``every-K``, but each update
  applies the previous update's gradient (:mod:`ostl.delayed`): with several processes its
  all-reduce runs in the background during the steps in between. The steps of each window
  run with weights one update old; the end of a sequence applies what is left.

Model selection (the same for every rule): the weights of the epoch with the best validation
metric are kept and evaluated on the test split (``test_metric``); the last epoch's test metric
is reported too (``final_test_metric``).

The run folder holds ``config.json`` (``ostl train --config config.json`` reruns it; written
before training starts), ``metrics.csv`` (one row per epoch, written as each epoch ends), the
trained network (``model.safetensors``: the best validation epoch's weights,
``model-last.safetensors``: the latest; ``ostl.run.model.load(folder)`` rebuilds it),
``summary.json``, ``learning_curves.png`` and, for spiking networks, ``raster.png``; while
training, ``scalars.csv`` (a row every ``log_every`` steps) and, with ``tensorboard``, the same
as TensorBoard events in ``tb/`` (:mod:`.logs`).

SIGINT or SIGTERM while training (:mod:`.signals`): the run finishes its time step, writes a
checkpoint and the current weights to its folder, and raises :class:`~.signals.Interrupted` (a
``KeyboardInterrupt``); ``resume(out)`` continues it, with the run's checkpoint and logging
options unless given again, and restarts from step 0 a run killed before its first checkpoint.
One process at a time writes a run folder: :func:`train` and :func:`resume` hold its lock
(:mod:`.lock`; :class:`~.lock.FolderBusyError` if another process holds it).

Several processes (``torchrun ... -m ostl train`` or ``ostl train --nproc N``; see
:mod:`ostl.distributed`): ``batch_size`` is the global batch; every rank learns on its slice of
each batch and the learner averages the gradients before each update. Evaluation is sharded the
same way and the metric's sums are all-reduced, so every rank gets the metric of the whole
split (and picks the same best epoch); the training loss and metric are summed over ranks too.
Only rank 0 writes the run folder and shows the progress. A checkpoint holds every rank's
state (gathered on rank 0); it resumes with the same number of processes.

:func:`train` is ``Run(...).execute()``: the run and its collaborators (device, data-parallel
rank, PCM hardware, checkpoints, model selection, run folder) are in :mod:`.run`; the
configuration and the result in :mod:`.config`; evaluation in :mod:`.evaluate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..distributed import launched_as_main
from ..errors import CheckpointError
from ..tasks import Task
from .config import SCHEDULES, RunResult, TrainConfig
from .evaluate import evaluate
from .lock import folder_lock
from .logs import LOG_EVERY
from .outputs import read_options, restart
from .resume import RunOptions, has_checkpoint
from .run import Run, update_every

__all__ = [
    "TrainConfig",
    "RunResult",
    "Run",
    "train",
    "resume",
    "restarts",
    "evaluate",
    "update_every",
    "SCHEDULES",
]


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    task: Task | None = None,
    checkpoint_every: int | None = None,
    keep: int = 3,
    resume: bool = False,
    stop_after_steps: int | None = None,
    log_every: int = LOG_EVERY,
    tensorboard: bool = False,
) -> RunResult:
    """Train one network with one rule; see the module docstring.

    Args:
        cfg: the run's configuration (None fields take the task's defaults).
        out: run folder to write (None: write nothing).
        progress: show the progress: on a terminal, bars (per epoch, and per batch with the
            running loss and metric); otherwise a line per epoch and a few within long ones
            (:mod:`.display`).
        task: an already built task matching ``cfg`` (saves reloading data between runs).
        checkpoint_every: write a checkpoint to ``out/checkpoints`` every this many time steps
            (and at the end of every epoch); None: no periodic checkpoints.
        keep: how many checkpoints to keep.
        resume: continue from the newest checkpoint in ``out/checkpoints`` (same config),
            with the options given here (:func:`resume` keeps the run's own).
        stop_after_steps: write a checkpoint and stop after this many time steps in total
            (``result.stopped_at_step`` is set; resume later with ``resume=True``).
        log_every: append a row of training scalars to ``out/scalars.csv`` every this many
            time steps (0: none; see :mod:`.logs`).
        tensorboard: also write the scalars as TensorBoard events into ``out/tb`` (needs the
            ``tensorboard`` package).

    Returns:
        The run's history, test metric, peak held memory and time per step.
    """
    options = RunOptions(checkpoint_every, keep, resume, stop_after_steps, log_every, tensorboard)
    with folder_lock(out):  # one writer per run folder (FolderBusyError otherwise)
        return Run(cfg, out, task=task, options=options, progress=progress).execute()


def resume(out: str | Path, *, progress: bool = True, **options: Any) -> RunResult:
    """Continue the run in folder ``out`` from its newest checkpoint (its config.json).

    ``options`` are :func:`train`'s (``checkpoint_every``, ``keep``, ``stop_after_steps``,
    ``log_every``, ``tensorboard``); those not given (or None) are the run's own, saved in its
    folder (``options.json``). A run that never wrote a checkpoint (stopped or killed before
    its first) starts again from step 0 (:func:`restarts`).
    """
    path = Path(out) / "config.json"
    try:
        cfg = TrainConfig.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot read the run's config to resume it: {e}") from None
    with folder_lock(out):
        given = {k: v for k, v in options.items() if v is not None}
        kept = {**read_options(Path(out)), **given}
        if restarts(out):
            if launched_as_main():  # rank 0 writes the folder
                restart(Path(out))
            return train(cfg, out, progress=progress, **kept)
        return train(cfg, out, progress=progress, resume=True, **kept)


def restarts(out: str | Path) -> bool:
    """Whether :func:`resume` of the run folder ``out`` starts it again from step 0: it holds
    a config.json but no completed checkpoint (the run was stopped before its first)."""
    return (Path(out) / "config.json").is_file() and not has_checkpoint(out)
