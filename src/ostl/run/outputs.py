"""The files of a run folder: every file a training run writes goes through this module.

``config.json`` (written at the start, so ``ostl train --resume`` can rebuild the run),
``options.json`` (the run options in effect: checkpoint and logging, which ``--resume`` keeps
unless given again; see :func:`read_options`),
``metrics.csv`` (rewritten whole from the history after every epoch: a resumed run rewrites it
consistently), the trained network (``model.safetensors``, ``model-last.safetensors``; see
:mod:`.model`), ``summary.json``, ``learning_curves.png`` and, for spiking networks,
``raster.png``. Checkpoints are written by :class:`ostl.run.resume.Checkpointer`, the training
scalars (``scalars.csv``, TensorBoard events in ``tb/``) by :class:`ostl.run.logs.ScalarLog`.

:func:`prepare_folder` checks a folder before a command writes a new run or comparison into it:
it must be writable, and a folder that already holds a run (a ``config.json``, a model or
checkpoints) or a comparison is refused unless it may be overwritten (then the run's files are
removed, and only those). The folder's ``.lock`` (:mod:`.lock`) is never removed: another
process may be waiting on it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .. import distributed as dist
from ..errors import OptionError
from ..layer import Layer, Network
from ..tasks import Task
from ..tasks.base import SPIKING_CELLS
from . import plots
from .checkpoint import WriteError, remove_temps, write_atomic
from .config import RunResult, TrainConfig
from .lock import LOCK
from .logs import SCALARS, TENSORBOARD
from .model import MODEL, MODEL_LAST, save_model

__all__ = [
    "RunFolder",
    "write_config",
    "write_options",
    "read_options",
    "restart",
    "OPTIONS",
    "write_metrics",
    "write_run",
    "raster",
    "RUN_FILES",
    "COMPARE_FILES",
    "run_marks",
    "prepare_folder",
    "check_writable",
    "discard_unused",
]

#: The run options of a run folder (checkpoint and logging options, :func:`write_options`).
OPTIONS = "options.json"
#: The run options saved with a run (``stop_after_steps`` is one command's, not the run's).
SAVED_OPTIONS = ("checkpoint_every", "keep", "log_every", "tensorboard")
#: What a training run writes into its folder (besides the ``checkpoints/`` and ``tb/``
#: subfolders).
RUN_FILES = (
    "config.json",
    OPTIONS,
    "metrics.csv",
    SCALARS,
    "summary.json",
    "learning_curves.png",
    "raster.png",
    MODEL,
    MODEL_LAST,
)
#: What ``ostl compare`` writes into its folder (besides one run folder per rule).
COMPARE_FILES = ("summary.json", "table.md", "compare.png")


class RunFolder:
    """The run folder as this process sees it: only rank 0 of a run with a folder writes.

    Args:
        out: the run folder (None: write nothing).
        writes: whether this process writes (rank 0 of a process group).
    """

    def __init__(self, out: str | Path | None, writes: bool = True) -> None:
        self.path = Path(out) if out is not None and writes else None  # None: writes nothing

    def create(self) -> None:
        """Create the folder and check that it is writable (OptionError naming it if not)."""
        if self.path is not None:
            check_writable(self.path)

    def model(
        self, net: Network, name: str, cfg: TrainConfig, epoch: int, step: int | None = None
    ) -> None:
        """Write ``net``'s weights as ``name`` (``MODEL`` or ``MODEL_LAST``, see :mod:`.model`)."""
        if self.path is not None:
            save_model(self.path / name, net, cfg, epoch=epoch, step=step)

    def config(self, cfg: TrainConfig) -> None:
        if self.path is not None:
            write_config(self.path, cfg)

    def options(self, options: dict[str, Any]) -> None:
        if self.path is not None:
            write_options(self.path, options)

    def remove_temps(self) -> None:
        """Remove the temporary files of writers killed mid-write (in the folder and its
        checkpoints): only the holder of the folder's lock may (:mod:`.lock`)."""
        if self.path is not None:
            for d in (self.path, self.path / "checkpoints"):
                remove_temps(d, only_dead=False)

    def metrics(self, history: list[dict[str, float]]) -> None:
        if self.path is not None:
            write_metrics(self.path, history)

    def run(self, result: RunResult, net: Network, task: Task) -> None:
        if self.path is not None:
            write_run(self.path, result, net, task)


def raster(net: Network, task: Task, cfg: TrainConfig, path: Path) -> Path | None:
    """Spike raster of the first test sample, when the hidden layers spike."""
    if cfg.cell not in SPIKING_CELLS:
        return None
    batch = next(iter(task.eval_batches("test", 1)))
    with torch.no_grad():
        outs, _ = net.unroll(batch.to(net.device).xs, per_layer=True)
    idx = [i for i, layer in enumerate(net.layers) if isinstance(layer, Layer)]
    return plots.spike_raster(
        batch.xs[:, 0],
        [outs[i][:, 0] for i in idx],
        [f"layer {i} ({cfg.cell})" for i in idx],
        f"{cfg.task}, {cfg.rule}: one test sample after training",
        path,
    )


def write_config(out: Path, cfg: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")


def write_options(out: Path, options: dict[str, Any]) -> None:
    """``options.json``: the run options of :data:`SAVED_OPTIONS` in ``options``."""
    saved = {k: options[k] for k in SAVED_OPTIONS if k in options}
    write_atomic(out / OPTIONS, (json.dumps(saved, indent=2) + "\n").encode())


def read_options(out: Path) -> dict[str, Any]:
    """The run options saved in ``out`` ({} if none: a folder of an older ostl).

    Raises:
        OptionError: the file is unreadable or not a JSON object.
    """
    path = out / OPTIONS
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OptionError(f"cannot read the run options {path}: {e}") from None
    if not isinstance(saved, dict):
        raise OptionError(f"{path}: expected a JSON object of run options")
    return {k: saved[k] for k in SAVED_OPTIONS if k in saved}


def write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    """metrics.csv rewritten whole from the history (so a resumed run stays consistent)."""
    if not history:
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.csv.tmp"
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)
        tmp.replace(out / "metrics.csv")
    except OSError as e:
        raise WriteError(f"cannot write {out / 'metrics.csv'}: {e.strerror or e}", e) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_run(out: Path, result: RunResult, net: Network, task: Task) -> None:
    cfg = result.config
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    write_metrics(out, result.history)
    summary = result.to_json()
    summary["environment"] = {
        "ostl": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
        "processes": dist.world_size(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    title = f"{cfg.task}: {cfg.rule}, {cfg.cell} {list(cfg.hidden or ())}, seed {cfg.seed}"
    plots.learning_curves(result.history, result.metric, title, out / "learning_curves.png")
    raster(net, task, cfg, out / "raster.png")


def check_writable(path: Path, what: str = "run folder") -> None:
    """Create ``path`` (and its parents) and write a probe file there: OptionError if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OptionError(f"cannot write the {what} {path}: {reason}") from None


def run_marks(path: Path) -> list[str]:
    """What shows that ``path`` holds a run: its config.json, models and checkpoints/."""
    names = ("config.json", MODEL, MODEL_LAST)
    found = [n for n in names if (path / n).is_file()]
    return found + (["checkpoints/"] if (path / "checkpoints").is_dir() else [])


def _compare_marks(path: Path) -> list[str]:
    found = [n for n in COMPARE_FILES if (path / n).is_file()]
    if path.is_dir():
        found += [f"{d.name}/" for d in sorted(path.iterdir()) if d.is_dir() and run_marks(d)]
    return found


def _clear_run(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove a run's files (and only those, less ``keep``) from ``path``."""
    for name in RUN_FILES:
        if name not in keep:
            (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / "checkpoints", ignore_errors=True)
    shutil.rmtree(path / TENSORBOARD, ignore_errors=True)


def restart(path: Path) -> None:
    """Before a run that never wrote a checkpoint starts again from step 0: remove what it
    wrote (metrics, scalars, models, temporary files) but its config.json and options.json."""
    _clear_run(path, keep=("config.json", OPTIONS))


def prepare_folder(path: Path, *, overwrite: bool = False, compare: bool = False) -> None:
    """Check (and create) the folder of a new run, or of a comparison with ``compare``.

    A folder that already holds a run (its config.json, a model, checkpoints/) or, with
    ``compare``, a comparison (its summary, table, figure, or a run per rule) is refused
    unless ``overwrite``: then those files are removed, and nothing else in the folder.

    Raises:
        OptionError: the folder is not writable, not a folder, or holds a run.
    """
    if path.exists() and not path.is_dir():
        raise OptionError(f"{path}: exists and is not a folder")
    found = (_compare_marks(path) if compare else run_marks(path)) if path.is_dir() else []
    if found and not overwrite:
        hint = "" if compare else f"continue it with --resume {path}, "
        raise OptionError(
            f"{path} already holds a {'comparison' if compare else 'run'} "
            f"({', '.join(found)}): {hint}choose another folder, or replace it with --overwrite"
        )
    if found:
        if compare:
            for name in COMPARE_FILES:
                (path / name).unlink(missing_ok=True)
            for run in (d for d in path.iterdir() if d.is_dir() and run_marks(d)):
                _clear_run(run)
        else:
            _clear_run(path)
    check_writable(path, "comparison folder" if compare else "run folder")


def discard_unused(path: Path, created: bool) -> None:
    """After a command failed before its run produced anything: remove the config.json and
    options.json it wrote when the folder holds nothing else, and the folder if the command
    created it and it is empty (but for its lock file)."""
    if not path.is_dir():
        return
    locks = {LOCK, f"{LOCK}.pid"}
    names = {p.name for p in path.iterdir()} - locks
    if names and names <= {"config.json", OPTIONS}:
        for name in names:
            (path / name).unlink(missing_ok=True)
        names = set()
    if created and not names:
        with contextlib.suppress(OSError):
            for name in locks:
                (path / name).unlink(missing_ok=True)
            path.rmdir()
