"""The "claims -> evidence" section of RESULTS.md (written by ``scripts/fair.py``): each claim of
the OSTL and OSTTP papers, the test or table that shows it, and its verdict, computed from the
fair comparison's cells (``scripts/fair_report.py``) and RESULTS.md's main tables where the claim
is about numbers."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fair_report import NETS, ROOT, Key, TaskCells, gap, percent, task_cells

from results import TARGETS, _gap

__all__ = ["TESTED", "claims", "render_claims", "all_task_cells", "claims_section"]


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
    for net in nets:
        rows.append((
            f"Online and without truncation, OSTL does better than truncated BPTT (8-step "
            f"windows), each at its own cadence and tuned lr ({net})",
            f"this section, *{net}, online*: rows ostl and tbptt-8",
            _verdict(*_compare(tc, ("ostl", net, "online"), ("tbptt-8", net, "online"))),
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


def all_task_cells(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> TaskCells:
    """The fair cells of every task with runs (what the claims' verdicts are computed from);
    a study of a setting (``study``: e.g. targets only at the end) is not one of the tasks."""
    out: TaskCells = {}
    for task, tmeta in meta["tasks"].items():
        if tmeta.get("settings") and not tmeta.get("study"):
            hib = tmeta["settings"]["higher_is_better"]
            mine = [r for r in records if r["task"] == task]
            out[task] = (task_cells(mine, tmeta["sweep_seed"], hib), hib)
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
    tc = all_task_cells(records, meta)
    nets = [n for n in NETS if any(net == n for cells, _ in tc.values() for _, net, _ in cells)]
    rows = claims(tc, nets or ["shallow"], results_data)
    tasks = ", ".join(tc) or "none yet"
    return "\n".join([CLAIMS_HEAD, "", f"Tasks in the fair comparison: {tasks}.", "",
                      *render_claims(rows), ""])  # fmt: skip
