"""What the fair comparison runs (for ``scripts/fair.py``, whose docstring is the protocol): the
rule variants, the per-task budgets and the studies of one setting, a run's request, the plan of
the lr sweep and seeds, and how the sweep goes on past an edge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any

from fair_report import choose_lr, run_schedule

from ostl.run.config import TrainConfig
from ostl.tasks import TASKS
from results import BUDGETS

#: Rule variants of the protocol: name -> (rule, rule options).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bptt": ("bptt", {}),
    # truncated BPTT, 8-step windows: gradients ignore paths longer than 8 steps; updates at
    # each window's end under the online schedule, once per sequence under sequence
    "tbptt-8": ("bptt", {"truncation": 8}),
    "ostl": ("ostl", {}),
    "ostl-rnd": ("ostl", {"feedback": "random"}),
    "osttp": ("osttp", {}),
    "eprop": ("eprop", {}),
    # OSTTP's projection studied (not in the default list): its distribution, and its scale
    # (uniform in ±scale; the default is 1/sqrt(outputs): 0.5 for recall's 4 symbols, 0.32 for
    # 10 classes), here at about 4x and 1/4x of those
    "osttp-normal": ("osttp", {"distribution": "normal"}),
    "osttp-scale-2": ("osttp", {"scale": 2.0}),
    "osttp-scale-0.1": ("osttp", {"scale": 0.1}),
}
DEFAULT_VARIANTS = ("bptt", "tbptt-8", "ostl", "ostl-rnd", "osttp", "eprop")
DEFAULT_TASKS = ("digits", "recall", "smnist", "mnist", "spoken-digits", "pattern", "chorales")
NETS = ("shallow", "deep")

#: Per-task budget of the protocol, and why: RESULTS.md's (scripts/results.py) where it fits
#: about 90 runs per task on a small machine, a smaller one where it does not.
FAIR_BUDGETS: dict[str, tuple[TrainConfig, str]] = {
    **{t: BUDGETS[t] for t in ("digits", "recall", "smnist", "chorales")},
    "mnist": (
        TrainConfig(task="mnist", epochs=2, task_options={"train_size": 5000}),
        "the first 5,000 training images and 2 epochs (RESULTS.md's main table: 10,000 and 3)",
    ),
    "spoken-digits": (
        TrainConfig(task="spoken-digits", epochs=5),
        "the task's default network and data, 5 epochs instead of 10",
    ),
    "pattern": (
        TrainConfig(task="pattern", epochs=100),
        "the task's default network, 100 epochs instead of 200",
    ),
}

#: Studies of one setting beside the tasks (run with ``--tasks``; left out of the claims' counts).
STUDIES: dict[str, tuple[TrainConfig, str]] = {
    "digits-last": (
        TrainConfig(task="digits", task_options={"targets_at": "last"}),
        "digits' budget with the class at the last step only (`--task-opt targets_at=last`; "
        "loss and metric there)",
    ),
}
FAIR_BUDGETS.update(STUDIES)

#: Where each task's targets are, and what they are: OSTTP's hidden layers learn only from them.
TARGETS = {
    "digits": "a class, at every step",
    "digits-last": "a class, at the last step only",
    "recall": "classes, at the recall steps only (after a delay of 20 steps)",
    "smnist": "a class, at the last step only",
    "mnist": "a class, at every step",
    "spoken-digits": "a class, at every step where the word sounds",
    "pattern": "real values (regression), at every step",
    "chorales": "88 notes on or off (next frame), at every step",
}

_VARIANTS_NOTE = (
    "The OSTTP variants (osttp-normal, osttp-scale-2, osttp-scale-0.1; on the shallow network) "
    "change its projection B: its distribution (normal instead of uniform) and its scale (2 and "
    "0.1 against the default 1/sqrt(outputs), {default}). Under Adam a constant factor on a "
    "layer's gradient cancels (each weight's step is divided by its own gradient's running "
    "size; only Adam's epsilon sees the factor), so the scale variants follow the default at the "
    "same lr; the lr, swept alike, is the scale that matters (docs/target-projection.md)."
)

NOTES = {
    "pattern": "Pattern has one frozen input/target pair, evaluated on itself: its validation "
    "and test metrics are the same pair's, so here the lr is chosen on the test pair.",
    "recall": "The target exists only during the recall steps, after the delay: OSTTP's hidden "
    "layers get a learning signal only then, long after the symbols they had to store. "
    + _VARIANTS_NOTE.format(default="0.5 for 4 symbols"),
    "digits": _VARIANTS_NOTE.format(default="0.32 for 10 classes"),
    "smnist": "The target exists only at the last row: the online rules then update once per "
    "sequence under both schedules, and OSTTP's hidden layers learn only there. The OSTTP "
    "variants (osttp-normal, osttp-scale-2, osttp-scale-0.1) are not run on smnist yet.",
    "digits-last": "The same data, network and budget as digits, with the class at the last step "
    "only: the controlled experiment for targets at the end of the sequence (compare OSTTP's gap "
    "with digits'). With one target per sequence, every rule updates once per sequence under "
    "both schedules.",
}


@dataclass(frozen=True)
class Job:
    """One run of the protocol."""

    task: str
    variant: str
    net: str
    schedule: str  # the schedule the run trains with (BPTT: always "sequence")
    factor: float
    lr: float
    seed: int
    order: int = 0  # its place in the lr sweep: the factors of --lrs, then the extensions

    @property
    def path(self) -> str:
        return (
            f"{self.task}/{self.net}/{self.schedule}/{self.variant}/lr{self.lr:g}-seed{self.seed}"
        )


def budget(task: str, quick: bool) -> tuple[TrainConfig, str]:
    """The task's budget; ``quick``: 1 epoch on a few hundred sequences (checks the script)."""
    cfg, why = FAIR_BUDGETS[task]
    if not quick:
        return cfg, why
    opts = dict(cfg.task_options)
    known = {f.name for f in dataclasses.fields(TASKS[cfg.task])}
    for k, cap in (("train_size", 256), ("test_size", 128)):
        if k in known:
            opts[k] = min(opts.get(k) or TASKS[cfg.task].quick.get(k) or cap, cap)
    return replace(cfg, epochs=1, task_options=opts), "quick: 1 epoch, a few hundred sequences"


def hidden(base: TrainConfig, net: str) -> tuple[int, ...]:
    """Shallow: the budget's (or the task's) hidden layers; deep: two of the first's width."""
    sizes = base.hidden or TASKS[base.task].defaults.hidden
    return tuple(sizes) if net == "shallow" else (sizes[0], sizes[0])


def base_lr(base: TrainConfig) -> float:
    return base.lr if base.lr is not None else TASKS[base.task].defaults.lr


def request(job: Job, base: TrainConfig) -> TrainConfig:
    """The run's configuration. A variant with random matrices (OSTL rnd's feedback, OSTTP's
    projections) draws them from the run's seed, so the seeds vary them as they vary the
    weights."""
    rule, options = VARIANTS[job.variant]
    if rule == "osttp" or options.get("feedback") == "random":
        options = {**options, "seed": job.seed}
    h = hidden(base, job.net)
    return replace(base, rule=rule, rule_options=dict(options), hidden=h, schedule=job.schedule,
                   lr=job.lr, seed=job.seed, threads=1)  # fmt: skip


def plan(
    tasks: list[str], variants: list[str], nets: list[str], schedules: list[str],
    factors: list[float], seeds: list[int], quick: bool,
) -> tuple[list[Job], dict[Job, list[Job]]]:  # fmt: skip
    """The sweep's jobs (first seed, every lr), and for each, the seeds' jobs at its lr."""
    sweep: list[Job] = []
    rest: dict[Job, list[Job]] = {}
    for task in tasks:
        base = budget(task, quick)[0]
        for variant in variants:
            for net in nets:
                for sched in dict.fromkeys(run_schedule(variant, s) for s in schedules):
                    for i, f in enumerate(factors):
                        lr = round(base_lr(base) * f, 12)
                        job = Job(task, variant, net, sched, f, lr, seeds[0], order=i)
                        sweep.append(job)
                        rest[job] = [replace(job, seed=s) for s in seeds[1:]]
    return sweep, rest


def extension(group: list[Job], done: dict[Job, dict[str, Any]], tried: int, limit: int,
              quick: bool) -> Job | None:  # fmt: skip
    """The next sweep run of one (task, rule, network, schedule), or None: where the best lr of
    ``group`` (its sweep so far, ``tried`` factors of which came from ``--lrs``) is the largest
    (smallest) factor tried, × 2 (× ½) past it, at most ``limit`` times; a single factor is no
    range, so it is never extended."""
    records = [done[j] for j in group]
    hib = next((r["result"]["higher_is_better"] for r in records if "result" in r), True)
    best = choose_lr(records, hib)
    factors = [j.factor for j in group]
    if best is None or tried < 2 or len(group) - tried >= limit:
        return None
    edge = {max(factors): 2.0, min(factors): 0.5}.get(best["factor"])
    if edge is None:
        return None
    f, first = best["factor"] * edge, group[0]
    lr = round(base_lr(budget(first.task, quick)[0]) * f, 12)
    return replace(first, factor=f, lr=lr, order=len(group))
