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
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .. import __version__
from .. import distributed as dist
from ..layer import Layer, Network
from ..tasks import Task
from ..tasks.base import SPIKING_CELLS
from . import plots

if TYPE_CHECKING:
    from .train import RunResult, TrainConfig

__all__ = ["write_config", "write_metrics", "write_run", "raster"]


def raster(net: Network, task: Task, cfg: TrainConfig, path: Path) -> Path | None:
    """Spike raster of the first test sample, when the hidden layers spike."""
    if cfg.cell not in SPIKING_CELLS:
        return None
    batch = next(iter(task.eval_batches("test", 1)))
    xs = batch.xs.to(net.device)
    state = net.init_state(1)
    outs: list[list[Tensor]] = [[] for _ in net.layers]
    with torch.no_grad():
        for x in xs:
            new = []
            for i, (layer, s) in enumerate(zip(net.layers, state)):
                x, s = layer(x, s)
                outs[i].append(x[0])
                new.append(s)
            state = tuple(new)
    idx = [i for i, layer in enumerate(net.layers) if isinstance(layer, Layer)]
    return plots.spike_raster(
        batch.xs[:, 0],
        [torch.stack(outs[i]) for i in idx],
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
