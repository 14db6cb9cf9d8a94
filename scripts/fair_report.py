"""The fair comparison's numbers and text (for ``scripts/fair.py``): the learning rate chosen by
the validation metric, each cell's mean ± std over seeds, the gaps to BPTT and the verdicts (the
"claims -> evidence" section is ``scripts/fair_claims.py``'s). Pure functions of the run
records, so the section can be rendered again from the data it embeds.

A *record* is one run, as ``scripts/fair.py`` keeps it: its place in the protocol (``task``,
``variant``, ``net``, ``schedule``: the one it trained with, ``factor``, ``lr``, ``seed``), its
metrics (``test``, ``valid``) and run time (``wall``), or why it has none (``error``: the run
failed, e.g. NaN/Inf; ``skipped``: the rule refuses the network). The *meta* holds the command's
lists (``tasks``, ``variants``, ``nets``, ``schedules``, ``seeds``, ``factors``), where and how it
ran, the budgets, and per task its ``settings``: ``metric``, ``higher_is_better``, ``cell``,
``hidden`` (per network), ``epochs``, ``batch_size``, ``task_options``, ``base_lr``.
"""

from __future__ import annotations

import json
import math
import re
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


def cell(
    records: Iterable[dict[str, Any]], sweep_seed: int, factors: Sequence[float], hib: bool
) -> Cell:
    """The cell of one (task, rule, network, schedule) from its records (sweep and seeds)."""
    rs = list(records)
    skipped = next((r["skipped"] for r in rs if r.get("skipped")), None)
    if skipped:
        return Cell(math.nan, math.nan, 0, 0, None, f"skipped: {skipped}")
    order = {f: i for i, f in enumerate(factors)}
    sweep = sorted(
        (r for r in rs if r["seed"] == sweep_seed and r["factor"] in order),
        key=lambda r: order[r["factor"]],
    )
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


def task_cells(
    records: Sequence[dict[str, Any]], meta: dict[str, Any], hib: bool
) -> dict[Key, Cell]:
    """Every cell of one task's records, keyed by (variant, net, schedule column)."""
    sweep_seed, factors = meta["seeds"][0], meta["factors"]
    cells: dict[Key, Cell] = {}
    for variant in meta["variants"]:
        for net in meta["nets"]:
            for col in meta["schedules"]:
                where = (variant, net, run_schedule(variant, col))
                mine = [r for r in records if (r["variant"], r["net"], r["schedule"]) == where]
                if mine:
                    cells[(variant, net, col)] = cell(mine, sweep_seed, factors, hib)
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


def task_table(
    task: str, records: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> tuple[list[str], dict[Key, Cell]]:
    """One task's subsection (setting, table, verdicts, run time), and its cells."""
    st = meta["settings"][task]  # the task's metric and setting, from its first finished run
    hib = st["higher_is_better"]
    cells = task_cells(records, meta, hib)
    nets = [n for n in meta["nets"] if n in st["hidden"]]
    cols = [(n, s) for n in nets for s in meta["schedules"]]
    lines = [
        f"### {task}: test {st['metric']} ({'higher' if hib else 'lower'} is better)",
        "",
        f"Network: {st['cell']}, "
        + ", ".join(f"{n} {st['hidden'][n]}" for n in nets)
        + f", + linear readout; {st['epochs']} epoch{'s' * (st['epochs'] != 1)}, batch "
        f"{st['batch_size']}, Adam; task options `{json.dumps(st['task_options'])}`. "
        f"Budget: {meta['budgets'].get(task, '')}. Learning rates tried: {st['base_lr']:g} × "
        f"{', '.join(f'{f:g}' for f in meta['factors'])}.",
        "",
        "| rule | " + " | ".join(f"{n}, {s}" for n, s in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for variant in meta["variants"]:
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
    lines += [f"- Run time of this task's {len(records)} runs: {wall:.0f} s (summed)."]
    return lines, cells


TaskCells = dict[str, tuple[dict[Key, Cell], bool]]  # task -> (cells, higher is better)


PROTOCOL = """\
Protocol, the same for every rule, network and schedule:

- **Rules**: {variants}. OSTL rnd is OSTL with random feedback (`--rule-opt feedback=random`).
  A rule that refuses a network is skipped, with the reason in its cell.
- **Networks**: *shallow* (the task's default hidden layer) and *deep* (two stateful hidden
  layers of the default width), + linear readout; the same initial weights for every rule (per
  seed).
- **Schedules**: *sequence*: every rule updates once per sequence, from the gradient summed over
  it (the comparison of gradient quality alone); *online*: each rule at its natural cadence, the
  online rules after every step, BPTT once per sequence (BPTT's runs serve both columns).
- **Learning rate**, chosen per task, rule, network and schedule by the same sweep: the task's lr
  × {factors} on seed {sweep_seed}, keeping the lr whose run has the best **validation** metric
  (that of its model-selected epoch; ties: the earlier factor; a run that fails, e.g. NaN, is
  never chosen). The test metric plays no part in the choice.
- **Budget**: per task (below), the same for every rule: epochs, data, batch size, Adam.
- **Seeds** {seeds} at the chosen lr: the test metric of the best-validation epoch, mean ± std
  (n: seeds that finished).

Cells: test metric mean ± std (n seeds) · relative gap to BPTT under the same network and
schedule (positive: worse than BPTT) · chosen lr."""


def section(
    records: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    results_data: dict[str, Any] | None = None,
) -> str:
    """The whole section (markdown), with its data embedded for ``--render-only``."""
    tc: TaskCells = {}
    lines = [
        "## Fair comparison: every rule tuned the same way",
        "",
        f"Generated by `{meta['command']}` (`make results-fair`; do not edit by hand) on "
        f"{meta['machine']}, {meta['date']}: {len(records)} runs, "
        f"{sum(r.get('wall', 0.0) for r in records):.0f} s of run time summed, "
        f"{meta['wall']:.0f} s wall for this command, which ran {meta['ran']} of them (the "
        f"others were kept from earlier commands; {meta['jobs']} processes, one torch thread "
        "each)."
        + (" **Quick budget: a check of the script, not a result.**" if meta["quick"] else ""),
        "",
        PROTOCOL.format(
            variants=", ".join(meta["variants"]),
            factors="{" + ", ".join(f"{f:g}" for f in meta["factors"]) + "}",
            sweep_seed=meta["seeds"][0],
            seeds=", ".join(map(str, meta["seeds"])),
        ),
        "",
    ]
    for task in meta["tasks"]:
        mine = [r for r in records if r["task"] == task]
        if task not in meta["settings"]:
            lines += [f"### {task}", "", "No run finished yet.", ""]
            continue
        table, cells = task_table(task, mine, meta)
        lines += [*table, ""]
        tc[task] = (cells, meta["settings"][task]["higher_is_better"])
        if task in meta.get("notes", {}):
            lines += [meta["notes"][task], ""]
    lines += [
        "The claims of the OSTL and OSTTP papers and their evidence: the *claims* "
        "section at the top of this file."
    ]
    columns = sorted({k for r in records for k in r})  # the records as rows: a smaller blob
    rows = [[_short(r.get(k)) for k in columns] for r in records]
    blob = json.dumps({"meta": meta, "columns": columns, "rows": rows}, separators=(",", ":"))
    lines += ["", f"<!-- {DATA_TAG}\n{blob}\n-->"]
    return "\n".join(lines) + "\n"


def embedded(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The records and meta embedded in a section written by :func:`section` (None: none)."""
    m = re.search(rf"<!-- {DATA_TAG}\n(.*?)\n-->", text, flags=re.S)
    if not m:
        return None
    data = json.loads(m.group(1))
    cols = data["columns"]
    records = [{k: v for k, v in zip(cols, row) if v is not None} for row in data["rows"]]
    return records, data["meta"]


def _short(v: Any) -> Any:
    """A float with 7 significant digits (the tables show 4 decimals); the rest as it is."""
    return float(f"{v:.7g}") if isinstance(v, float) else v
