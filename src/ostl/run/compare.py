"""``ostl compare``: the same task, network and budget trained with several rules, side by side.

Each rule runs :func:`ostl.run.train.train` with the same configuration but the rule (same seed,
so the same initial weights and the same data order). The compare folder holds one run folder
per rule, ``compare.png`` (every rule's learning curves in one figure), ``summary.json`` and
``table.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..rules import RULES
from ..tasks import get_task
from . import plots
from .config import RunResult, TrainConfig
from .train import train

__all__ = ["DEFAULT_RULES", "compare", "format_bytes", "format_table", "available_rules"]

#: The rules ``ostl compare`` and ``make run`` use by default (those registered).
DEFAULT_RULES = ("bptt", "ostl", "osttp")


def available_rules(rules: Sequence[str] = DEFAULT_RULES) -> tuple[list[str], list[str]]:
    """Split rule names into (registered, missing)."""
    have = [r for r in rules if r in RULES]
    return have, [r for r in rules if r not in RULES]


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_table(results: Sequence[RunResult]) -> str:
    """A markdown table: one row per run (rule), test metric, peak memory, time per step."""
    if not results:
        return "(no runs)"
    metric = results[0].metric
    head = (
        f"| rule | test {metric} | epoch (best valid) | test {metric}, last epoch | peak memory "
        "| time per step | updates | wall |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r.config.rule} | {r.test_metric:.4f} | {r.best_epoch} "
            f"| {r.final_test_metric:.4f} | {format_bytes(r.peak_bytes)} "
            f"| {1e3 * r.seconds_per_step:.2f} ms | {r.updates} | {r.wall_seconds:.0f} s |"
        )
    return "\n".join(lines)


def compare(
    base: TrainConfig,
    rules: Sequence[str],
    out: str | Path | None = None,
    *,
    progress: bool = True,
) -> list[RunResult]:
    """Train ``base`` once per rule and write the side-by-side comparison.

    Args:
        base: the shared configuration (its ``rule`` is replaced).
        rules: rule names, in table order.
        out: compare folder (None: write nothing).
        progress: show progress bars.
    """
    if not rules:
        raise ValueError("compare needs at least one rule")
    for r in rules:
        replace(base, rule=r).check()
    task = get_task(base.task, **base.task_options)  # load the data once for every rule
    results = []
    for rule in rules:
        run_out = Path(out) / rule if out is not None else None
        results.append(train(replace(base, rule=rule), run_out, progress=progress, task=task))
    if out is not None:
        _write(Path(out), results)
    return results


def _write(out: Path, results: Sequence[RunResult]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg = results[0].config
    title = f"{cfg.task}: {cfg.cell} {list(cfg.hidden or ())}, {cfg.epochs} epochs, seed {cfg.seed}"
    plots.compare_curves(
        {r.config.rule: r.history for r in results}, results[0].metric, title, out / "compare.png"
    )
    (out / "table.md").write_text(format_table(results) + "\n")
    summary = {r.config.rule: r.to_json() for r in results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
