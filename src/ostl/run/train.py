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
Only rank 0 writes the run folder and shows progress bars. Checkpoints and resume are
single-process for now (each rank holds its own network state and traces).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import distributed as dist
from ..errors import CheckpointError, OptionError
from ..layer import Network
from ..learner import Learner
from ..rules import BPTT, RULES, Rule, TraceRule, get_rule
from ..rules.base import NONFINITE
from ..tasks import Task, get_task, task_options
from .checkpoint import load_checkpoint, rng_state, set_rng_state
from .meter import MemoryMeter, StepTimer
from .outputs import write_config, write_metrics, write_run
from .resume import (
    Checkpointer,
    Epoch,
    Progress,
    Stopped,
    check_run_options,
    check_same_config,
    this_rank,
    to_device,
)

__all__ = [
    "TrainConfig",
    "RunResult",
    "train",
    "resume",
    "evaluate",
    "update_every",
    "SCHEDULES",
]

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
        hardware: ``"pcm"`` runs the synapses on simulated PCM crossbars (:mod:`ostl.hardware`,
            needs aihwkit); None: digital.
        pcm_update: with ``hardware="pcm"``: ``"mixed"`` or ``"direct"`` (learn online on the
            crossbars) or ``"offline"`` (train in software, then program the crossbars).
        nonfinite: ``"raise"`` or ``"skip"`` updates with NaN/Inf (see :class:`ostl.Learner`).
        compile: run the rule's step under ``torch.compile`` (trace rules; see
            :class:`ostl.Learner`).
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
    hardware: str | None = None
    pcm_update: str = "mixed"
    nonfinite: str = "raise"
    compile: bool = False

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
            raise OptionError(f"unknown rule {self.rule!r}: expected one of {', '.join(RULES)}")
        if self.schedule not in SCHEDULES:
            raise OptionError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise OptionError(f"{name} must be a positive integer, got {v!r}")
        if self.hidden is not None and (
            not self.hidden or any(not isinstance(h, int) or h <= 0 for h in self.hidden)
        ):
            raise OptionError(f"hidden must be positive layer sizes, got {self.hidden!r}")
        if self.lr is not None and not (
            isinstance(self.lr, float | int) and 0 < self.lr < math.inf
        ):
            raise OptionError(f"lr must be a positive number, got {self.lr!r}")
        if self.nonfinite not in NONFINITE:
            raise OptionError(f"nonfinite must be one of {NONFINITE}, got {self.nonfinite!r}")
        if self.threads is not None and self.threads <= 0:
            raise OptionError(f"threads must be a positive integer, got {self.threads!r}")
        if self.hardware not in (None, "pcm"):
            raise OptionError(f"hardware must be None or 'pcm', got {self.hardware!r}")
        if self.pcm_update not in ("mixed", "direct", "offline"):
            raise OptionError(
                f"pcm_update must be 'mixed', 'direct' or 'offline', got {self.pcm_update!r}"
            )

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
            raise OptionError(f"config: unknown keys {sorted(unknown)}; expected {sorted(known)}")
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
    hardware: dict[str, Any] | None = None  # PCM runs: programming events, metric after drift
    skipped_updates: int = 0  # updates skipped for NaN/Inf (nonfinite="skip")
    stopped_at_step: int | None = None  # set when stop_after_steps stopped the run

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
        raise OptionError(f"unknown device {name!r}: expected e.g. 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {name!r} requested but CUDA is not available here")
    return dev


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
        xs, _ = to_device(batch, dev)
        if batch.reset or state is None:
            state = net.init_state(xs.shape[1])
        ys = []
        for x in xs:
            y, state = net.step(x, state)
            ys.append(y)
        metric.update(torch.stack(ys), batch)
    dist.reduce_metric(metric)
    return metric.value()


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
) -> RunResult:
    """Train one network with one rule; see the module docstring.

    Args:
        cfg: the run's configuration (None fields take the task's defaults).
        out: run folder to write (None: write nothing).
        progress: show tqdm bars (per epoch, and per batch with the running loss and metric).
        task: an already built task matching ``cfg`` (saves reloading data between runs).
        checkpoint_every: write a checkpoint to ``out/checkpoints`` every this many time steps
            (and at the end of every epoch); None: no periodic checkpoints.
        keep: how many checkpoints to keep.
        resume: continue from the newest checkpoint in ``out/checkpoints`` (same config).
        stop_after_steps: write a checkpoint and stop after this many time steps in total
            (``result.stopped_at_step`` is set; resume later with ``resume=True``).

    Returns:
        The run's history, test metric, peak held memory and time per step.
    """
    cfg.check()
    check_run_options(out, checkpoint_every, keep, resume, stop_after_steps)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dev = dist.local_device(_device(cfg.device))
    task = task or get_task(cfg.task, **cfg.task_options)
    cfg = cfg.resolve(task)
    assert cfg.epochs is not None and cfg.batch_size is not None and cfg.lr is not None
    if cfg.batch_size < dist.world_size():
        raise OptionError(
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
        nonfinite=cfg.nonfinite,
        # compile the online trace rules' step; BPTT and RTRL run eagerly (ostl compare)
        compile=cfg.compile and isinstance(rule, TraceRule),
        distributed=dist.active(),
        same_target_steps=True,  # every rank slices the same global batches
    )
    hw = None
    if cfg.hardware is not None:  # PCM crossbars (ostl.hardware): mapped, optimizer hooked
        if resume or checkpoint_every or stop_after_steps or dist.active():
            raise OptionError(
                "--hardware pcm runs in one process without checkpoints: the crossbars' "
                "conductances and the mixed-precision accumulators are not saved"
            )
        from ..hardware.run import HardwareSession

        hw = HardwareSession(cfg.pcm_update, seed=cfg.seed)
        hw.attach(net, learner.optimizer, rule)
    gen = torch.Generator().manual_seed(cfg.seed)
    run = Progress(1, gen.get_state(), [], None, 0, copy.deepcopy(net.state_dict()))
    out = Path(out) if out is not None else None
    ckpt_dir = out / "checkpoints" if out is not None else Path()
    saved: dict[str, Any] | None = None
    if resume:
        if not ckpt_dir.is_dir():
            raise CheckpointError(f"{out}: no checkpoint to resume (no folder {ckpt_dir.name}/)")
        saved = load_checkpoint(ckpt_dir)
        check_same_config(saved["config"], cfg.to_json(), ckpt_dir)
        saved.update(this_rank(saved, ckpt_dir))
        learner.load_state_dict(saved["learner"])
        run = Progress(**saved["progress"])
    elif writes and out is not None and (checkpoint_every or stop_after_steps):
        write_config(out, cfg)  # now, so that --resume can rebuild the run after a crash
    meter, timer = MemoryMeter(learner), StepTimer()
    epoch_loop = Epoch(learner, task, meter, timer)
    if saved is not None:
        epoch_loop.load_state_dict(saved["epoch"])
        meter.peak = int(saved["meter_peak"])
        timer.steps, timer.seconds = int(saved["timer"][0]), float(saved["timer"][1])
        set_rng_state(saved["rng"])
    metric = task.metric()
    t0 = time.perf_counter() - run.elapsed

    def payload() -> dict[str, Any] | None:
        """The checkpoint (on rank 0; None elsewhere): a collective in a process group."""
        run.elapsed = time.perf_counter() - t0
        local = {  # what differs between ranks: each holds its own sequences' state and traces
            "learner": learner.state_dict(),
            "epoch": epoch_loop.state_dict(),
            "meter_peak": meter.peak,
            "timer": [timer.steps, timer.seconds],
            "rng": rng_state(),
        }
        ranks = dist.gather_to_main(local)
        if ranks is None:
            return None
        shared = {"config": cfg.to_json(), "progress": vars(run), "processes": len(ranks)}
        return {**shared, **ranks[0], "ranks": ranks[1:]}

    ckpt = None
    if out is not None and (checkpoint_every or stop_after_steps):
        ckpt = Checkpointer(ckpt_dir, checkpoint_every, keep, stop_after_steps)
    epochs = tqdm(range(run.epoch, cfg.epochs + 1), desc=f"{cfg.rule} epochs", disable=not progress)
    try:
        for epoch in epochs:
            gen.set_state(run.epoch_rng)
            bar = tqdm(
                dist.shard_batches(task.train_batches(cfg.batch_size, gen)),
                total=task.num_train_batches(cfg.batch_size),
                desc=f"epoch {epoch}",
                leave=False,
                disable=not progress,
            )

            def show(loss: float, value: float, bar: Any = bar) -> None:
                bar.set_postfix(loss=f"{loss:.4f}", **{metric.name: f"{value:.4f}"})

            def after_step() -> None:
                if ckpt is not None:
                    ckpt.after_step(learner.steps, payload)

            train_loss, train_metric = epoch_loop.run(bar, show, after_step)
            valid = evaluate(net, task, "valid", cfg.batch_size)
            if _better(valid, run.best_valid, metric.higher_is_better):
                run.best_valid, run.best_epoch = valid, epoch
                run.best_state = copy.deepcopy(net.state_dict())
            run.history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_metric": train_metric,
                    "valid_metric": valid,
                    "seconds": time.perf_counter() - t0,
                }
            )
            epochs.set_postfix(loss=f"{train_loss:.4f}", **{f"valid_{metric.name}": f"{valid:.4f}"})
            run.epoch, run.epoch_rng = epoch + 1, gen.get_state()
            epoch_loop.begin()
            if ckpt is not None:
                if writes and out is not None:
                    write_metrics(out, run.history)  # consistent with the checkpoint
                ckpt.save(payload(), learner.steps)
    except Stopped as stop:
        if writes and out is not None:
            write_metrics(out, run.history)
        return _result(cfg, metric, run, learner, meter, timer, t0, out, stopped_at=stop.step)
    if hw is not None and hw.online:  # the devices hold the last weights: no going back
        run.best_epoch, run.best_state = cfg.epochs, net.state_dict()
    final_test = evaluate(net, task, "test", cfg.batch_size)
    net.load_state_dict(run.best_state)
    test = (
        evaluate(net, task, "test", cfg.batch_size) if run.best_epoch < cfg.epochs else final_test
    )
    result = _result(cfg, metric, run, learner, meter, timer, t0, out, (test, final_test))
    if hw is not None:  # programmed (offline), then read after drift
        hw.finish(net)
        batch_size = cfg.batch_size
        result.hardware = hw.report(net, lambda n: evaluate(n, task, "test", batch_size))
    if writes and out is not None:
        write_run(out, result, net, task)
    return result


def _result(
    cfg: TrainConfig,
    metric: Any,
    run: Progress,
    learner: Learner,
    meter: MemoryMeter,
    timer: StepTimer,
    t0: float,
    out: Path | None,
    tests: tuple[float, float] = (math.nan, math.nan),
    stopped_at: int | None = None,
) -> RunResult:
    """The RunResult; a run stopped at ``stop_after_steps`` has no test metric yet (nan)."""
    return RunResult(
        config=cfg,
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        history=run.history,
        test_metric=tests[0],
        best_epoch=run.best_epoch,
        final_test_metric=tests[1],
        peak_bytes=meter.peak,
        seconds_per_step=timer.per_step,
        steps=timer.steps,
        updates=learner.updates,
        wall_seconds=time.perf_counter() - t0,
        out=str(out) if out is not None else None,
        skipped_updates=learner.skipped,
        stopped_at_step=stopped_at,
    )


def resume(out: str | Path, *, progress: bool = True, **options: Any) -> RunResult:
    """Continue the run in folder ``out`` from its newest checkpoint (its config.json).

    ``options`` are :func:`train`'s (``checkpoint_every``, ``keep``, ``stop_after_steps``).
    """
    path = Path(out) / "config.json"
    try:
        cfg = TrainConfig.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot read the run's config to resume it: {e}") from None
    return train(cfg, out, progress=progress, resume=True, **options)
