"""The fair comparison's numbers and text (for ``scripts/fair.py``): the learning rate chosen by
the validation metric, each cell's mean ± std over seeds, the gaps to BPTT and the verdicts (the
"claims -> evidence" section is ``scripts/fair_claims.py``'s). Pure functions of the run
records, so the section can be rendered again from the data it embeds (read back and merged
with a later command's runs by ``scripts/fair_data.py``).

A *record* is one run, as ``scripts/fair.py`` keeps it: its place in the protocol (``task``,
``variant``, ``net``, ``schedule``: the one it trained with, ``factor``, ``lr``, ``seed``,
``order``: its place in the lr sweep, the factors of ``--lrs`` first and then the sweep's
extensions past an edge), its metrics (``test``, ``valid``) and run time (``wall``), or why it has
none (``error``: the run failed, e.g. NaN/Inf; ``skipped``: the rule refuses the network).

The *meta* holds, per task (``meta["tasks"][task]``): ``settings`` (``metric``,
``higher_is_better``, ``cell``, ``hidden`` per network, ``epochs``, ``batch_size``,
``task_options``, ``base_lr``), ``budget`` (why this budget), ``sweep_seed``, ``quick``,
``study`` (a study of a setting, left out of the claims' counts), ``request`` (the budget's
configuration as asked), and ``commands``: each command that ran some of its runs (``command``,
``machine``, ``date``, ``wall``, ``ran``, ``kept``, ``jobs``, and its sweep: ``factors``,
``extend``, ``seeds``). ``meta["notes"]``: per task, a paragraph of text.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ostl.run.evaluate import better
from results import TARGETS, _gap, _pm

DATA_TAG = "fair-data"
ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "bptt"


def run_schedule(variant: str, schedule: str) -> str:
    """The schedule a run trains with for a column: BPTT updates once per sequence under both
    schedules (``ostl.run.run.update_every``), so one set of BPTT runs serves both columns."""
    return "sequence" if variant == REFERENCE else schedule


def choose_lr(sweep: Sequence[dict[str, Any]], higher_is_better: bool) -> dict[str, Any] | None:
    """The sweep record with the best *validation* metric (the test metric plays no part).

    ``sweep``: the records of one (task, rule, network, schedule) on the first seed, in the
    order of the lr factors; ties go to the earlier one, and a failed run (``error``) or a NaN
    validation metric never wins over a number. None when no run finished.
    """
    best: dict[str, Any] | None = None
    for r in sweep:
        if r.get("error") or r.get("skipped"):
            continue
        if best is None or better(r["valid"], best["valid"], higher_is_better):
            best = r
    return best


class Cell(NamedTuple):
    """One (rule, network, schedule) of a task: the test metric over seeds at the chosen lr."""

    mean: float
    std: float  # nan for one seed
    n: int  # seeds that finished
    failed: int  # seeds whose run failed at the chosen lr
    lr: float | None  # None: no lr could be chosen
    note: str = ""  # why there is no number (skipped, every sweep run failed)


def cell(records: Iterable[dict[str, Any]], sweep_seed: int, hib: bool) -> Cell:
    """The cell of one (task, rule, network, schedule) from its records: the sweep (the runs of
    ``sweep_seed``, in their sweep ``order``) chooses the lr; the cell is the seeds at that lr."""
    rs = list(records)
    skipped = next((r["skipped"] for r in rs if r.get("skipped")), None)
    if skipped:
        return Cell(math.nan, math.nan, 0, 0, None, f"skipped: {skipped}")
    sweep = sorted((r for r in rs if r["seed"] == sweep_seed), key=lambda r: r.get("order", 0))
    chosen = choose_lr(sweep, hib)
    if chosen is None:
        errors = sorted({str(r.get("error")) for r in sweep if r.get("error")})
        return Cell(
            math.nan, math.nan, 0, len(sweep), None, "every lr failed: " + "; ".join(errors)
        )
    at_lr = [r for r in rs if r["lr"] == chosen["lr"]]
    tests = [r["test"] for r in sorted(at_lr, key=lambda r: r["seed"]) if not r.get("error")]
    std = statistics.stdev(tests) if len(tests) > 1 else math.nan
    failed = sum(1 for r in at_lr if r.get("error"))
    return Cell(statistics.fmean(tests), std, len(tests), failed, chosen["lr"])


Key = tuple[str, str, str]  # (variant, net, schedule column)
NETS = ("shallow", "deep")
SCHEDULES = ("sequence", "online")


def layout(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """A task's rows and columns, from its records: the variants (BPTT first, then in the order
    they were run), the networks and the schedule columns that have runs."""
    variants = list(dict.fromkeys([REFERENCE, *(r["variant"] for r in records)]))
    variants = [v for v in variants if any(r["variant"] == v for r in records)]
    nets = [n for n in NETS if any(r["net"] == n for r in records)]
    online = [r["schedule"] for r in records if r["variant"] != REFERENCE]
    return variants, nets, [s for s in SCHEDULES if s in online] or ["sequence"]


def task_cells(records: Sequence[dict[str, Any]], sweep_seed: int, hib: bool) -> dict[Key, Cell]:
    """Every cell of one task's records, keyed by (variant, net, schedule column)."""
    variants, nets, schedules = layout(records)
    cells: dict[Key, Cell] = {}
    for variant in variants:
        for net in nets:
            for col in schedules:
                where = (variant, net, run_schedule(variant, col))
                mine = [r for r in records if (r["variant"], r["net"], r["schedule"]) == where]
                if mine:
                    cells[(variant, net, col)] = cell(mine, sweep_seed, hib)
    return cells


def gap(cells: dict[Key, Cell], variant: str, net: str, col: str, hib: bool) -> float:
    """Relative shortfall of the variant's mean against BPTT's, same network and schedule
    (positive: worse than BPTT); nan when either is missing."""
    mine, ref = cells.get((variant, net, col)), cells.get((REFERENCE, net, col))
    if mine is None or ref is None or not mine.n or not ref.n or ref.mean == 0:
        return math.nan
    return _gap(mine.mean, ref.mean, hib)


def percent(g: float, digits: int = 2) -> str:
    """``+0.86 %``; a gap that rounds to zero is ``+0.00 %`` whatever its sign."""
    return f"{round(100 * g, digits) + 0.0:+.{digits}f} %"


def format_cell(c: Cell, g: float, is_reference: bool) -> str:
    """``0.9619 ± 0.0137 (n=3) · +0.86 % · lr 0.002``."""
    if c.lr is None:
        return c.note
    text = f"{_pm(c.mean, c.std)} (n={c.n}"
    text += f", {c.failed} failed)" if c.failed else ")"
    if not is_reference:
        text += " · " + ("—" if math.isnan(g) else percent(g))
    return f"{text} · lr {c.lr:g}"


def verdicts(cells: dict[Key, Cell], hib: bool, nets: Sequence[str]) -> list[str]:
    """The targets under the sequence schedule, per network, computed from the cells: OSTL
    within 2 % of BPTT, OSTTP within 5 % (``results.TARGETS``)."""
    lines = []
    for variant, target in TARGETS.items():
        gaps = {net: gap(cells, variant, net, "sequence", hib) for net in nets}
        parts = [
            f"{net} not measured" if math.isnan(g)
            else f"{net} **{'yes' if g <= target else 'no'}** ({percent(g)})"
            for net, g in gaps.items()
        ]  # fmt: skip
        lines.append(
            f"{variant.upper()} within {100 * target:.0f} % of BPTT under the sequence "
            f"schedule: {', '.join(parts)}."
        )
    return lines


def _factors(values: Iterable[float]) -> str:
    return ", ".join(f"{f:g}" for f in sorted(set(values)))


def sweep_line(records: Sequence[dict[str, Any]], tmeta: dict[str, Any]) -> str:
    """Which learning rates were tried, and where the sweep went on past an edge."""
    st, seed = tmeta["settings"], tmeta["sweep_seed"]
    tried = [r["factor"] for r in records if r["seed"] == seed]
    first = {f for c in tmeta["commands"] for f in c["factors"]}
    more = sorted(set(tried) - first)
    text = f"Learning rates tried on seed {seed}: {st['base_lr']:g} × {_factors(first)}"
    if more:
        cells = {(r["variant"], r["net"], r["schedule"]) for r in records
                 if r["seed"] == seed and r["factor"] in more}  # fmt: skip
        text += (f"; past the edge, where the best was there, × {_factors(more)} "
                 f"({len(cells)} cell{'s' * (len(cells) != 1)})")  # fmt: skip
    return text + "."


def command_line(c: dict[str, Any]) -> str:
    extend = (f", extended up to {c['extend']} times past an edge" if c["extend"]
              else ", not extended past an edge" if len(c["factors"]) > 1 else "")  # fmt: skip
    return (
        f"`{c['command']}` on {c['machine']}, {c['date']}: ran {c['ran']} runs"
        + (f" (kept {c['kept']} from earlier commands)" if c.get("kept") else "")
        + f" in {c['wall']:.0f} s wall ({c['jobs']} processes, one torch thread each); sweep × "
        f"{_factors(c['factors'])}"
        f"{extend}; seeds {', '.join(map(str, c['seeds']))}."
    )


def task_table(
    task: str, records: Sequence[dict[str, Any]], tmeta: dict[str, Any]
) -> tuple[list[str], dict[Key, Cell]]:
    """One task's subsection (setting, table, verdicts, run time, commands), and its cells."""
    st = tmeta["settings"]  # the task's metric and setting, from its first finished run
    hib = st["higher_is_better"]
    cells = task_cells(records, tmeta["sweep_seed"], hib)
    variants, nets, schedules = layout(records)
    nets = [n for n in nets if n in st["hidden"]]
    cols = [(n, s) for n in nets for s in schedules]
    lines = [
        f"### {task}: test {st['metric']} ({'higher' if hib else 'lower'} is better)",
        "",
        f"Network: {st['cell']}, "
        + ", ".join(f"{n} {st['hidden'][n]}" for n in nets)
        + f", + linear readout; {st['epochs']} epoch{'s' * (st['epochs'] != 1)}, batch "
        f"{st['batch_size']}, Adam; task options `{json.dumps(st['task_options'])}`. "
        f"Budget: {tmeta['budget']}. {sweep_line(records, tmeta)}"
        + (" **Quick budget: a check of the script, not a result.**" if tmeta["quick"] else ""),
        "",
        "| rule | " + " | ".join(f"{n}, {s}" for n, s in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for variant in variants:
        row = [
            format_cell(c, gap(cells, variant, n, s, hib), variant == REFERENCE)
            if (c := cells.get((variant, n, s)))
            else "not run"
            for n, s in cols
        ]
        if any(x != "not run" for x in row):
            lines.append(f"| {variant} | " + " | ".join(row) + " |")
    wall = sum(r.get("wall", 0.0) for r in records)
    lines += ["", *(f"- {v}" for v in verdicts(cells, hib, nets))]
    lines += [f"- Run time of this task's {len(records)} runs: {wall:.0f} s (summed). Ran by:"]
    lines += [f"  - {command_line(c)}" for c in tmeta["commands"]]
    return lines, cells


TaskCells = dict[str, tuple[dict[Key, Cell], bool]]  # task -> (cells, higher is better)


PROTOCOL = """\
Protocol, the same for every rule, network and schedule:

- **Rules**: those of each table. TBPTT-8 is BPTT truncated to 8-step windows (`--rule-opt
  truncation=8`: no gradient through paths longer than 8 steps; under *online* it updates at the
  end of each window). OSTL rnd is OSTL with random feedback (`--rule-opt feedback=random`); an
  OSTTP variant changes one option of OSTTP (named in the task's note). A rule that refuses a
  network is skipped, with the reason in its cell.
- **Networks**: *shallow* (the task's default hidden layer) and *deep* (two stateful hidden
  layers of the default width), + linear readout; the same initial weights for every rule (per
  seed).
- **Schedules**: *sequence*: every rule updates once per sequence, from the gradient summed over
  it (the comparison of gradient quality alone); *online*: each rule at its natural cadence, the
  online rules after every step, TBPTT after each window, BPTT once per sequence (BPTT's runs
  serve both columns).
- **Learning rate**, chosen per task, rule, network and schedule by the same sweep: the task's lr
  × the factors of the command (1, 0.5, 2 unless the task says otherwise) on the sweep seed,
  keeping the lr whose run has the best **validation** metric (that of its model-selected epoch;
  ties: the earlier factor; a run that fails, e.g. NaN, is never chosen). Where the best is the
  largest (smallest) factor tried, the sweep goes on past that edge, × 2 (× ½) at a time, as long
  as the best stays at the edge, up to the command's limit (each task says which). The test
  metric plays no part in the choice.
- **Budget**: per task (below), the same for every rule: epochs, data, batch size, Adam.
- **Seeds** (each task's command names them) at the chosen lr: the test metric of the
  best-validation epoch, mean ± std (n: seeds that finished).

Cells: test metric mean ± std (n seeds) · relative gap to BPTT under the same network and
schedule (positive: worse than BPTT) · chosen lr."""


def section(
    records: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    results_data: dict[str, Any] | None = None,
) -> str:
    """The whole section (markdown), with its data embedded for ``--render-only`` and for the
    next command to add to (``meta["notes"]`` is not embedded: it is the script's text)."""
    lines = [
        "## Fair comparison: every rule tuned the same way",
        "",
        "Generated by `scripts/fair.py` (`make results-fair` runs the whole protocol; do not "
        "edit by hand). Each task names the commands that ran its runs, with the machine, the "
        "date and the wall time; a command adds its runs to those already here.",
        "",
        PROTOCOL,
        "",
    ]
    tc: TaskCells = {}
    for task, tmeta in meta["tasks"].items():
        mine = [r for r in records if r["task"] == task]
        if not tmeta.get("settings"):
            lines += [f"### {task}", "", "No run finished yet.", ""]
            continue
        table, cells = task_table(task, mine, tmeta)
        tc[task] = (cells, tmeta["settings"]["higher_is_better"])
        lines += [*table, ""]
        if task in meta.get("notes", {}):
            lines += [meta["notes"][task], ""]
    lines += projection_table(tc, meta.get("targets", {}))
    lines += [
        "The claims of the OSTL and OSTTP papers and their evidence: the *claims* "
        "section at the top of this file."
    ]
    columns = sorted({k for r in records for k in r})  # the records as rows: a smaller blob
    rows = [[_short(r.get(k)) for k in columns] for r in records]
    data = {"version": 2, "tasks": meta["tasks"], "columns": columns, "rows": rows}
    lines += ["", f"<!-- {DATA_TAG}\n{json.dumps(data, separators=(',', ':'))}\n-->"]
    return "\n".join(lines) + "\n"


def projection_table(tc: TaskCells, targets: dict[str, str]) -> list[str]:
    """OSTTP's gap to BPTT beside OSTL's, per task (``tc``: its cells), with where the task's
    targets are: the evidence of when target projection lags (``docs/target-projection.md``
    explains it)."""
    rows = []
    for task, (cells, hib) in tc.items():
        gaps = [gap(cells, v, n, "sequence", hib) for v in ("osttp", "ostl") for n in NETS]
        if not all(math.isnan(g) for g in gaps[:2]):
            shown = ["—" if math.isnan(g) else percent(g, 1) for g in gaps]
            rows.append(f"| {task} | {targets.get(task, '')} | " + " | ".join(shown) + " |")
    if not rows:
        return []
    return [
        "### OSTTP by kind of target",
        "",
        "OSTTP's hidden layers learn from a fixed projection of the target, so where the targets "
        "are and what they are decides how much they learn. Gap to BPTT under the *sequence* "
        "schedule, from the tables above (`docs/target-projection.md` explains the pattern):",
        "",
        "| task | targets | OSTTP shallow | OSTTP deep | OSTL shallow | OSTL deep |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def _short(v: Any) -> Any:
    """A float with 7 significant digits (the tables show 4 decimals); the rest as it is."""
    return float(f"{v:.7g}") if isinstance(v, float) else v
