"""Training loop of ``ostl train``: one task, one cell, one rule; a run folder with everything.

Schedule (the same budget for every rule: epochs, batch size, optimizer, learning rate):

- ``schedule="online"`` (default): the online rules (OSTL, OSTTP, e-prop, RTRL) update the
  weights after *every* time step (``update_every=1``, the point of online learning); BPTT
  updates once per sequence (``update_every=None``: it must see the whole sequence; for streams
  cut into chunks, once per chunk, i.e. truncated BPTT).
- ``schedule="sequence"``: every rule updates once per sequence (or chunk), from the gradient
  accumulated over it (where OSTL with one stateful layer equals BPTT exactly).

Model selection (the same for every rule): the weights of the epoch with the best validation
metric are kept and evaluated on the test split (``test_metric``); the last epoch's test metric
is reported too (``final_test_metric``).

The run folder holds ``config.json`` (``ostl train --config config.json`` reruns it),
``metrics.csv`` (one row per epoch), ``summary.json``, ``learning_curves.png`` and, for spiking
networks, ``raster.png``.

Several processes (``torchrun ... -m ostl train`` or ``ostl train --nproc N``; see
:mod:`ostl.distributed`): ``batch_size`` is the global batch; every rank learns on its slice of
each batch and the learner averages the gradients before each update. Evaluation is sharded the
same way and the metric's sums are all-reduced, so every rank gets the metric of the whole
split (and picks the same best epoch); the training loss and metric are summed over ranks too.
Only rank 0 writes the run folder and shows progress bars.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from . import __version__, plots
from . import distributed as dist
from .layer import Layer, Network
from .learner import Learner
from .meter import MemoryMeter, StepTimer
from .rules import BPTT, RULES, Rule, get_rule
from .tasks import Task, get_task, task_options
from .tasks.base import SPIKING_CELLS
from .tasks.data import Batch, as_list

__all__ = ["TrainConfig", "RunResult", "train", "evaluate", "update_every", "SCHEDULES"]

SCHEDULES = ("online", "sequence")


@dataclass
class TrainConfig:
    """Everything that defines a run; None fields take the task's defaults.

    Attributes:
        task: task name (``ostl list``).
        rule: rule name.
        cell: cell of the hidden layers (None: the task's default).
        hidden: hidden layer sizes, bottom first (None: the task's default).
        recurrent: give the hidden layers recurrent weights H.
        epochs: passes over the training data.
        batch_size: sequences per batch.
        lr: Adam learning rate.
        schedule: ``"online"`` or ``"sequence"`` (see the module docstring).
        seed: seed of the initial weights, the shuffling and the training spike encodings.
        device: torch device.
        threads: torch CPU threads (None: leave torch's default).
        task_options: options of the task (e.g. ``{"steps": 30}``).
    """

    task: str = "digits"
    rule: str = "ostl"
    cell: str | None = None
    hidden: tuple[int, ...] | None = None
    recurrent: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    schedule: str = "online"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    task_options: dict[str, Any] = field(default_factory=dict)

    def resolve(self, task: Task) -> TrainConfig:
        """A copy with every None budget field set to the task's default, checked."""
        d = task.defaults
        cfg = replace(
            self,
            task=task.name,
            rule=self.rule.lower(),
            cell=(self.cell or d.cell).lower(),
            hidden=tuple(self.hidden) if self.hidden is not None else d.hidden,
            epochs=self.epochs if self.epochs is not None else d.epochs,
            batch_size=self.batch_size if self.batch_size is not None else d.batch_size,
            lr=self.lr if self.lr is not None else d.lr,
            task_options=task_options(task),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.rule.lower() not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}: expected one of {', '.join(RULES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.hidden is not None and (
            not self.hidden or any(not isinstance(h, int) or h <= 0 for h in self.hidden)
        ):
            raise ValueError(f"hidden must be positive layer sizes, got {self.hidden!r}")
        if self.lr is not None and not (
            isinstance(self.lr, float | int) and 0 < self.lr < math.inf
        ):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden) if self.hidden is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}; expected {sorted(known)}")
        d = dict(d)
        if d.get("hidden") is not None:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


@dataclass
class RunResult:
    """What a run produced (also written to ``summary.json``)."""

    config: TrainConfig
    metric: str
    higher_is_better: bool
    history: list[dict[str, float]]
    test_metric: float  # of the weights with the best validation metric
    best_epoch: int
    final_test_metric: float  # of the weights after the last epoch
    peak_bytes: int
    seconds_per_step: float
    steps: int
    updates: int
    wall_seconds: float
    out: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_json()
        return d


def update_every(rule: Rule, schedule: str) -> int | None:
    """The ``Learner.update_every`` of a rule under a schedule (see the module docstring)."""
    if schedule == "sequence" or isinstance(rule, BPTT):
        return None
    return 1


def _better(value: float, best: float | None, higher_is_better: bool) -> bool:
    if math.isnan(value):
        return best is None
    if best is None or math.isnan(best):
        return True
    return value > best if higher_is_better else value < best


def _device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: expected e.g. 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    return dev


def _to(batch: Batch, dev: torch.device) -> tuple[Tensor, list[Tensor | None]]:
    return batch.xs.to(dev), [None if t is None else t.to(dev) for t in as_list(batch.targets)]


@torch.no_grad()
def evaluate(net: Network, task: Task, split: str, batch_size: int) -> float:
    """The task's metric of ``net`` on ``split`` (a plain forward pass, the same for all rules).

    In a process group it is a collective: every rank must call it; each evaluates its shard
    of every batch and the metric's sums are all-reduced.
    """
    metric = task.metric()
    dev = net.device
    state: tuple[Any, ...] | None = None
    for batch in task.eval_batches(split, batch_size):
        batch = dist.shard_batch(batch)
        if batch.xs.shape[1] == 0:  # fewer sequences than processes: nothing on this rank
            continue
        xs, _ = _to(batch, dev)
        if batch.reset or state is None:
            state = net.init_state(xs.shape[1])
        ys = []
        for x in xs:
            y, state = net.step(x, state)
            ys.append(y)
        metric.update(torch.stack(ys), batch)
    dist.reduce_metric(metric)
    return metric.value()


class _Epoch:
    """One training epoch: learner steps over every batch, running loss and metric."""

    def __init__(self, learner: Learner, task: Task, meter: MemoryMeter, timer: StepTimer) -> None:
        self.learner, self.task, self.meter, self.timer = learner, task, meter, timer

    def run(self, batches: Any, on_batch: Callable[[float, float], None]) -> tuple[float, float]:
        learner, dev = self.learner, self.learner.net.device
        metric = self.task.metric()
        loss_sum, loss_n = 0.0, 0
        started = False
        for batch in batches:
            xs, targets = _to(batch, dev)
            with self.timer:
                if batch.reset or not started:
                    learner.reset(xs.shape[1])
                    started = True
                ys = []
                for x_t, tgt in zip(xs, targets):
                    with self.meter.step():
                        ys.append(learner.step(x_t, tgt))
                r = learner.runner
                loss_sum, loss_n = loss_sum + r.loss_sum, loss_n + r.n_losses
                r.loss_sum, r.n_losses = 0.0, 0  # counted; keep the stream's state running
                learner.end_sequence()
                self.meter.graph_freed()
            self.timer.steps += len(xs)
            metric.update(torch.stack(ys), batch)
            on_batch(loss_sum / max(loss_n, 1), metric.value())
        loss_sum, n = dist.all_reduce_sums([loss_sum, loss_n])  # mean over every rank's steps
        dist.reduce_metric(metric)
        return loss_sum / max(n, 1), metric.value()


def _raster(net: Network, task: Task, cfg: TrainConfig, path: Path) -> Path | None:
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


def _write_run(out: Path, result: RunResult, net: Network, task: Task) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    (out / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result.history[0]))
        w.writeheader()
        w.writerows(result.history)
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
    _raster(net, task, cfg, out / "raster.png")


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    task: Task | None = None,
) -> RunResult:
    """Train one network with one rule; see the module docstring.

    Args:
        cfg: the run's configuration (None fields take the task's defaults).
        out: run folder to write (None: write nothing).
        progress: show tqdm bars (per epoch, and per batch with the running loss and metric).
        task: an already built task matching ``cfg`` (saves reloading data between runs).

    Returns:
        The run's history, test metric, peak held memory and time per step.
    """
    cfg.check()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dev = dist.local_device(_device(cfg.device))
    task = task or get_task(cfg.task, **cfg.task_options)
    cfg = cfg.resolve(task)
    assert cfg.epochs is not None and cfg.batch_size is not None and cfg.lr is not None
    if cfg.batch_size < dist.world_size():
        raise ValueError(
            f"batch_size {cfg.batch_size} is smaller than the {dist.world_size()} processes: "
            "every process needs at least one sequence of each batch"
        )
    progress = progress and dist.is_main()
    writes = out is not None and dist.is_main()  # the only rank that writes anything
    net = task.network(cfg.hidden, cfg.cell, cfg.recurrent, seed=cfg.seed).to(dev)
    rule = get_rule(cfg.rule)
    learner = Learner(
        net,
        rule,
        loss_fn=task.loss_fn,
        optimizer=torch.optim.Adam(net.parameters(), lr=cfg.lr),
        update_every=update_every(rule, cfg.schedule),
        distributed=dist.active(),
        same_target_steps=True,  # every rank slices the same global batches
    )
    meter, timer = MemoryMeter(learner), StepTimer()
    epoch_runner = _Epoch(learner, task, meter, timer)
    gen = torch.Generator().manual_seed(cfg.seed)
    metric = task.metric()
    history: list[dict[str, float]] = []
    best_valid: float | None = None
    best_epoch, best_state = 0, copy.deepcopy(net.state_dict())
    t0 = time.perf_counter()
    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.rule} epochs", disable=not progress)
    for epoch in epochs:
        bar = tqdm(
            dist.shard_batches(task.train_batches(cfg.batch_size, gen)),
            total=task.num_train_batches(cfg.batch_size),
            desc=f"epoch {epoch}",
            leave=False,
            disable=not progress,
        )

        def show(loss: float, value: float, bar: Any = bar) -> None:
            bar.set_postfix(loss=f"{loss:.4f}", **{metric.name: f"{value:.4f}"})

        train_loss, train_metric = epoch_runner.run(bar, show)
        valid = evaluate(net, task, "valid", cfg.batch_size)
        if _better(valid, best_valid, metric.higher_is_better):
            best_valid, best_epoch, best_state = valid, epoch, copy.deepcopy(net.state_dict())
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_metric": train_metric,
                "valid_metric": valid,
                "seconds": time.perf_counter() - t0,
            }
        )
        epochs.set_postfix(loss=f"{train_loss:.4f}", **{f"valid_{metric.name}": f"{valid:.4f}"})
    final_test = evaluate(net, task, "test", cfg.batch_size)
    net.load_state_dict(best_state)
    test = evaluate(net, task, "test", cfg.batch_size) if best_epoch < cfg.epochs else final_test
    result = RunResult(
        config=cfg,
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        history=history,
        test_metric=test,
        best_epoch=best_epoch,
        final_test_metric=final_test,
        peak_bytes=meter.peak,
        seconds_per_step=timer.per_step,
        steps=timer.steps,
        updates=learner.updates,
        wall_seconds=time.perf_counter() - t0,
        out=str(out) if out is not None else None,
    )
    if writes and out is not None:
        _write_run(Path(out), result, net, task)
    return result
