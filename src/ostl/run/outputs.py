"""The files of a run folder: every file a training run writes goes through this module.

``config.json`` (written at the start, so ``ostl train --resume`` can rebuild the run),
``metrics.csv`` (rewritten whole from the history after every epoch: a resumed run rewrites it
consistently), ``summary.json``, ``learning_curves.png`` and, for spiking networks,
``raster.png``. Checkpoints are written by :class:`ostl.run.resume.Checkpointer`.
"""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path

import torch

from .. import __version__
from .. import distributed as dist
from ..layer import Layer, Network
from ..tasks import Task
from ..tasks.base import SPIKING_CELLS
from . import plots
from .config import RunResult, TrainConfig

__all__ = ["RunFolder", "write_config", "write_metrics", "write_run", "raster"]


class RunFolder:
    """The run folder as this process sees it: only rank 0 of a run with a folder writes.

    Args:
        out: the run folder (None: write nothing).
        writes: whether this process writes (rank 0 of a process group).
    """

    def __init__(self, out: str | Path | None, writes: bool = True) -> None:
        self.path = Path(out) if out is not None and writes else None  # None: writes nothing

    def config(self, cfg: TrainConfig) -> None:
        if self.path is not None:
            write_config(self.path, cfg)

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
        outs, _ = net.unroll(batch.xs.to(net.device), per_layer=True)
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


def write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    """metrics.csv rewritten whole from the history (so a resumed run stays consistent)."""
    if not history:
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    tmp.replace(out / "metrics.csv")


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
