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
- rules (``--rules``, ``VARIANTS``): bptt, tbptt-8 (BPTT with ``truncation=8``), ostl,
  ostl-rnd (OSTL with ``feedback="random"``), osttp, eprop; a rule that refuses a network
  (``UnsupportedError``: e.g. e-prop needs an ``ostl.Readout`` on top, which every task network
  has) is skipped with the reason. The task networks have no recurrent weights, where e-prop's
  traces and signals are OSTL's: its row checks that. The random matrices of ostl-rnd and osttp
  are drawn from the run's seed (``--rule-opt seed=``), like its initial weights;
- networks (``--nets``): *shallow* (the task's default hidden layers) and *deep* (two stateful
  hidden layers of the default width, ``hidden=(n, n)``);
- schedules (``--schedules``): *sequence* (every rule updates once per sequence: gradient quality
  alone) and *online* (each rule at its natural cadence: the online rules every step); BPTT
  updates once per sequence under both, so one set of BPTT runs serves both columns;
- learning rate: per (task, rule, network, schedule), the budget's lr × each factor of ``--lrs``
  (default 1, 0.5, 2) on the first seed; the lr whose run has the best *validation* metric
  (``RunResult.valid_metric``, of its model-selected epoch) is chosen, ties to the earlier
  factor; the test metric plays no part (:func:`fair_report.choose_lr`). Where the best is the
  largest (smallest) factor tried, the sweep goes on × 2 (× ½) past it while the best stays at
  the edge, up to ``--extend`` (default 2) more runs (:func:`extension`);
- seeds (``--seeds``, default 0, 1, 2) at the chosen lr; the section reports the test metric's
  mean ± std, the relative gap to BPTT under the same network and schedule, the chosen lr, the
  budget, the run time, the machine and this command; per task, whether OSTL is within 2 % of
  BPTT and OSTTP within 5 % under the sequence schedule (computed); and a "claims -> evidence"
  table (:func:`fair_report.claims`).

Studies of one setting (``STUDIES``, e.g. ``digits-last``: the class at the last step only)
are tasks of their own, run when ``--tasks`` names them and left out of the claims' counts.

Every finished run is kept as JSON under ``--runs`` (default ``runs/fair``, ``runs/fair-quick``
with ``--quick``): ``<task>/<net>/<schedule>/<rule>/lr<lr>-seed<k>.json``. A run whose file
holds the same request is not run again, so an interrupted protocol continues where it stopped.
Runs go to ``--jobs`` processes, one torch thread each. The section goes between
``<!-- section:fair -->`` markers (``ostl.run.sections.write_section``): the other sections of
RESULTS.md are kept, and ``scripts/results.py`` keeps this one. A command *adds* to the section
(:func:`fair_data.merge`): its runs replace those of the same task, rule, network, schedule,
lr and seed, the others stay, and each task lists the commands that ran it; so the protocol can
run a task (or a rule of a task) at a time, across sessions.

Cost: per task, 5 rules with runs of their own under each schedule × 2 networks × 2 schedules
× (3 lrs + at most 2 past an edge + 2 more seeds), plus 2 × 5 or more BPTT runs: about 110 to
150 runs. RESULTS.md gives each task's wall time next to the command that ran it. ``--quick``
(1 epoch on a few hundred sequences) checks the script end to end in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from fair_claims import claims_section
from fair_data import embedded, merge
from fair_plan import (
    DEFAULT_TASKS,
    DEFAULT_VARIANTS,
    FAIR_BUDGETS,
    NETS,
    NOTES,
    STUDIES,
    TARGETS,
    VARIANTS,
    Job,
    budget,
    extension,
    plan,
    request,
)
from fair_report import choose_lr, section

from ostl.errors import NonFiniteError, UnsupportedError
from ostl.run.config import TrainConfig
from ostl.run.sections import describe_machine, read_sections, write_section
from ostl.run.train import train
from ostl.torchrun import process_pool
from results import ROOT, _load_existing

# The protocol is written out in the docstring above for readers of the script; what it runs
# (variants, budgets, plan) is in fair_plan.py, the section's numbers and text in fair_report.py,
# the claims in fair_claims.py.
SECTION = "fair"
CLAIMS = "claims"  # kept at the top of RESULTS.md (scripts/results.py keeps it there)


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
SLIM = ("task", "variant", "net", "schedule", "factor", "lr", "seed", "order", "test", "valid",
        "wall", "error", "skipped")  # fmt: skip


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
            done[job] = {**record, "order": job.order}  # its place in this sweep
        else:
            todo.append((job, req))
    print(f"  {len(unique) - len(todo)} kept, {len(todo)} to run", flush=True)
    todo.sort(key=lambda jr: (jr[0].net != "deep", jr[0].schedule != "online"))  # long first
    # spawn, not fork: the caller may have run torch (OpenMP is not fork-safe)
    with process_pool(n_jobs, spawn=True) as pool:
        futures = [(job, pool.submit(execute, job, req, str(runs / f"{job.path}.json")))
                   for job, req in todo]  # fmt: skip
        for job, fut in futures:
            r = done[job] = fut.result()
            what = r.get("skipped") or r.get("error") or f"valid {r['valid']:.4f}"
            print(f"  {job.path}: {what}", flush=True)
    return len(todo)


def protocol(
    jobs_plan: tuple[list[Job], dict[Job, list[Job]]], runs: Path, n_jobs: int, quick: bool,
    extend: int = 0,
) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """Sweep on the first seed (extended past an edge up to ``extend`` times), choose each lr,
    then the other seeds: every record, and how many runs ran now (the others were kept)."""
    sweep, rest = list(jobs_plan[0]), dict(jobs_plan[1])
    done: dict[Job, dict[str, Any]] = {}
    print(f"sweep: {len(sweep)} runs", flush=True)
    ran = run_jobs(sweep, runs, n_jobs, quick, done)
    groups: dict[tuple[str, str, str, str], list[Job]] = {}
    for job in sweep:
        groups.setdefault((job.task, job.variant, job.net, job.schedule), []).append(job)
    tried = {key: len(group) for key, group in groups.items()}
    while more := [(key, j) for key, group in groups.items()
                   if (j := extension(group, done, tried[key], extend, quick))]:  # fmt: skip
        for key, job in more:
            groups[key].append(job)
            rest[job] = [replace(job, seed=j.seed) for j in rest[groups[key][0]]]
        print(f"sweep past an edge: {len(more)} runs", flush=True)
        ran += run_jobs([j for _, j in more], runs, n_jobs, quick, done)
        sweep += [j for _, j in more]
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
    p.add_argument("--extend", type=int, default=2, help="times the sweep may go on past its "
                   "largest (smallest) factor while the best is there (x2, x1/2)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (one thread each)")
    p.add_argument("--quick", action="store_true", help="1 epoch on a few hundred sequences")
    p.add_argument("--runs", help="folder of the kept runs (default runs/fair or runs/fair-quick)")
    p.add_argument("--out", help="file to write the section to (default RESULTS.md; with "
                   "--quick, RESULTS-quick.md in the runs folder)")  # fmt: skip
    p.add_argument(
        "--fresh",
        action="store_true",
        help="the tasks start again in the section: "
        "their earlier runs there are dropped (the kept run files are still reused)",
    )
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
    if args.extend < 0:
        p.error(f"--extend takes a count >= 0, got {args.extend}")
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


def tasks_meta(
    args: argparse.Namespace, lists: dict[str, Any], argv: list[str] | None, wall: float,
    ran: int, records: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """Per task of the command, what its table says besides the runs (see :mod:`fair_report`):
    its setting, budget, sweep seed, and this command (to add to the commands that ran it)."""
    command = {
        "command": recorded(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine().rsplit(", ", 1)[0],  # less the main process's threads
        "date": time.strftime("%Y-%m-%d"), "wall": wall, "ran": ran,
        "kept": len(records) - ran, "jobs": args.jobs, "factors": lists["lrs"],
        "extend": args.extend, "seeds": lists["seeds"],
    }  # fmt: skip
    found = settings(records)
    budgets = {t: budget(t, args.quick) for t in lists["tasks"]}
    return {
        t: {"settings": found.get(t), "budget": why, "request": cfg.to_json(),
            "sweep_seed": lists["seeds"][0], "quick": args.quick, "study": t in STUDIES,
            "commands": [command]}
        for t, (cfg, why) in budgets.items()
    }  # fmt: skip


def in_order(tasks: dict[str, Any]) -> dict[str, Any]:
    """The tasks in the protocol's order (FAIR_BUDGETS'), any other after them."""
    return {t: tasks[t] for t in sorted(tasks, key=lambda t: [*FAIR_BUDGETS, t].index(t))}


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    runs = Path(args.runs or ROOT / "runs" / ("fair-quick" if args.quick else "fair"))
    out = Path(args.out or (runs / "RESULTS-quick.md" if args.quick else ROOT / "RESULTS.md"))
    text = out.read_text() if out.exists() else ""
    found = embedded(read_sections(text).get(SECTION, ""))
    if args.render_only:
        if found is None:
            p.error(f"{out} holds no fair section to render again")
        records, tasks = found
    else:
        lists = _check(p, args)
        t0 = time.perf_counter()
        jobs_plan = plan(lists["tasks"], lists["rules"], lists["nets"], lists["schedules"],
                         lists["lrs"], lists["seeds"], args.quick)  # fmt: skip
        full, ran = protocol(jobs_plan, runs, args.jobs, args.quick, args.extend)
        new = tasks_meta(args, lists, argv, time.perf_counter() - t0, ran, full)
        records, tasks = merge(found or ([], {}), ([slim(r) for r in full], new), args.fresh)
    meta = {"tasks": in_order(tasks), "notes": {t: NOTES[t] for t in tasks if t in NOTES},
            "targets": {t: TARGETS[t] for t in tasks if t in TARGETS}}  # fmt: skip
    results_data = _load_existing(out) if out.exists() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    write_section(out, SECTION, section(records, meta, results_data))
    write_section(out, CLAIMS, claims_section(records, meta, results_data))
    print(f"wrote the {SECTION} and {CLAIMS} sections of {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
