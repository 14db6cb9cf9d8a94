"""The ``gpu`` section of BENCHMARKS.md and its goals, from the raw results of
``python -m benchmarks.gpu`` (:mod:`.gpu`): every figure and verdict is computed here from the
measured numbers, so rendering the same results again gives the same section."""

from __future__ import annotations

import statistics
from typing import Any

from .goals import Goal
from .results import Results, fmt_ms, fmt_x
from .workload import NetSpec

__all__ = ["LIMIT", "goals", "goal_lines", "markdown", "round_stats"]

#: OSTL's step ÷ BPTT's limit on the headline network and at hidden 1024.
LIMIT = 1.5
GIB = 2**30

_NAMES = {
    "bptt": "BPTT (`update_every=None`: backward once per sequence)",
    "ostl": "OSTL, diagonal (`update_every=1`)",
    "osttp": "OSTTP (`update_every=1`)",
}


def _missing(part: dict[str, Any]) -> str:
    """Why a part of the run has no numbers (skipped, or failed), or "" when it has them."""
    if "error" in part:
        return f"failed: {part['error']}"
    return str(part.get("skipped", ""))


def _nets(data: dict[str, Any]) -> dict[str, NetSpec]:
    return {k: NetSpec.from_dict(v) for k, v in data["plan"]["nets"].items()}


def round_stats(res: Results, net: NetSpec, method: str) -> tuple[float, float, float] | None:
    """(median, min, max) over the rounds of a method's ms/step (each round's process gives its
    median over its sequences); None when no round measured it."""
    ms = [r["ms_per_step"] for r in res.speed_rounds.get((net, method), []) if res.ok(r)]
    return (statistics.median(ms), min(ms), max(ms)) if ms else None


def _speed_goal(res: Results, role: str, net: NetSpec) -> Goal:
    text = f"OSTL step ≤ {LIMIT:g}× BPTT's, {role} ({net.label})"
    p = res.paired(net, "ostl", "bptt")
    if p is None:
        return Goal(text, "not measured in this run", None)
    o, b = round_stats(res, net, "ostl"), round_stats(res, net, "bptt")
    ms = f"{fmt_ms(o[0])} vs {fmt_ms(b[0])} ms/step" if o and b else ""
    shown = f"{fmt_x(p[0])} (rounds {p[1]:.2f}–{p[2]:.2f}×; {ms})"
    met = p[0] <= LIMIT
    return Goal(text, shown if met else f"{shown}; {p[0] / LIMIT:.2f}× the limit", met)


def _sync_goal(sync: dict[str, Any]) -> Goal:
    every = sync.get("update_every", 4)
    text = f"No host sync between updates (OSTL, `update_every={every}`, headline network)"
    if _missing(sync):
        return Goal(text, f"not measured: {_missing(sync)}", None)
    if sync["control"] < 1:
        return Goal(text, "not measured: the counter missed a deliberate `.item()`", None)
    if not sync.get("schedule_ok", True):
        return Goal(
            text, "not measured: the updates were not at the steps counted as updates", None
        )
    shown = (
        f"{sync['syncs_between']} in {sync['between_steps']} steps between updates "
        f"({sync['syncs_at_updates']} at the {sync['updates']} updates)"
    )
    return Goal(text, shown, sync["syncs_between"] == 0)


def _memory_goal(memory: dict[str, Any]) -> Goal:
    text = "BPTT runs out of device memory at a T where OSTL still runs"
    if _missing(memory):
        return Goal(text, f"not measured: {_missing(memory)}", None)
    out_at = memory["out_of_memory_at"]
    if out_at is None:
        return Goal(text, f"not measured: BPTT never ran out ({memory['stop']})", None)
    ostl = {r["steps"]: r for r in memory["rows"] if r["method"] == "ostl"}
    there = ostl.get(out_at)
    if there is None:
        return Goal(text, f"BPTT ran out at T = {out_at}; OSTL was not run there", None)
    ran = sorted(n for n, r in ostl.items() if r["status"] == "ok" and n >= out_at)
    peaks = [r["peak_bytes"] for r in ostl.values() if r["status"] == "ok"]
    if there["status"] != "ok":
        return Goal(text, f"BPTT ran out at T = {out_at}; OSTL too: {there['status']}", False)
    flat = f"OSTL's peak {min(peaks) / GIB:.3f}–{max(peaks) / GIB:.3f} GiB over every T"
    shown = (
        f"BPTT out of memory at T = {out_at}; OSTL ran at T = {', '.join(map(str, ran))}; {flat}"
    )
    return Goal(text, shown, True)


def goals(data: dict[str, Any]) -> list[Goal]:
    """The goals of the section, each computed from the run's numbers."""
    res = Results(data["speed"])
    roles = list(_nets(data).items())[:2]  # the headline network and the wide one
    out = [_speed_goal(res, role, net) for role, net in roles]
    return out + [_sync_goal(data["sync"]), _memory_goal(data["memory"])]


def goal_lines(data: dict[str, Any]) -> list[str]:
    """One line per goal, ``goal: <verdict> | <goal> | <measured>`` (for logs and summaries)."""
    verdict = {True: "met", False: "NOT MET", None: "not measured"}
    return [f"goal: {verdict[g.met]} | {g.text} | {g.measured}" for g in goals(data)]


def _machine_line(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    host = f"host CPU {m['cpu']} ({m['usable_cores']} usable cores)"
    soft = f"torch {m['torch']}, ostl commit {m['commit']}"
    if m.get("gpu"):
        gpu = f"{m['gpu']} ({m['gpu_memory_bytes'] / GIB:.1f} GiB), CUDA {m['cuda_version']}"
        return f"{gpu}, {soft}; {host}"
    return f"no GPU (`--device {meta['device']}`); {host}, {soft}"


def _speed_table(data: dict[str, Any]) -> list[str]:
    res, plan = Results(data["speed"]), data["plan"]
    lines = [
        f"Each (method, network) in its own process, {plan['rounds']} round(s), the methods' "
        "order reversed every other round (A B C, C B A); in a process, sequences of "
        f"{plan['steps']} steps, {plan['warmup']} discarded, the median of {plan['repeats']}, the "
        "device synchronised before and after each timed sequence. BPTT runs the sequence, then "
        "its backward pass and one Adam update; OSTL and OSTTP an Adam update after every step. "
        "ms/step: the median over the rounds (min–max beside it); ÷ BPTT: the ratio of the two "
        "processes of each round, median (min–max) over the rounds.",
        "",
        "| network | method | ms/step | min–max over rounds | ÷ BPTT |",
        "|---|---|---:|---:|---:|",
    ]
    for role, net in _nets(data).items():
        for m in plan["methods"]:
            st = round_stats(res, net, m)
            if st is None:
                rs = res.speed_rounds.get((net, m), [])
                why = next((r.get("error") or r.get("skipped") for r in rs), "not run")
                lines.append(f"| {role}: {net.label} | {_NAMES.get(m, m)} | – | {why} | – |")
                continue
            p = res.paired(net, m, "bptt") if m != "bptt" else None
            vs = f"{fmt_x(p[0])} ({p[1]:.2f}–{p[2]:.2f})" if p else "–"
            lines.append(
                f"| {role}: {net.label} | {_NAMES.get(m, m)} | {fmt_ms(st[0])} "
                f"| {fmt_ms(st[1])}–{fmt_ms(st[2])} | {vs} |"
            )
    return lines + [""]


def _sync_text(sync: dict[str, Any]) -> list[str]:
    if _missing(sync):
        return [f"Not measured: {_missing(sync)}.", ""]
    seen = "".join(
        f"; {where}: " + "; ".join(f"`{e}`" for e in sync[key])
        for key, where in (
            ("between_examples", "between updates"),
            ("update_examples", "at an update"),
        )
        if sync[key]
    )
    return [
        f"OSTL with `update_every={sync['update_every']}` on the headline network, after two "
        f"updates of warm-up, counted with {sync['counter']}: **{sync['syncs_between']}** "
        f"syncs in the {sync['between_steps']} steps between updates, "
        f"{sync['syncs_at_updates']} at the {sync['updates']} updates (reading the update's "
        f'finite-or-not verdict under `nonfinite="raise"`){seen}. The counter saw '
        f"{sync['control']} sync(s) in a deliberate `.item()`.",
        "",
    ]


def _memory_text(memory: dict[str, Any]) -> list[str]:
    if _missing(memory):
        return [f"Not measured: {_missing(memory)}.", ""]
    net = NetSpec.from_dict(memory["net"])
    per, pred = memory["per_sample_step"], memory["predicted_oom_steps"]
    per_s = f"{per:,.0f} bytes per sample and step" if per else "not measurable here"
    pred_s = f"; BPTT should run out at T ≈ {pred:,.0f}" if pred else ""
    chosen = (
        "the batch chosen so that BPTT runs out between two doublings of T"
        if memory.get("batch_choice") == "sized"
        else "the batch as given (`--memory-batch`, or the tiny network of `--quick`)"
    )
    lines = [
        f"Network: {net.label}; one sequence per entry, a loss at every step, Adam. BPTT "
        "(`update_every=None`) keeps the graph of all T steps until its backward pass; OSTL "
        "(`update_every=1`) keeps nothing per step. Peak: `torch.cuda.max_memory_allocated()` "
        "after `torch.cuda.reset_peak_memory_stats()`, minus what was allocated once the model, "
        "optimizer and inputs were built. BPTT's graph measured on this device: "
        f"{per_s}; with {memory['free_bytes'] / GIB:.1f} of "
        f"{memory['total_bytes'] / GIB:.1f} GiB free, {chosen}{pred_s}. *s*: wall time of the "
        "measurement (the model built, a short warm-up, the sequence).",
        "",
        "| T | BPTT peak (GiB) | OSTL peak (GiB) | BPTT s | OSTL s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for T in sorted({r["steps"] for r in memory["rows"]}):
        cells = []
        for m in ("bptt", "ostl"):
            r = next((r for r in memory["rows"] if (r["method"], r["steps"]) == (m, T)), None)
            if r is None:
                cells.append(("not run", "–"))
            elif r["status"] == "ok":
                cells.append((f"{r['peak_bytes'] / GIB:.2f}", f"{r['seconds']:.1f}"))
            else:
                cells.append(("**" + r["status"] + "**", f"{r['seconds']:.1f}"))
        lines.append(f"| {T} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} |")
    return lines + ["", f"The sweep stopped: {memory['stop']}.", ""]


def markdown(data: dict[str, Any]) -> str:
    """The ``gpu`` section of BENCHMARKS.md."""
    meta = data["meta"]
    again = f" Rendered again by `{meta['rendered_by']}`." if meta.get("rendered_by") else ""
    gs = goals(data)
    lines = [
        "## GPU: time per step, host syncs, memory until BPTT runs out",
        "",
        f"Generated by `{meta['command']}` on {meta['machine']['date']} ({meta['mode']} mode, "
        f"{meta['wall_seconds']:.0f} s wall time).{again}",
        "",
        f"Machine: {_machine_line(meta)}.",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
        *(f"| {g.text} | {g.measured} | {g.verdict} |" for g in gs),
        "",
        f"{sum(g.met is True for g in gs)} of {len(gs)} goals met.",
        "",
        "**Time per training step**",
        "",
        *_speed_table(data),
        "**Host synchronisations**",
        "",
        *_sync_text(data["sync"]),
        "**Peak device memory against the sequence length T**",
        "",
        *_memory_text(data["memory"]),
    ]
    return "\n".join(lines)
