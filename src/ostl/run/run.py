"""A training run (:class:`Run`) and its collaborators, each with one concern.

- :func:`place`: torch's CPU threads and the device (under torchrun, this rank's GPU); the
  network lives there, and every batch is moved there before it meets the network
  (:meth:`ostl.tasks.data.Batch.to`, in :class:`~.resume.Epoch` and
  :func:`~.evaluate.evaluate`: on CUDA, asynchronous copies from pinned memory);
- :class:`DataParallel`: this process's rank in a data-parallel run (batch check, sharding,
  gathering every rank's state for a checkpoint);
- :class:`Hardware`: the PCM crossbars of a ``hardware="pcm"`` run (a no-op for digital runs);
- :class:`~.resume.Checkpointer`: resume, periodic checkpoints, stop after N steps;
- :class:`~.evaluate.ModelSelection`: the weights of the best validation epoch;
- :class:`~.outputs.RunFolder`: the run folder (written by rank 0 only): created, its
  ``config.json`` and ``options.json`` written and temporary files of killed writers removed,
  before training starts; ``metrics.csv`` and the models
  (:mod:`.model`) written after every epoch;
- :class:`~.resume.Epoch`: one resumable training epoch;
- :class:`~.display.Display`: what the run shows while it trains (bars on a terminal, a few
  plain lines otherwise);
- :class:`~.logs.ScalarLog`: the training scalars (``scalars.csv``, TensorBoard events);
- :class:`~.signals.Signals`: SIGINT/SIGTERM while training: a checkpoint and the current
  weights are written at the next step, then :class:`~.signals.Interrupted` is raised.

:class:`Run` builds them from a :class:`~.config.TrainConfig` and runs the epochs
(:meth:`Run.execute`); :func:`ostl.run.train.train` is ``Run(...).execute()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from math import nan
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import distributed as dist
from ..errors import OptionError
from ..layer import Network
from ..learner import Learner
from ..rules import BPTT, Rule, TraceRule
from ..tasks import Task, get_task
from .checkpoint import rng_state, set_rng_state
from .config import RunResult, TrainConfig, parse_schedule
from .display import Display, display_mode
from .evaluate import ModelSelection, evaluate
from .logs import ScalarLog
from .meter import MemoryMeter, StepTimer
from .model import MODEL, MODEL_LAST
from .outputs import RunFolder
from .resume import Checkpointer, Epoch, Progress, RunOptions, Stopped
from .rule_options import make_rule
from .signals import Interrupted, Signals

if TYPE_CHECKING:
    from ..hardware.run import HardwareSession

__all__ = [
    "Run",
    "DataParallel",
    "Hardware",
    "place",
    "checked_device",
    "update_every",
    "delayed_updates",
]


def update_every(rule: Rule, schedule: str) -> int | None:
    """The ``Learner.update_every`` of a rule under a schedule (see :mod:`ostl.run.train`):
    BPTT once per sequence; truncated BPTT (``truncation=k``) at the end of each k-step window
    except under ``sequence``, where it too updates once per sequence."""
    every = parse_schedule(schedule)[0]  # checks the schedule
    if isinstance(rule, BPTT):
        return rule.truncation if rule.truncation is not None and schedule != "sequence" else None
    return every


def delayed_updates(rule: Rule, schedule: str) -> bool:
    """The ``Learner.delayed_updates`` of a rule under a schedule (never for BPTT)."""
    return not isinstance(rule, BPTT) and parse_schedule(schedule)[1]


class DataParallel:
    """This process's part of a data-parallel run (:mod:`ostl.distributed`; one process: a
    group of one)."""

    def __init__(self) -> None:
        self.active, self.world, self.is_main = dist.active(), dist.world_size(), dist.is_main()

    def check_batch(self, batch_size: int) -> None:
        if batch_size < self.world:
            raise OptionError(
                f"batch_size {batch_size} is smaller than the {self.world} processes: "
                "every process needs at least one sequence of each batch"
            )

    def device(self, dev: torch.device) -> torch.device:
        """This rank's device (its own GPU under torchrun)."""
        return dist.local_device(dev)

    def shard(self, batches: Iterable[Any]) -> Iterator[Any]:
        """This rank's slice of every batch."""
        return dist.shard_batches(batches)

    def gather(self, local: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every rank's ``local`` on rank 0 (None elsewhere): a collective."""
        return dist.gather_to_main(local)


def checked_device(device: str, threads: int | None) -> torch.device:
    """Set torch's CPU threads (None: leave them); ``device`` as a torch device, checked."""
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise OptionError(f"unknown device {device!r}: expected e.g. 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} requested but CUDA is not available here")
    return dev


def place(cfg: TrainConfig, parallel: DataParallel) -> torch.device:
    """Set torch's CPU threads; the checked device of the run (this rank's)."""
    return parallel.device(checked_device(cfg.device, cfg.threads))


class Hardware:
    """The PCM crossbars of a run (``cfg.hardware == "pcm"``, :mod:`ostl.hardware`); digital
    runs have none and every method does nothing."""

    @staticmethod
    def check_device(cfg: TrainConfig, device: torch.device) -> None:
        """Refuse a PCM run on another device than the CPU, before the run folder is written:
        the crossbars (their conductances and aihwkit's tiles) are simulated on the CPU."""
        if cfg.hardware is not None and device.type != "cpu":
            raise OptionError(
                f"--hardware {cfg.hardware} runs on the CPU only (the crossbars are simulated "
                f"there), not on device {cfg.device!r}: use --device cpu"
            )

    def __init__(self, cfg: TrainConfig, options: RunOptions, parallel: DataParallel) -> None:
        self.cfg = cfg
        self.session: HardwareSession | None = None
        if cfg.hardware is None:
            return
        if options.resume or options.writes_checkpoints or parallel.active:
            raise OptionError(
                "--hardware pcm runs in one process without checkpoints: the crossbars' "
                "conductances and the mixed-precision accumulators are not saved"
            )

    def attach(self, net: Network, learner: Learner) -> None:
        """Map the network and hook the optimizer (online schemes; see HardwareSession)."""
        if self.cfg.hardware is None:
            return
        from ..hardware.run import HardwareSession

        self.session = HardwareSession(self.cfg.pcm_update, seed=self.cfg.seed)
        self.session.attach(net, learner.optimizer, learner.rule)

    @property
    def in_the_loop(self) -> bool:
        """Training runs on the crossbars: the devices hold the last weights."""
        return self.session is not None and self.session.online

    def report(self, net: Network, test: Callable[[Network], float]) -> dict[str, Any] | None:
        """After training: program (offline), then the test metric after drift."""
        if self.session is None:
            return None
        self.session.finish(net)
        return self.session.report(net, test)


class Run:
    """One training run: one task, one network, one rule (see :mod:`ostl.run.train`).

    Args:
        cfg: the run's configuration (None fields take the task's defaults).
        out: run folder (None: write nothing).
        task: an already built task matching ``cfg``.
        options: run options (resume, checkpoints, stop after N steps, scalars to log).
        progress: show the progress (on rank 0): bars on a terminal, a few lines otherwise
            (:mod:`.display`).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out: str | Path | None = None,
        *,
        task: Task | None = None,
        options: RunOptions | None = None,
        progress: bool = True,
    ) -> None:
        options = options or RunOptions()
        cfg.check()
        options.check(out)
        self.out = Path(out) if out is not None else None
        self.parallel = parallel = DataParallel()
        device = place(cfg, parallel)
        Hardware.check_device(cfg, device)
        self.folder = RunFolder(self.out, writes=parallel.is_main)
        self.folder.create()  # now: an unwritable folder fails before anything else
        self.folder.remove_temps()  # of a writer killed mid-write (this process holds the lock)
        self.task = task = task or get_task(cfg.task, **cfg.task_options)
        self.cfg = cfg = cfg.resolve(task)
        assert cfg.epochs is not None and cfg.batch_size is not None and cfg.lr is not None
        self.epochs, self.batch_size = cfg.epochs, cfg.batch_size
        parallel.check_batch(cfg.batch_size)
        self.hardware = Hardware(cfg, options, parallel)
        self.display_mode = display_mode(progress and parallel.is_main)
        self.scalars = ScalarLog(self.out, options.log_every, options.tensorboard, parallel.is_main)
        self.resumed = options.resume
        self.checkpoints = Checkpointer(self.out, options)
        self.net = task.network(cfg.hidden, cfg.cell, cfg.recurrent, seed=cfg.seed).to(device)
        self.learner = self._learner(cfg.lr)
        self.hardware.attach(self.net, self.learner)
        self.meter, self.timer = MemoryMeter(self.learner), StepTimer()
        self.epoch = Epoch(self.learner, task, self.meter, self.timer)
        self.metric = task.metric()  # its name and direction
        self.selection = ModelSelection(self.net, self.metric.higher_is_better)
        self.data = torch.Generator().manual_seed(cfg.seed)  # the data order, per epoch
        self.progress = Progress(1, self.data.get_state(), [])
        self.signals = Signals(enabled=False)  # while training: see execute
        if options.resume:
            self._restore(self.checkpoints.load(cfg.to_json()))
        else:
            self.folder.config(cfg)  # now, so that --resume can rebuild the run after a crash
        self.folder.options(vars(options))  # the options --resume continues with
        self.t0 = time.perf_counter() - self.progress.elapsed

    def _learner(self, lr: float) -> Learner:
        rule = make_rule(self.cfg.rule, self.cfg.rule_options)
        return Learner(
            self.net,
            rule,
            loss_fn=self.task.loss_fn,
            optimizer=torch.optim.Adam(self.net.parameters(), lr=lr),
            update_every=update_every(rule, self.cfg.schedule),
            delayed_updates=delayed_updates(rule, self.cfg.schedule),
            nonfinite=self.cfg.nonfinite,
            # compile the online trace rules' step; BPTT and RTRL run eagerly (ostl compare)
            compile=self.cfg.compile and isinstance(rule, TraceRule),
            distributed=self.parallel.active,
            same_target_steps=True,  # every rank slices the same global batches
        )

    def _restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint: learner, epoch position, meters, model selection, RNG."""
        self.learner.load_state_dict(saved["learner"])
        self.meter.graph_freed()  # counts from the restored learner's updates
        self.meter.peak = int(saved["meter_peak"])
        self.timer.steps, self.timer.seconds = int(saved["timer"][0]), float(saved["timer"][1])
        self.epoch.load_state_dict(saved["epoch"])
        self.progress = Progress.from_checkpoint(saved["progress"])
        self.selection.load_state_dict(saved["progress"])
        self.scalars.load_state_dict(saved.get("scalars"))  # absent from older checkpoints
        set_rng_state(saved["rng"])  # last: nothing after it draws

    def payload(self) -> dict[str, Any] | None:
        """The checkpoint (on rank 0; None elsewhere): a collective in a process group."""
        self.progress.elapsed = time.perf_counter() - self.t0
        local = {  # what differs between ranks: each holds its own sequences' state and traces
            "learner": self.learner.state_dict(),
            "epoch": self.epoch.state_dict(),
            "meter_peak": self.meter.peak,
            "timer": [self.timer.steps, self.timer.total()],  # the steps of this batch too
            "scalars": self.scalars.state_dict(),
            "rng": rng_state(),
        }
        ranks = self.parallel.gather(local)
        if ranks is None:
            return None
        progress = {**vars(self.progress), **self.selection.state_dict()}
        shared = {"config": self.cfg.to_json(), "progress": progress, "processes": len(ranks)}
        return {**shared, **ranks[0], "ranks": ranks[1:]}

    def execute(self) -> RunResult:
        """Train the remaining epochs, select, test and write the run folder."""
        start = self.progress.epoch
        self.display = Display(
            self.display_mode, self.cfg.rule, self.epochs, start, self.metric.name
        )
        self.scalars.start(self.learner.steps, resumed=self.resumed)
        # SIGINT/SIGTERM: checkpoint at the next step (one process: the ranks would disagree)
        with Signals(enabled=not self.parallel.active) as self.signals:
            try:
                for epoch in range(start, self.epochs + 1):
                    self._train_epoch(epoch)
                    self._on_signal()
            except Stopped as stop:
                self.folder.metrics(self.progress.history)
                self._save_last()
                return self._result(stopped_at=stop.step)
            finally:
                self.display.close()
                self.scalars.close()
        return self._finish()

    def _on_signal(self) -> None:
        """After a step or an epoch: if SIGINT/SIGTERM came, save the run, raise Interrupted."""
        signum = self.signals.caught
        if signum is None:
            return
        step = self.learner.steps
        written = None
        if self.hardware.session is None:  # the crossbars' state is not saved
            written = self.checkpoints.save(self.payload(), step, force=True)
        self.folder.metrics(self.progress.history)
        self._save_last()
        raise Interrupted(signum, step, self.out, checkpoint=written is not None)

    def _save_last(self) -> None:
        """The current weights as ``model-last.safetensors`` (epoch: the epochs done)."""
        epoch = self.progress.epoch - 1
        self.folder.model(self.net, MODEL_LAST, self.cfg, epoch, step=self.learner.steps)

    def _train_epoch(self, epoch: int) -> None:
        """One epoch, its validation, its scalars and its end-of-epoch checkpoint."""
        self.data.set_state(self.progress.epoch_rng)
        batches, show = self.display.batches(
            self.parallel.shard(self.task.train_batches(self.batch_size, self.data)),
            self.task.num_train_batches(self.batch_size),
            epoch,
        )

        def after_step() -> None:
            step = self.learner.steps
            if self.scalars.due(step):
                lr = float(self.learner.optimizer.param_groups[0]["lr"])
                seconds = time.perf_counter() - self.t0
                self.scalars.row(step, epoch, self.epoch.running(), lr, seconds)
            self.checkpoints.after_step(step, self.payload)
            self._on_signal()

        train_loss, train_metric = self.epoch.run(batches, show, after_step)
        valid = evaluate(self.net, self.task, "valid", self.batch_size)
        if self.selection.offer(epoch, valid, self.net):
            self.folder.model(self.net, MODEL, self.cfg, epoch)
        seconds = time.perf_counter() - self.t0
        row = {"train_loss": train_loss, "train_metric": train_metric, "valid_metric": valid}
        self.progress.history.append({"epoch": epoch, **row, "seconds": seconds})
        name = self.metric.name
        scalars = {"train_loss": train_loss, f"train_{name}": train_metric, f"valid_{name}": valid}
        self.scalars.epoch_end(self.learner.steps, self.epoch.running(), scalars)
        self.display.epoch_end(epoch, train_loss, train_metric, valid, seconds)
        self.progress.epoch, self.progress.epoch_rng = epoch + 1, self.data.get_state()
        self.epoch.begin()
        self.folder.metrics(self.progress.history)  # consistent with the checkpoint
        self._save_last()
        if self.checkpoints.active:
            self.checkpoints.save(self.payload(), self.learner.steps)

    def _test(self, net: Network) -> float:
        return evaluate(net, self.task, "test", self.batch_size)

    def _finish(self) -> RunResult:
        """After the last epoch: the best weights, their test metric, the run folder."""
        if self.hardware.in_the_loop:  # the devices hold the last weights: no going back
            self.selection.keep_last(self.epochs, self.net)
        self._save_last()
        tests = self.selection.select(self.net, self.epochs, self._test)
        self.folder.model(self.net, MODEL, self.cfg, self.selection.best_epoch)
        result = self._result(tests)
        result.hardware = self.hardware.report(self.net, self._test)  # PCM: after drift
        self.folder.run(result, self.net, self.task)
        return result

    def _selected_valid(self) -> float:
        """The validation metric of the selected epoch (nan before the first epoch)."""
        best = self.selection.best_epoch
        return next((h["valid_metric"] for h in self.progress.history if h["epoch"] == best), nan)

    def _result(
        self, tests: tuple[float, float] = (float("nan"),) * 2, stopped_at: int | None = None
    ) -> RunResult:
        """The RunResult; a run stopped at ``stop_after_steps`` has no test metric yet (nan)."""
        return RunResult(
            config=self.cfg,
            metric=self.metric.name,
            higher_is_better=self.metric.higher_is_better,
            history=self.progress.history,
            test_metric=tests[0],
            best_epoch=self.selection.best_epoch,
            final_test_metric=tests[1],
            peak_bytes=self.meter.peak,
            seconds_per_step=self.timer.per_step,
            steps=self.timer.steps,
            updates=self.learner.updates,
            wall_seconds=time.perf_counter() - self.t0,
            out=str(self.out) if self.out is not None else None,
            skipped_updates=self.learner.skipped,
            stopped_at_step=stopped_at,
            valid_metric=self._selected_valid(),
            network=self.net,
        )
