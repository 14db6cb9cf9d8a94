"""Write RESULTS.md's fair-comparison section: every rule tuned the same way, under two update
schedules, on a shallow and a deep network, over several seeds.

    python scripts/fair.py --jobs 2                    # make results-fair (hours: see below)
    python scripts/fair.py --tasks digits --rules bptt,ostl,osttp --jobs 2
    python scripts/fair.py --quick --tasks digits      # a check: runs/fair-quick/RESULTS-quick.md
    python scripts/fair.py --render-only               # the section again, from its data

RESULTS.md's main tables (``scripts/results.py``) train every rule with one shared learning
rate, each at its natural cadence, so their gaps mix gradient quality with update count and step
size. This protocol separates them:

- tasks (``--tasks``): classification (digits, recall, smnist, mnist, spoken-digits), regression
  (pattern) and NLL (chorales), each with a budget (``FAIR_BUDGETS``: epochs and data, the same
  for every rule; RESULTS.md's budgets where they fit the protocol's many runs);
- rules (``--rules``, ``VARIANTS``): bptt, ostl, ostl-rnd (OSTL with ``feedback="random"``),
  osttp, eprop; a rule that refuses a network (``UnsupportedError``: e.g. e-prop needs an
  ``ostl.Readout`` on top, which every task network has) is skipped with the reason. The task
  networks have no recurrent weights, where e-prop's traces and signals are OSTL's: its row
  checks that (``--rules`` without eprop saves a fifth of the runs). The random matrices of
  ostl-rnd and osttp come from the rule's own seed (0), the same for every run seed;
- networks (``--nets``): *shallow* (the task's default hidden layers) and *deep* (two stateful
  hidden layers of the default width, ``hidden=(n, n)``);
- schedules (``--schedules``): *sequence* (every rule updates once per sequence: gradient quality
  alone) and *online* (each rule at its natural cadence: the online rules every step); BPTT
  updates once per sequence under both, so one set of BPTT runs serves both columns;
- learning rate: per (task, rule, network, schedule), the budget's lr × each factor of ``--lrs``
  (default 1, 0.5, 2) on the first seed; the lr whose run has the best *validation* metric
  (``RunResult.valid_metric``, of its model-selected epoch) is chosen, ties to the earlier
  factor; the test metric plays no part (:func:`fair_report.choose_lr`);
- seeds (``--seeds``, default 0, 1, 2) at the chosen lr; the section reports the test metric's
  mean ± std, the relative gap to BPTT under the same network and schedule, the chosen lr, the
  budget, the run time, the machine and this command; per task, whether OSTL is within 2 % of
  BPTT and OSTTP within 5 % under the sequence schedule (computed); and a "claims -> evidence"
  table (:func:`fair_report.claims`).

Every finished run is kept as JSON under ``--runs`` (default ``runs/fair``, ``runs/fair-quick``
with ``--quick``): ``<task>/<net>/<schedule>/<rule>/lr<lr>-seed<k>.json``. A run whose file
holds the same request is not run again, so an interrupted protocol continues where it stopped.
Runs go to ``--jobs`` processes, one torch thread each. The section goes between
``<!-- section:fair -->`` markers (``ostl.run.sections.write_section``): the other sections of
RESULTS.md are kept, and ``scripts/results.py`` keeps this one.

Cost: per task, 4 online rules × 2 networks × 2 schedules × (3 lrs + 2 more seeds) runs, plus
2 × 5 BPTT runs: 90 runs, a deep run costing 1.2 to 4 times a shallow one. Estimated from
RESULTS.md's run times and the per-step times of a ``--quick`` run, on 2 cores with ``--jobs 2``:
about 8 hours of wall time for the seven tasks (mnist 2.6 h, digits 1.4 h, smnist 1.1 h,
spoken-digits 1 h, pattern, chorales 0.6 h each, recall 0.4 h). ``--quick`` (every task, every
rule, 630 runs of one short epoch) takes about 17 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from fair_claims import claims_section
from fair_report import choose_lr, embedded, run_schedule, section

from ostl.errors import NonFiniteError, UnsupportedError
from ostl.run.config import TrainConfig
from ostl.run.sections import describe_machine, read_sections, write_section
from ostl.run.train import train
from ostl.tasks import TASKS
from results import BUDGETS, ROOT, _load_existing

# About 420 lines on purpose: its first 50 are the protocol written out for readers of the
# script; the numbers and text of the section are in fair_report.py, the claims in fair_claims.py.
SECTION = "fair"
CLAIMS = "claims"  # kept at the top of RESULTS.md (scripts/results.py keeps it there)

#: Rule variants of the protocol: name -> (rule, rule options).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bptt": ("bptt", {}),
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
DEFAULT_VARIANTS = ("bptt", "ostl", "ostl-rnd", "osttp", "eprop")
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

NOTES = {
    "pattern": "Pattern has one frozen input/target pair, evaluated on itself: its validation "
    "and test metrics are the same pair's, so here the lr is chosen on the test pair.",
    "smnist": "The target exists only at the last row: the online rules then update once per "
    "sequence under both schedules.",
    "recall": "The target exists only during the recall steps, after the delay: OSTTP's hidden "
    "layers get a learning signal only then, long after the symbols they had to store. The "
    "OSTTP variants change its projection B: the distribution (normal) and the scale (2 and "
    "0.1 against the default 0.5). With Adam, B's scale cancels out (each weight's step is "
    "normalised by its own gradient's size; only Adam's epsilon sees the scale), so the scale "
    "variants follow the default closely; the learning rate, swept alike, is the scale that "
    "matters. The sweep often chose its largest factor (lr 0.01): a wider sweep is left to do.",
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
    known = {f.name for f in dataclasses.fields(TASKS[task])}
    for k, cap in (("train_size", 256), ("test_size", 128)):
        if k in known:
            opts[k] = min(opts.get(k) or TASKS[task].quick.get(k) or cap, cap)
    return replace(cfg, epochs=1, task_options=opts), "quick: 1 epoch, a few hundred sequences"


def hidden(task: str, base: TrainConfig, net: str) -> tuple[int, ...]:
    """Shallow: the budget's (or the task's) hidden layers; deep: two of the first's width."""
    sizes = base.hidden or TASKS[task].defaults.hidden
    return tuple(sizes) if net == "shallow" else (sizes[0], sizes[0])


def base_lr(task: str, base: TrainConfig) -> float:
    return base.lr if base.lr is not None else TASKS[task].defaults.lr


def request(job: Job, base: TrainConfig) -> TrainConfig:
    rule, options = VARIANTS[job.variant]
    h = hidden(job.task, base, job.net)
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
                    for f in factors:
                        lr = round(base_lr(task, base) * f, 12)
                        job = Job(task, variant, net, sched, f, lr, seeds[0])
                        sweep.append(job)
                        rest[job] = [replace(job, seed=s) for s in seeds[1:]]
    return sweep, rest


# -- running and keeping runs ---------------------------------------------------------------
def load_record(path: Path, req: dict[str, Any]) -> dict[str, Any] | None:
    """The kept record at ``path`` if it answers ``req`` (the same request); None: run it."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short by a kill: run again
    return record if record.get("request") == req else None


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)  # a record is whole or absent


def execute(job: Job, req: dict[str, Any], path: str) -> dict[str, Any]:
    """Train one job (in a worker process, one torch thread) and keep its record: the job, the
    request, the run's summary (``result``: RunResult.to_json()), or why there is none."""
    torch.set_num_threads(1)
    record: dict[str, Any] = {**asdict(job), "request": req}
    try:
        res = train(TrainConfig.from_json(req), None, progress=False).to_json()
    except UnsupportedError as e:
        record["skipped"] = str(e).splitlines()[0]
    except NonFiniteError as e:  # e.g. too large an lr: never chosen, counted as failed
        record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    else:
        record.update(test=res["test_metric"], valid=res["valid_metric"], wall=res["wall_seconds"])
        record["result"] = res
    _write(Path(path), record)
    return record


#: What the section embeds of each record (the rest stays in the kept files).
SLIM = ("task", "variant", "net", "schedule", "factor", "lr", "seed", "test", "valid", "wall",
        "error", "skipped")  # fmt: skip


def slim(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in SLIM if k in record}


def settings(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task, its metric and setting, from its finished runs (see :mod:`fair_report`)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if "result" not in r:
            continue
        res, c = r["result"], r["result"]["config"]
        st = out.setdefault(r["task"], {
            "metric": res["metric"], "higher_is_better": res["higher_is_better"],
            "cell": c["cell"], "epochs": c["epochs"], "batch_size": c["batch_size"],
            "task_options": c["task_options"], "base_lr": round(r["lr"] / r["factor"], 12),
            "hidden": {},
        })  # fmt: skip
        st["hidden"].setdefault(r["net"], c["hidden"])
    return out


def run_jobs(
    jobs: list[Job], runs: Path, n_jobs: int, quick: bool, done: dict[Job, dict[str, Any]]
) -> int:
    """Run every job without a kept record (adds each record to ``done``); how many ran."""
    todo, unique = [], list(dict.fromkeys(jobs))
    for job in unique:
        req = request(job, budget(job.task, quick)[0]).to_json()
        record = load_record(runs / f"{job.path}.json", req)
        if record is not None:
            done[job] = record
        else:
            todo.append((job, req))
    print(f"  {len(unique) - len(todo)} kept, {len(todo)} to run", flush=True)
    todo.sort(key=lambda jr: (jr[0].net != "deep", jr[0].schedule != "online"))  # long first
    # spawn, not fork: the caller may have run torch (OpenMP is not fork-safe)
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("spawn")) as pool:
        futures = [(job, pool.submit(execute, job, req, str(runs / f"{job.path}.json")))
                   for job, req in todo]  # fmt: skip
        for job, fut in futures:
            r = done[job] = fut.result()
            what = r.get("skipped") or r.get("error") or f"valid {r['valid']:.4f}"
            print(f"  {job.path}: {what}", flush=True)
    return len(todo)


def protocol(
    jobs_plan: tuple[list[Job], dict[Job, list[Job]]], runs: Path, n_jobs: int, quick: bool
) -> tuple[list[dict[str, Any]], int]:
    """Sweep on the first seed, choose each lr, then the other seeds: every record, and how
    many runs ran now (the others were kept)."""
    sweep, rest = jobs_plan
    done: dict[Job, dict[str, Any]] = {}
    print(f"sweep: {len(sweep)} runs", flush=True)
    ran = run_jobs(sweep, runs, n_jobs, quick, done)
    groups: dict[tuple[str, str, str, str], list[Job]] = {}
    for job in sweep:
        groups.setdefault((job.task, job.variant, job.net, job.schedule), []).append(job)
    seeds: list[Job] = []
    for group in groups.values():
        records = [done[j] for j in group]
        hib = next((r["result"]["higher_is_better"] for r in records if "result" in r), True)
        best = choose_lr(records, hib)
        if best is not None:
            seeds += rest[next(j for j in group if done[j] is best)]
    print(f"seeds at the chosen learning rates: {len(seeds)} runs", flush=True)
    ran += run_jobs(seeds, runs, n_jobs, quick, done)
    return [done[j] for j in dict.fromkeys([*sweep, *seeds])], ran


# -- the command ----------------------------------------------------------------------------
def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    p.add_argument("--rules", default=",".join(DEFAULT_VARIANTS),
                   help=f"rule variants, some of {', '.join(VARIANTS)}")  # fmt: skip
    p.add_argument("--nets", default=",".join(NETS))
    p.add_argument("--schedules", default="sequence,online")
    p.add_argument("--seeds", default="0,1,2", help="the first is the sweep's")
    p.add_argument("--lrs", default="1,0.5,2", help="factors on the task's lr (ties: earlier)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (one thread each)")
    p.add_argument("--quick", action="store_true", help="1 epoch on a few hundred sequences")
    p.add_argument("--runs", help="folder of the kept runs (default runs/fair or runs/fair-quick)")
    p.add_argument("--out", help="file to write the section to (default RESULTS.md; with "
                   "--quick, RESULTS-quick.md in the runs folder)")  # fmt: skip
    p.add_argument("--render-only", action="store_true", help="rewrite the section from its data")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed lists of the command, each checked (argparse's error on a bad one)."""
    known: dict[str, Any] = {
        "tasks": FAIR_BUDGETS, "rules": VARIANTS, "nets": NETS, "schedules": ("sequence", "online")
    }  # fmt: skip
    lists: dict[str, list[Any]] = {k: _split(getattr(args, k)) for k in known}
    for k, names in lists.items():
        bad = [n for n in names if n not in known[k]]
        if bad or not names:
            p.error(f"--{k}: unknown {bad or 'none given'}; expected some of {', '.join(known[k])}")
    try:
        lists["seeds"] = [int(s) for s in _split(args.seeds)]
        lists["lrs"] = [float(f) for f in _split(args.lrs)]
    except ValueError as e:
        p.error(f"--seeds takes integers, --lrs positive numbers: {e}")
    if not lists["seeds"] or not lists["lrs"] or min(lists["lrs"]) <= 0 or args.jobs < 1:
        p.error("--seeds and --lrs need at least one value, --lrs positive ones, --jobs >= 1")
    return lists


def recorded(argv: list[str] | str) -> str:
    """The command as RESULTS.md names it: where the runs are kept and which file the section
    goes to (``--runs``, ``--out``) change no result, and may be paths of one machine."""
    if isinstance(argv, str):  # a command recorded before: its arguments
        argv = argv.split()[2:]
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--runs", "--out"):
            skip = True
        elif not a.startswith(("--runs=", "--out=")):
            kept.append(a)
    return " ".join(["python scripts/fair.py", *kept])


def _meta(
    args: argparse.Namespace, lists: dict[str, Any], argv: list[str] | None
) -> dict[str, Any]:
    tasks = lists["tasks"]
    return {
        "command": recorded(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine().rsplit(", ", 1)[0],  # less the main process's threads
        "date": time.strftime("%Y-%m-%d"),
        "jobs": args.jobs,
        "quick": args.quick,
        "tasks": tasks,
        "variants": lists["rules"],
        "nets": lists["nets"],
        "schedules": lists["schedules"],
        "seeds": lists["seeds"],
        "factors": lists["lrs"],
        "notes": {t: NOTES[t] for t in tasks if t in NOTES},
        "budgets": {t: budget(t, args.quick)[1] for t in tasks},
    }


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    runs = Path(args.runs or ROOT / "runs" / ("fair-quick" if args.quick else "fair"))
    out = Path(args.out or (runs / "RESULTS-quick.md" if args.quick else ROOT / "RESULTS.md"))
    if args.render_only:
        found = embedded(read_sections(out.read_text()).get(SECTION, "")) if out.exists() else None
        if found is None:
            p.error(f"{out} holds no fair section to render again")
        records, meta = found
        meta["notes"] = {t: NOTES[t] for t in meta["tasks"] if t in NOTES}  # text: the newest
        meta["command"] = recorded(meta["command"])
    else:
        lists = _check(p, args)
        t0 = time.perf_counter()
        jobs_plan = plan(lists["tasks"], lists["rules"], lists["nets"], lists["schedules"],
                         lists["lrs"], lists["seeds"], args.quick)  # fmt: skip
        full, ran = protocol(jobs_plan, runs, args.jobs, args.quick)
        meta = {**_meta(args, lists, argv), "wall": time.perf_counter() - t0, "ran": ran}
        meta["settings"] = settings(full)
        records = [slim(r) for r in full]
    results_data = _load_existing(out) if out.exists() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    write_section(out, SECTION, section(records, meta, results_data))
    write_section(out, CLAIMS, claims_section(records, meta, results_data))
    print(f"wrote the {SECTION} and {CLAIMS} sections of {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
