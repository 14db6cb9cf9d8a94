"""The fair section's embedded data (for ``scripts/fair.py``): reading it back, in its current
form (records and per-task meta: :mod:`fair_report`) or its first (one command for every task),
and merging a command's runs into it, so a command adds to the section instead of replacing it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fair_report import DATA_TAG

__all__ = ["embedded", "merge"]


def embedded(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The records and per-task meta embedded in a section that ``fair_report.section`` wrote
    (None: none); a section of the first format (one command for every task) is read too."""
    m = re.search(rf"<!-- {DATA_TAG}\n(.*?)\n-->", text, flags=re.S)
    if not m:
        return None
    data = json.loads(m.group(1))
    cols = data["columns"]
    records = [{k: v for k, v in zip(cols, row) if v is not None} for row in data["rows"]]
    if "version" not in data:
        return _first_format(records, data["meta"])
    return records, data["tasks"]


def _first_format(
    records: list[dict[str, Any]], meta: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A section written when one command made the whole section: its command and sweep become
    each of its tasks', and each sweep run its place in the sweep (the factors' order)."""
    order = {f: i for i, f in enumerate(meta["factors"])}
    for r in records:
        if r["seed"] == meta["seeds"][0]:
            r["order"] = order[r["factor"]]
    command = {k: meta[k] for k in ("command", "machine", "date", "wall", "ran", "jobs")}
    command.update(factors=meta["factors"], extend=0, seeds=meta["seeds"])
    tasks = {
        t: {"settings": meta["settings"].get(t), "budget": meta["budgets"][t],
            "sweep_seed": meta["seeds"][0], "quick": meta["quick"], "study": False,
            "commands": [command]}
        for t in meta["tasks"]
    }  # fmt: skip
    return records, tasks


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["task"], r["variant"], r["net"], r["schedule"], r["lr"], r["seed"])


def _same_setting(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two commands' runs of a task can share a table: the same budget as asked
    (``request``: the budget's configuration; a section of the first form has none and is
    taken as the same), the same sweep seed, both quick or neither. (The settings the table
    shows are read from finished runs, where an option added since shows up: not compared.)"""
    same_budget = (
        a.get("request") is None or b.get("request") is None or a["request"] == b["request"]
    )
    return same_budget and all(a[k] == b[k] for k in ("sweep_seed", "quick"))


def _commands(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commands that ran a task's runs: a command run again replaces its entry, unless it
    ran nothing (every run kept): the earlier entry says what the work took."""
    again = {c["command"]: c for c in new}
    kept = [c for c in old if c["command"] not in again or not again[c["command"]]["ran"]]
    return kept + [c for c in new if c["command"] not in {k["command"] for k in kept}]


def merge(
    old: tuple[list[dict[str, Any]], dict[str, Any]],
    new: tuple[list[dict[str, Any]], dict[str, Any]],
    fresh: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The section's data after a command: its records replace those of the same (task, rule,
    network, schedule, lr, seed), the rest are kept; a task whose setting changed (another
    budget, sweep seed, or quick) starts again from the command's runs. A command run again
    replaces its own entry in the task's list of commands (:func:`_commands`). ``fresh``: every
    task of the command starts again (its earlier runs and commands are dropped)."""
    (old_records, old_tasks), (new_records, new_tasks) = old, new
    restart = {
        t for t in new_tasks
        if t in old_tasks and (fresh or not _same_setting(old_tasks[t], new_tasks[t]))
    }  # fmt: skip
    replaced = {_key(r) for r in new_records}
    records = [r for r in old_records if r["task"] not in restart and _key(r) not in replaced]
    tasks = dict(old_tasks)
    for t, m in new_tasks.items():
        o = old_tasks.get(t)
        if o is not None and t not in restart:
            ost = o.get("settings") or {}
            st = m.get("settings") or ost
            hidden = {**ost.get("hidden", {}), **st.get("hidden", {})}
            m = {**m, "settings": {**st, "hidden": hidden} if st else None,
                 "commands": _commands(o["commands"], m["commands"])}  # fmt: skip
        tasks[t] = m
    return records + new_records, tasks
