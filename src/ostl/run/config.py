"""What defines a training run (:class:`TrainConfig`) and what it produced (:class:`RunResult`).

Both the run (:mod:`.run`) and the run folder (:mod:`.outputs`) import them from here, and so
does the command: the options of ``ostl train`` and ``ostl compare`` are generated from the
fields of :class:`TrainConfig` and their metadata (:func:`option`), so that a new field is a new
option, with its help and its default, in one place.

Metadata keys of a field (all optional):

- ``help``: the option's help text (the default is appended by the command);
- ``choices``: the values the option accepts (argparse checks them);
- ``flag``: the option's name where it is not ``--`` plus the field's name with dashes;
- ``metavar``: how the help names the value;
- ``default_help``: how the help names the default where the field's default is None;
- ``lower``: a registry name, lowercased on the command line (a ``module:attribute`` path
  keeps its case);
- ``min``: the smallest integer accepted on the command line (default 1).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import OptionError
from ..rules import RULES
from ..rules.base import NONFINITE
from ..tasks import Task, is_task_path, task_options
from .rule_options import make_rule

if TYPE_CHECKING:
    from ..layer import Network

__all__ = [
    "TrainConfig",
    "RunResult",
    "SCHEDULES",
    "parse_schedule",
    "PCM_UPDATES",
    "option",
]

#: The update schedules (``--schedule``; see :mod:`ostl.run.train`), K any positive integer.
SCHEDULES = ("online", "sequence", "every-K", "delayed", "delayed-every-K")
_SCHEDULE = re.compile(r"(online|sequence)|(delayed)(?:-every-([1-9][0-9]*))?|every-([1-9][0-9]*)")
PCM_UPDATES = ("mixed", "direct", "offline")  # as ostl.hardware.run (which needs aihwkit)


def option(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A TrainConfig field with its command-line metadata (see the module docstring)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


_TASKS = "the task's"


@dataclass
class TrainConfig:
    """Everything that defines a run; None fields take the task's defaults.

    Attributes:
        task: task name (``ostl list``), or a task of your own code, ``"module:attribute"``
            (a Task subclass or a function returning a Task; see :func:`ostl.tasks.get_task`).
        rule: rule name.
        cell: cell of the hidden layers (None: the task's default).
        hidden: hidden layer sizes, bottom first (None: the task's default).
        recurrent: give the hidden layers recurrent weights H.
        epochs: passes over the training data.
        batch_size: sequences per batch.
        lr: Adam learning rate.
        schedule: ``"online"`` or ``"sequence"`` (see :mod:`ostl.run.train`).
        seed: seed of the initial weights, the shuffling and the training spike encodings.
        device: torch device.
        threads: torch CPU threads (None: leave torch's default).
        task_options: options of the task (e.g. ``{"steps": 30}``); for ``"module:attribute"``
            its keyword arguments (JSON values, to be written to the run's config.json).
        hardware: ``"pcm"`` runs the synapses on simulated PCM crossbars (:mod:`ostl.hardware`,
            needs aihwkit); None: digital.
        pcm_update: with ``hardware="pcm"``: ``"mixed"`` or ``"direct"`` (learn online on the
            crossbars) or ``"offline"`` (train in software, then program the crossbars).
        nonfinite: ``"raise"`` or ``"skip"`` updates with NaN/Inf (see :class:`ostl.Learner`).
        compile: run the rule's step under ``torch.compile`` (trace rules; see
            :class:`ostl.Learner`).
        rule_options: options of the rule, as its class takes them (e.g.
            ``{"feedback": "random"}`` for OSTL with random feedback, ``{"scale": 0.5}`` for
            OSTTP); the options of type int, float, str or bool
            (:func:`ostl.run.rule_options.rule_option_types`).
    """

    task: str = option(
        "digits", "a task of your own as MODULE:ATTRIBUTE, or a task name (ostl list)", lower=True
    )
    rule: str = option("ostl", "learning rule (ostl list)", lower=True)
    cell: str | None = option(
        None, "cell of the hidden layers (ostl list)", default_help=_TASKS, lower=True
    )
    hidden: tuple[int, ...] | None = option(
        None, "hidden layer sizes, bottom first: 128,128 or 128 128", default_help=_TASKS
    )
    recurrent: bool = option(False, "recurrent weights H in each hidden layer")
    epochs: int | None = option(None, "passes over the training data", default_help=_TASKS)
    batch_size: int | None = option(None, "sequences per batch", default_help=_TASKS)
    lr: float | None = option(None, "Adam learning rate", default_help=_TASKS)
    schedule: str = option(
        "online",
        "online: the online rules update every step, BPTT every sequence; sequence: every "
        "rule once per sequence; every-K: the online rules every K steps; delayed, "
        "delayed-every-K: the same, each update applying the previous one's gradient",
        metavar="SCHEDULE",
    )
    seed: int = option(0, "seed of the weights, the data order and the encodings", min=0)
    device: str = option("cpu", "torch device, e.g. cpu or cuda")
    threads: int | None = option(1, "torch CPU threads")
    task_options: dict[str, Any] = option(
        {},
        "a task option, e.g. steps=30 (repeatable; ostl list shows each task's)",
        flag="--task-opt",
        metavar="KEY=VALUE",
    )
    hardware: str | None = option(
        None,
        "run the synapses on simulated PCM crossbars (aihwkit; docs/hardware.md)",
        choices=("pcm",),
        default_help="digital",
    )
    pcm_update: str = option(
        "mixed",
        "with --hardware pcm: mixed-precision or direct programming of every update (online, "
        "on the crossbars), or offline: train in software, then program",
        choices=PCM_UPDATES,
    )
    nonfinite: str = option(
        "raise",
        "NaN/Inf in inputs, signals or gradients: stop with an error naming the step (raise) "
        "or skip that update and count it (skip)",
        choices=NONFINITE,
    )
    compile: bool = option(
        False,
        "run the online rule's step under torch.compile (compiles in the first steps; "
        "BENCHMARKS.md says where it pays off)",
    )
    rule_options: dict[str, Any] = option(
        {},
        "an option of the rule, e.g. feedback=random (repeatable; ostl list shows each rule's)",
        flag="--rule-opt",
        metavar="KEY=VALUE",
    )

    def resolve(self, task: Task) -> TrainConfig:
        """A copy with every None budget field set to the task's default, checked.

        A registry task is recorded by its name and all its options; a task of your own code
        (``"module:attribute"``) by that path and the options given, which rebuild it.
        """
        d = task.defaults
        own = is_task_path(self.task)
        cfg = replace(
            self,
            task=self.task if own else task.name,
            rule=self.rule.lower(),
            cell=(self.cell or d.cell).lower(),
            hidden=tuple(self.hidden) if self.hidden is not None else d.hidden,
            epochs=self.epochs if self.epochs is not None else d.epochs,
            batch_size=self.batch_size if self.batch_size is not None else d.batch_size,
            lr=self.lr if self.lr is not None else d.lr,
            task_options=dict(self.task_options) if own else task_options(task),
            rule_options=dict(self.rule_options),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.rule.lower() not in RULES:
            raise OptionError(f"unknown rule {self.rule!r}: expected one of {', '.join(RULES)}")
        make_rule(self.rule, self.rule_options)  # every option known, of its type and valid
        parse_schedule(self.schedule)
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
        if self.pcm_update not in PCM_UPDATES:
            raise OptionError(
                f"pcm_update must be 'mixed', 'direct' or 'offline', got {self.pcm_update!r}"
            )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden) if self.hidden is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown keys are an error, missing ones (a config written
        before the field existed) take the field's default."""
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
    """What a run produced (also written to ``summary.json``, less the network).

    ``network`` is the trained network: after a finished run it holds the weights of
    ``test_metric`` (the best validation epoch; ``model.safetensors`` in the run folder), after
    a stopped one the current weights. It is not part of :meth:`to_json`.
    """

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
    valid_metric: float = math.nan  # the validation metric of best_epoch (model selection)
    network: Network | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Every field but the network, as JSON values."""
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        del d["network"]
        d["config"] = self.config.to_json()
        return d


def parse_schedule(schedule: str) -> tuple[int | None, bool]:
    """The online rules' ``(update_every, delayed_updates)`` under a schedule (BPTT updates
    once per sequence under every schedule, truncated BPTT at the end of each window except
    under ``sequence``: :func:`ostl.run.run.update_every`; see :mod:`ostl.run.train`).

    Raises:
        OptionError: not one of :data:`SCHEDULES`.
    """
    m = _SCHEDULE.fullmatch(schedule) if isinstance(schedule, str) else None
    if m is None:
        raise OptionError(
            "schedule must be online, sequence, every-K, delayed or delayed-every-K (K a "
            f"positive integer), got {schedule!r}"
        )
    if m.group(1):
        return (1 if schedule == "online" else None), False
    if m.group(2):
        return int(m.group(3) or 1), True
    return int(m.group(4)), False
