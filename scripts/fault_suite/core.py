"""What every fault class shares: the tiny run, the suite's settings, results, the reference.

A fault class is a list of *tries* (:class:`Try`): each sets up one fault against real ``ostl``
commands in a folder of its own and records the promises it saw broken (``failures``, one line
each) and the damage it saw (``lost``: checkpoints lost beyond the last completed one, a folder
that refuses to resume, tracebacks shown to the user). :class:`FaultClass` holds a class's
promise in plain words and its tries.

The reference (:class:`Reference`) is the same tiny run never interrupted, with every
checkpoint kept: interrupted runs must end with its weights and step count exactly.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .procs import Command, environment, hook_folder

#: The tiny run of every fault (digits, 8 hidden units, 2 epochs of 8 batches of 4 steps):
#: about 5 s a command on one core, most of it start-up.
TINY = [
    "--task", "digits", "--hidden", "8", "--batch-size", "16", "--epochs", "2",
    "--task-opt", "steps=4", "--task-opt", "train_size=128", "--task-opt", "test_size=16",
    "--no-progress",
]  # fmt: skip
EVERY = 5  # --checkpoint-every of the faults' runs
KEEP = 2  # --keep of the faults' runs (so that a checkpoint write also deletes an old one)
CKPT = ["--checkpoint-every", str(EVERY), "--keep", str(KEEP)]
MODES = ("quick", "default", "long")


@dataclass
class Try:
    """One fault injected and checked."""

    name: str
    failures: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    count: int = 1  # faults injected (a chain of kills counts each kill)
    seconds: float = 0.0  # how long the try took

    def fail(self, reason: str | None) -> bool:
        """Record a broken promise (None: nothing); True if one was recorded."""
        if reason:
            self.failures.append(reason)
        return bool(reason)


@dataclass
class FaultClass:
    """A class of faults: its promise in plain words, what the suite checks, its tries."""

    number: int
    key: str
    title: str
    promise: str
    checked: str
    tries: list[Try] = field(default_factory=list)
    unit: str = "tries"  # how the tries column counts (e.g. "kills")

    @property
    def failed(self) -> list[Try]:
        return [t for t in self.tries if t.failures]

    @property
    def injected(self) -> int:
        return sum(t.count for t in self.tries)


@dataclass
class Reference:
    """The uninterrupted tiny run (every checkpoint kept) and how long its stages took."""

    folder: Path
    steps: list[int]  # the steps of its checkpoints, in order
    ready: float  # seconds from start until config.json existed (training about to start)
    seconds: float  # the whole command
    per_step: float = 0.01  # seconds per training step, checkpoint writes included

    def checkpoint(self, step: int) -> Path:
        return self.folder / "checkpoints" / f"step-{step:012d}.pt"

    @property
    def final(self) -> Path:
        return self.checkpoint(self.steps[-1])


class Job(NamedTuple):
    """A try to run: its class, its name and the function that makes it."""

    cls: FaultClass
    name: str
    run: Callable[[], Try]


class Suite:
    """Settings of one run of the suite, its scratch folder and its reference run."""

    def __init__(self, mode: str, seed: int, jobs: int, keep_temp: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.seed, self.jobs, self.keep_temp = mode, seed, jobs, keep_temp
        self.root = Path(tempfile.mkdtemp(prefix="ostl-faults-"))
        self.hooks = hook_folder(self.root)
        self._ref: Reference | None = None

    def pick(self, quick: Any, default: Any, long: Any) -> Any:
        """The value for this mode."""
        return {"quick": quick, "default": default, "long": long}[self.mode]

    def rng(self, name: str) -> random.Random:
        """A random generator of its own for each try (the same for a seed, in any order)."""
        return random.Random(f"{self.seed}:{name}")

    def folder(self, name: str) -> Path:
        """A fresh scratch folder for a try."""
        path = self.root / "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
        n, base = 1, path
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True)
        return path

    def env(
        self, fault: dict[str, Any] | None = None, probe: Path | None = None, **extra: str
    ) -> dict[str, str]:
        return environment(fault, self.hooks, probe, **extra)

    @property
    def reference(self) -> Reference:
        if self._ref is None:
            raise RuntimeError("the reference run has not been made (Suite.make_reference)")
        return self._ref

    def use_reference(self, ref: Reference) -> None:
        """Compare with ``ref`` (made by an earlier suite) instead of making one."""
        self._ref = ref

    def make_reference(self) -> Reference:
        """Run the tiny run once, uninterrupted, keeping every checkpoint; its timings are
        those of a warm start (a first command loads torch from disk, much slower)."""
        Command(["list"], self.root, self.env(), "warm-up").wait()
        folder = self.root / "reference"
        cmd = Command(
            ["train", *TINY, "--out", folder, "--checkpoint-every", EVERY, "--keep", 100000],
            self.root, self.env(), "reference",
        )  # fmt: skip
        seen_config = _first_seen(lambda: (folder / "config.json").is_file(), cmd)
        done = cmd.wait()
        if done.rc != 0:
            raise RuntimeError(f"the uninterrupted reference run failed: {done.last}")
        files = step_files(folder)
        span = files[-2].stat().st_mtime - files[0].stat().st_mtime if len(files) > 2 else 0.0
        per_step = span / (step_of(files[-2]) - step_of(files[0])) if span > 0 else 0.01
        steps = [step_of(p) for p in files]
        ready = seen_config or done.seconds / 2
        self._ref = Reference(folder, steps, ready, done.seconds, per_step)
        return self._ref

    def cleanup(self) -> None:
        if not self.keep_temp:
            shutil.rmtree(self.root, ignore_errors=True)


def _first_seen(condition: Callable[[], bool], cmd: Command) -> float | None:
    """Seconds after ``cmd`` started at which ``condition`` first held (None: never)."""
    while cmd.running():
        if condition():
            return cmd.elapsed()
        time.sleep(0.003)
    return None


def step_files(run: Path) -> list[Path]:
    """The checkpoint files of a run folder, oldest first."""
    d = run / "checkpoints"
    if not d.is_dir():
        return []
    return sorted((p for p in d.glob("step-*.pt") if p.name[5:-3].isdigit()), key=step_of)


def step_of(path: Path) -> int:
    return int(path.name[5:-3])


def newest_step(run: Path) -> int:
    """The step of the newest checkpoint file of a run folder (-1: none)."""
    files = step_files(run)
    return step_of(files[-1]) if files else -1


def temporary_files(run: Path) -> list[Path]:
    """Temporary files of interrupted writes left in a run folder or its checkpoints."""
    return [p for d in (run, run / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp*")]
