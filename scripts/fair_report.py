"""The fair comparison's numbers and text (for ``scripts/fair.py``): the learning rate chosen by
the validation metric, each cell's mean ± std over seeds, the gaps to BPTT, the verdicts and the
"claims -> evidence" table. Pure functions of the run records, so the section can be rendered
again from the data it embeds.

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


def _verdict(hits: list[str], total: int) -> str:
    """``**holds** on 7 of 7 tasks``, ``**mixed** ...``, ``**does not hold** ...``."""
    if not total:
        return "not measured"
    word = "holds" if len(hits) == total else "mixed" if hits else "does not hold"
    listed = f" ({', '.join(hits)})" if hits else ""
    return f"**{word}**: yes on {len(hits)} of {total} tasks{listed}"


#: Claims proved by a test rather than by a number: (claim, test file, test function).
TESTED = [
    ("OSTL with one stateful layer (no recurrent weights) computes BPTT's gradient exactly",
     "tests/test_equivalence.py", "test_shallow_ostl_without_h_equals_bptt"),
    ("Deeper, OSTL equals BPTT with the upper layers' past detached, not full BPTT",
     "tests/test_equivalence.py", "test_deep_ostl_equals_bptt_with_upper_states_detached"),
    ("OSTL rnd sends the error down through fixed random matrices",
     "tests/rules/test_ostl_random.py", "test_hidden_signal_is_the_error_through_the_fixed_matrix"),
    ("OSTTP's output layer learns with OSTL's gradient, its hidden layers from a projection of "
     "the target", "tests/rules/test_osttp.py", "test_output_layer_gradients_equal_ostl"),
    ("Symmetric e-prop is diagonal OSTL", "tests/rules/test_eprop.py",
     "test_symmetric_eprop_equals_ostl_diagonal"),
    ("A run's rule options (e.g. OSTL rnd) build the rule the run trains with",
     "tests/run/test_rule_options.py",
     "test_a_run_with_random_feedback_computes_random_feedback_gradients"),
    ("OSTL is exact for SNNs, LSTMs and GRUs alike: shallow OSTL equals BPTT for every cell "
     "(SNU, sSNU, LIF, ALIF, RNN, LSTM, GRU), with recurrent weights too (exact traces)",
     "tests/test_equivalence.py", "test_shallow_ostl_exact_with_h_equals_bptt"),
    ("OSTTP needs no weight transport: its hidden signals never read the weights above",
     "tests/rules/test_osttp.py", "test_hidden_gradients_ignore_the_readout_weights"),
    ("OSTTP has no update locking: a layer's update lands before the layer above runs",
     "tests/rules/test_osttp.py", "test_unlocked_update_lands_before_the_layer_above_runs"),
    ("The online rules' memory does not grow with the sequence length T (BPTT's does); "
     "BENCHMARKS.md's memory table and its 10^6-step soak measure it",
     "tests/run/test_train.py", "test_peak_memory_grows_with_t_for_bptt_only"),
    ("Online learning works on in-memory hardware: OSTTP lowers the loss on simulated PCM "
     "crossbars (RESULTS.md's PCM section measures it)",
     "tests/hardware/test_learning.py", "test_osttp_on_pcm_reduces_the_loss"),
    ("Learning while processing: each prediction is scored before the learner sees its target "
     "(the Streams section measures OSTL against truncated BPTT at equal memory)",
     "tests/streams/test_prequential.py",
     "test_each_prediction_comes_from_the_weights_before_that_steps_update"),
]  # fmt: skip

TaskCells = dict[str, tuple[dict[Key, Cell], bool]]  # task -> (cells, higher is better)


def _tested(path: str, test: str, root: Path) -> str:
    file = root / path
    found = file.is_file() and re.search(rf"^def {re.escape(test)}\(", file.read_text(), re.M)
    return "a test (run by `make test`)" if found else "**no such test**"


def _within(tc: TaskCells, variant: str, net: str) -> tuple[list[str], int]:
    hits, total = [], 0
    for task, (cells, hib) in tc.items():
        g = gap(cells, variant, net, "sequence", hib)
        if not math.isnan(g):
            total += 1
            hits += [f"{task} {percent(g, 1)}"] if g <= TARGETS[variant] else []
    return hits, total


def _compare(tc: TaskCells, a: Key, b: Key, tol: float | None = None) -> tuple[list[str], int]:
    """Tasks where cell ``a`` beats ``b``, or (``tol``) equals it within ``tol``."""
    hits, total = [], 0
    for task, (cells, hib) in tc.items():
        ca, cb = cells.get(a), cells.get(b)
        if ca is None or cb is None or not ca.n or not cb.n:
            continue
        total += 1
        ok = (ca.mean > cb.mean) == hib and ca.mean != cb.mean
        hits += [task] if (abs(ca.mean - cb.mean) <= tol if tol is not None else ok) else []
    return hits, total


def _numeric_claims(tc: TaskCells, nets: Sequence[str]) -> list[tuple[str, str, str]]:
    rows = []
    for variant, target in TARGETS.items():
        for net in nets:
            rows.append((
                f"Tuned alike and updating once per sequence, {variant.upper()} is within "
                f"{100 * target:.0f} % of BPTT ({net} networks)",
                f"this section, *{net}, sequence* columns",
                _verdict(*_within(tc, variant, net)),
            ))  # fmt: skip
    for net in nets:
        rows.append((
            f"Updating at every step helps OSTL over once per sequence, each at its own tuned lr "
            f"({net})", f"this section, *{net}, online* vs *{net}, sequence*",
            _verdict(*_compare(tc, ("ostl", net, "online"), ("ostl", net, "sequence"))),
        ))  # fmt: skip
    rows.append((
        "OSTL with random feedback trails OSTL in deep networks (sequence schedule)",
        "this section, *deep, sequence*: rows ostl-rnd and ostl",
        _verdict(*_compare(tc, ("ostl", "deep", "sequence"), ("ostl-rnd", "deep", "sequence"))),
    ))  # fmt: skip
    rows.append((
        "e-prop and OSTL reach the same test metric with one stateful layer (within 1e-4)",
        "this section, *shallow, sequence*: rows eprop and ostl",
        _verdict(*_compare(tc, ("eprop", "shallow", "sequence"), ("ostl", "shallow", "sequence"),
                           tol=1e-4)),
    ))  # fmt: skip
    return rows


def _shared_lr_claim(results_data: dict[str, Any]) -> tuple[str, str, str]:
    """From RESULTS.md's main tables (scripts/results.py): one lr for all, natural cadence."""
    hits, total = [], 0
    for task, entry in results_data.items():
        by_rule: dict[str, list[float]] = {}
        for r in entry["runs"]:
            by_rule.setdefault(r["config"]["rule"], []).append(r["test_metric"])
        if "bptt" in by_rule and "ostl" in by_rule:
            hib = entry["runs"][0]["higher_is_better"]
            ref, mine = statistics.fmean(by_rule["bptt"]), statistics.fmean(by_rule["ostl"])
            g = _gap(mine, ref, hib) if ref else math.nan
            total += 1
            hits += [f"{task} {percent(g, 1)}"] if g <= TARGETS["ostl"] else []
    return (
        "At one shared lr, each rule at its natural cadence, OSTL is within 2 % of BPTT",
        "RESULTS.md, the per-task tables above (scripts/results.py)",
        _verdict(hits, total),
    )


def claims(
    tc: TaskCells,
    nets: Sequence[str],
    results_data: dict[str, Any] | None = None,
    root: Path = ROOT,
) -> list[tuple[str, str, str]]:
    """The "claims -> evidence" rows: claim | evidence | verdict. Claims on numbers get their
    verdict computed from ``tc`` (the fair cells per task) and, if given, ``results_data``
    (RESULTS.md's embedded runs); claims proved by a test name it, and say whether it exists."""
    rows = [(text, f"`{path}::{test}`", _tested(path, test, root)) for text, path, test in TESTED]
    rows += _numeric_claims(tc, nets)
    if results_data:
        rows.append(_shared_lr_claim(results_data))
    return rows


def render_claims(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    lines = ["| claim | evidence | verdict |", "|---|---|---|"]
    return lines + [f"| {c} | {e} | {v} |" for c, e, v in rows]


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


def all_task_cells(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> TaskCells:
    """The fair cells of every task with runs (what the claims' verdicts are computed from)."""
    out: TaskCells = {}
    for task in meta["tasks"]:
        if task in meta["settings"]:
            _, cells = task_table(task, [r for r in records if r["task"] == task], meta)
            out[task] = (cells, meta["settings"][task]["higher_is_better"])
    return out


CLAIMS_HEAD = """## Claims -> evidence

Each claim of the OSTL and OSTTP papers that this library reproduces, and what shows it: a test
(run by `make test`; its name says what it checks) or a table of this file, with the verdict
computed from the numbers when the claim is about numbers (`scripts/fair.py` writes this section
with the fair comparison below; tasks not yet in that comparison are left out of its counts)."""


def claims_section(
    records: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    results_data: dict[str, Any] | None = None,
) -> str:
    """The claims section (markdown), kept at the top of RESULTS.md."""
    rows = claims(all_task_cells(records, meta), meta["nets"], results_data)
    tasks = ", ".join(t for t in meta["tasks"] if t in meta["settings"]) or "none yet"
    return "\n".join([CLAIMS_HEAD, "", f"Tasks in the fair comparison: {tasks}.", "",
                      *render_claims(rows), ""])  # fmt: skip


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
