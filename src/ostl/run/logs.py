"""A run's training scalars, written as they come: ``scalars.csv`` and, on request, TensorBoard.

Every ``log_every`` training steps (:class:`~.resume.RunOptions`; 0: never) a run writes one
row to ``scalars.csv`` in its folder:

- ``step``: the training steps so far (every rank steps together: a step of the global batch);
- ``epoch``: the epoch being trained (1-based);
- ``loss``: the mean per-step loss over the steps since the previous row, over every rank's
  sequences (a sum over ranks: one small collective per row); ``nan`` if none had a target;
- ``lr``: the optimizer's learning rate (of its first parameter group);
- ``seconds``: wall seconds since the run started (a resumed run counts its earlier time).

The file is created with its first row and appended row by row, each row flushed, so a killed
run keeps every row it wrote. A resumed run first drops the rows of the steps after its
checkpoint (they are trained and written again), so every step has at most one row; a new run
in the same folder starts the file afresh.

With ``tensorboard`` (``--tensorboard``; needs the ``tensorboard`` package, the
``ostl[tensorboard]`` extra) the same scalars (``train/loss``, ``train/lr``) and, after every
epoch, ``epoch/train_loss``, ``epoch/train_<metric>`` and ``epoch/valid_<metric>`` are also
written as TensorBoard events into ``tb/`` (``tensorboard --logdir RUN_FOLDER``), every scalar
at its global step. A resumed run hides the events after its checkpoint's step
(``SummaryWriter``'s ``purge_step``).

Only rank 0 writes; the options are run options, not part of the run's configuration: like the
checkpoint options, they are saved in the run folder and ``ostl train --resume`` keeps them
unless given again (:class:`~.resume.RunOptions`).
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from pathlib import Path
from typing import Any

from .. import distributed as dist
from ..errors import OptionError
from ..tasks.data import MissingDependencyError

__all__ = ["ScalarLog", "SCALARS", "TENSORBOARD", "COLUMNS", "LOG_EVERY", "summary_writer"]

SCALARS = "scalars.csv"
TENSORBOARD = "tb"
COLUMNS = ("step", "epoch", "loss", "lr", "seconds")
#: The default of ``log_every``: a row every 100 training steps.
LOG_EVERY = 100


def summary_writer() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or MissingDependencyError saying how to
    install it."""
    try:
        import tensorboard  # noqa: F401  (torch's module imports without it on some versions)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingDependencyError(
            "--tensorboard needs the package 'tensorboard': pip install 'ostl[tensorboard]' "
            "(or pip install tensorboard)"
        ) from None
    return SummaryWriter


def check_log_options(out: str | Path | None, log_every: int, tensorboard: bool) -> None:
    """``log_every`` is a non-negative int; TensorBoard needs a run folder and its package."""
    if not isinstance(log_every, int) or isinstance(log_every, bool) or log_every < 0:
        raise OptionError(f"log_every must be a non-negative int (0: none), got {log_every!r}")
    if tensorboard and out is None:
        raise OptionError("tensorboard needs a run folder (out) to write its events into")
    if tensorboard:
        summary_writer()  # now: a missing package fails before any training


class ScalarLog:
    """The scalars of one run (see the module docstring).

    Every rank keeps the loss sums and takes part in the sum over ranks at every row; only the
    rank that ``writes`` opens files.

    Args:
        out: the run folder (None: nothing is computed or written).
        every: a row every this many steps (0: no rows).
        tensorboard: also write TensorBoard events.
        writes: whether this process writes (rank 0).
    """

    def __init__(self, out: Path | None, every: int, tensorboard: bool, writes: bool) -> None:
        self.every = every if out is not None else 0
        folder = out if out is not None and writes else None
        self.csv = folder / SCALARS if folder is not None and self.every else None
        self.tb = folder / TENSORBOARD if folder is not None and tensorboard else None
        self.writer: Any = None
        # loss sums (this rank): of the epochs already finished, and of the run at the last row
        self.done = [0.0, 0.0]
        self.last = [0.0, 0.0]

    def start(self, step: int, resumed: bool) -> None:
        """Before training: a new run starts its files afresh, a resumed run (at ``step``)
        drops the rows and events after its checkpoint."""
        if self.csv is not None:
            if resumed:
                _keep_rows_until(self.csv, step)
            else:
                self.csv.unlink(missing_ok=True)
        if self.tb is not None:
            if not resumed:
                shutil.rmtree(self.tb, ignore_errors=True)
            purge = step + 1 if resumed else None
            self.writer = summary_writer()(str(self.tb), purge_step=purge)

    def due(self, step: int) -> bool:
        """Whether training step ``step`` gets a row (on every rank alike)."""
        return self.every > 0 and step % self.every == 0

    def row(
        self, step: int, epoch: int, running: tuple[float, int], lr: float, seconds: float
    ) -> None:
        """The row of training step ``step`` (on every rank: a collective). ``running``: this
        rank's loss sum and count in the current epoch so far."""
        total = [self.done[0] + running[0], self.done[1] + running[1]]
        loss_sum, n = dist.all_reduce_sums([total[0] - self.last[0], total[1] - self.last[1]])
        self.last = total
        loss = loss_sum / n if n else math.nan
        if self.csv is not None:
            new = not self.csv.exists()
            with open(self.csv, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(COLUMNS)
                w.writerow([step, epoch, loss, lr, round(seconds, 3)])
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch_end(self, step: int, sums: tuple[float, int], scalars: dict[str, float]) -> None:
        """After an epoch: ``sums`` is this rank's loss sum and count over the epoch,
        ``scalars`` the epoch's numbers for TensorBoard (written at ``step``)."""
        self.done = [self.done[0] + sums[0], self.done[1] + sums[1]]
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(f"epoch/{name}", value, step)
            self.writer.flush()

    def state_dict(self) -> dict[str, Any]:
        return {"done": list(self.done), "last": list(self.last)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """From a checkpoint (None: one written before scalars existed: start from zero)."""
        if state is not None:
            self.done, self.last = list(state["done"]), list(state["last"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _keep_rows_until(path: Path, step: int) -> None:
    """Rewrite ``path`` (atomically) with only the rows of steps up to ``step`` (a torn last
    line, from a killed process, goes too)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        text = f.read()
    if not text.endswith("\n"):  # torn: the process died while writing its last row
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    kept = [r for r in rows if len(r) == len(COLUMNS) and r[0].isdigit() and int(r[0]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(kept)
    tmp.replace(path)
