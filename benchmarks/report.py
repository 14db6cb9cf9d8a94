"""BENCHMARKS.md from the results of one run: every number in it comes from a measurement.

:func:`render` turns the results of :func:`benchmarks.suite.run_suite` and the run's facts
(command, machine, wall time) into Markdown: the goals with the measured values, peak memory
against sequence length, time per training step with ratios to BPTT and to inference measured
in the same run, the compiled OSTL beside the eager one, aten operations per step, the
memory-bandwidth floor of the trace updates, and what was skipped and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .bandwidth import FORMULA
from .goals import Goal, goals, other_goals
from .job import Job
from .results import MIB, Results, fmt_mib, fmt_ms, fmt_x, pow10, ratio
from .suite import Plan
from .tables import compiled_section, method_name, ops_section, precision_section
from .workload import BENCH_RULES, NetSpec

__all__ = ["render", "headline_lines"]


def _machine_table(meta: dict[str, Any], res: Results) -> list[str]:
    m = meta["machine"]
    l3 = f"{m['l3_bytes'] / MIB:.0f} MiB (as the OS reports it)" if m.get("l3_bytes") else "?"
    mem = f"{m['mem_bytes'] / 2**30:.1f} GiB" if m.get("mem_bytes") else "?"
    threads = ", ".join(str(t) for t in res.threads()) or "?"
    rows = [
        ("CPU", f"{m['cpu']} ({m['cores']} logical cores, {m['usable_cores']} usable)"),
        ("last-level cache", l3),
        ("memory", mem),
        ("OS", m["os"]),
        ("Python", m["python"]),
        ("torch", f"{m['torch']}; `torch.set_num_threads({threads})` in every measuring process"),
        ("snnTorch", m["snntorch"] or "not installed"),
        ("ostl", f"{m['ostl']} (commit {m['commit'] or '?'})"),
        ("device", meta["device"] + (f" ({m['cuda']})" if m.get("cuda") else "")),
    ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _repeats(n: int) -> str:
    if n == 1:
        return "comes from its own process"
    return (
        f"is the median of {n} processes, each measuring it once (the whole-process figures "
        "move by about 1 MiB from one process to the next)"
    )


def _memory_section(res: Results, plan: Plan) -> list[str]:
    Ts = plan.memory_steps
    methods = [m for m in plan.memory_methods if any((m, T) in res.memory for T in Ts)]
    if not methods:
        return ["Not measured in this run."]
    head = " | ".join(f"T = {pow10(T)}" for T in Ts)
    lines = [
        f"Network: {plan.memory_net.label}; one sequence of T steps, a loss at every step, Adam. "
        "BPTT: `Learner(update_every=None)`, full BPTT over the T steps and one update at the "
        "end; online rules: `Learner(update_every=1)`, an update after every step. Each entry "
        f"{_repeats(plan.memory_repeats)}. *Extra* is the process's peak resident memory "
        "(`VmHWM`, reset after the model was built) minus its resident memory just before the "
        "sequence (model, optimizer and a pool of 100 input frames built, code paths warmed on "
        "a tiny network). *Held* is `Learner.state_bytes()` at the last step: the tensors the rule "
        "keeps (state, traces, gradients; not BPTT's autograd graph).",
        "",
        "Extra peak memory above the baseline (MiB):",
        "",
        f"| method | {head} | T = {pow10(Ts[-1])} ÷ T = {pow10(Ts[0])} |",
        "|---|" + "---:|" * (len(Ts) + 1),
    ]
    for m in methods:
        cells = [fmt_mib(res.extra(m, T)) for T in Ts]
        growth = fmt_x(ratio(res.extra(m, Ts[-1]), res.extra(m, Ts[0])))
        lines.append(f"| {method_name(m)} | {' | '.join(cells)} | {growth} |")
    for title, key in (
        ("Whole-process peak resident memory (MiB)", "peak_bytes"),
        ("Tensors held by the learner at the last step (MiB)", "held_bytes"),
        ("Wall time of the sequence (s)", "seconds"),
    ):
        lines += ["", f"{title}:", "", f"| method | {head} |", "|---|" + "---:|" * len(Ts)]
        for m in methods:
            cells = []
            for T in Ts:
                v = res.value(res.memory.get((m, T)), key)
                cells.append("–" if v is None else (f"{v:.1f}" if key == "seconds" else fmt_mib(v)))
            lines.append(f"| {method_name(m)} | {' | '.join(cells)} |")
    return lines


def _speed_section(res: Results, plan: Plan) -> list[str]:
    if not res.speed:
        return ["Not measured in this run."]
    lines = [
        f"Milliseconds per time step of training: median over {_rounds(plan)}, "
        f"{plan.speed_repeats} sequences of T = {plan.speed_steps} steps each after "
        f"{plan.speed_warmup} warm-up sequence(s); *min–max* spans every measured sequence; "
        "batch, loss and optimizer (Adam) as above. A step of an "
        "online rule is forward + trace update + learning signal + gradient + Adam update; a "
        "step of BPTT is the forward pass with its graph plus 1/T of the backward pass and of "
        "the single update. The compiled OSTL compiles its step in one more sequence before "
        "the warm-up, off the clock. Ratios are to BPTT (ostl's) and to the forward-only step "
        "of the same network, measured in this run: the median over the rounds of the ratio of "
        "the two methods' processes in each round (they ran close together in time).",
    ]
    for net, methods in plan.speed:
        lines += [
            "",
            f"**{net.label}**",
            "",
            "| method | ms/step | min–max | × BPTT | × forward | trace MiB | "
            "bandwidth floor ms | × floor |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in methods:
            r = res.speed.get((net, m))
            if r is None:
                continue
            if not res.ok(r):
                why = r.get("skipped") or r.get("error")
                lines.append(f"| {method_name(m)} | – | | | | | | skipped: {why} |")
                continue
            ms, spread = r["ms_per_step"], r["ms_per_step_all"]
            fl = res.floor(net, m)
            cells = [
                method_name(m),
                fmt_ms(ms),
                f"{fmt_ms(min(spread))}–{fmt_ms(max(spread))}",
                _paired(res, net, m, "bptt"),
                _paired(res, net, m, "forward"),
                fmt_mib(r["trace_bytes"]),
                fmt_ms(fl),
                fmt_x(ratio(ms, fl)),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _bandwidth_section(res: Results, meta: dict[str, Any]) -> list[str]:
    b = res.bandwidth
    if b is None:
        return ["Not measured in this run."]
    if not res.ok(b):
        return [f"Bandwidth measurement failed: {b.get('error') or b.get('skipped')}"]
    l3 = meta["machine"].get("l3_bytes")
    lines = [
        f"Measured copy bandwidth: **{b['gbps']:.1f} GB/s** (median of {len(b['gbps_all'])} "
        f"`dst.copy_(src)` over two {b['buffer_bytes'] / MIB:.0f} MiB float32 buffers, "
        f"{min(b['gbps_all']):.1f}–{max(b['gbps_all']):.1f} GB/s; read + write counted, "
        f"{b['threads']} thread(s)).",
        "",
        f"Floor of a trace update: {FORMULA}; floor = bytes/step ÷ bandwidth. The bytes are "
        "those of the trace tensors the runner holds after `reset` (the `eps` tensors of "
        "`runner.traces`),"
        " shown as *trace MiB* in the tables above; *× floor* is the measured step (everything "
        "in it, not only the trace update) divided by that floor. Traces that fit in the "
        "last-level cache can beat the floor (ratio < 1).",
    ]
    sizes = b.get("by_size", [])
    if sizes:
        lines += [
            "",
            "Copy bandwidth by buffer size (where the caches end):",
            "",
            "| buffer MiB | " + " | ".join(str(s["mib"]) for s in sizes) + " |",
            "|---|" + "---:|" * len(sizes),
            "| GB/s | " + " | ".join(f"{s['gbps']:.1f}" for s in sizes) + " |",
        ]
    if l3:
        lines += ["", f"Last-level cache as the OS reports it: {l3 / MIB:.0f} MiB."]
    return lines


def _notes(res: Results, registered: Sequence[str]) -> list[str]:
    lines = []
    missing = [r for r in BENCH_RULES if r not in registered]
    if missing:
        lines.append(
            f"- Not registered in `ostl.rules.RULES` at run time, so not measured: "
            f"{', '.join(missing)}."
        )
    for r in res.all:
        why = r.get("skipped") or r.get("error")
        if why:
            kind = "skipped" if "skipped" in r else "failed"
            lines.append(f"- {Job.from_dict(r['job']).label}: {kind}: {why}")
    lines.append(
        "- The hand-written and snnTorch baselines use ostl's LIF constants (α = 0.9, ϑ = 1, "
        "reset to zero, fast sigmoid of slope 5); snnTorch detaches its reset and its "
        "recurrent `nn.Linear` has a bias: same work per step, slightly different gradients."
    )
    lines.append(
        "- The machine may be shared: absolute times are noisy; ratios within one run are the "
        "figures to quote."
    )
    return lines


def _goal_rows(gs: list[Goal]) -> list[str]:
    return [
        "| goal | measured | verdict |",
        "|---|---|---|",
        *(f"| {g.text} | {g.measured} | {g.verdict} |" for g in gs),
    ]


def _goals_section(res: Results, plan: Plan) -> list[str]:
    met = goals(res, plan)
    n_met = sum(g.met is True for g in met)
    lines = [
        "Speed goals are ratios of two methods measured in this run on this machine (time per "
        "training step, see below); BPTT is ostl's own (`update_every=None`) unless the goal "
        "names the hand-written PyTorch one. Where the compiled OSTL was measured, its ratio "
        "is shown beside the eager one; the goals are about the eager OSTL.",
        "",
        *_goal_rows(met),
        "",
        f"{n_met} of {len(met)} goals met.",
    ]
    other = other_goals(res, plan)
    if other:
        lines += ["", "Other targets, still tracked:", "", *_goal_rows(other)]
    return lines


def render(
    results: Iterable[dict[str, Any]],
    meta: dict[str, Any],
    plan: Plan,
    *,
    plot: str | None = None,
    notes: str | None = None,
) -> str:
    """BENCHMARKS.md for one run.

    Args:
        results: the results of :func:`~benchmarks.suite.run_suite`.
        meta: ``command``, ``mode``, ``device``, ``wall_seconds``, ``registered`` (the rules of
            ``BENCH_RULES`` registered when the run started), ``machine``
            (:func:`~benchmarks.machine.machine_info`) and, when the report is rendered again
            from raw results, ``rendered_by``.
        plan: the plan the jobs came from.
        plot: file name of the plot (relative to the Markdown file), or a note why there is none.
        notes: Markdown appended verbatim (the maintainers' analysis), or None.
    """
    res = Results(results)
    m = meta["machine"]
    again = meta.get("rendered_by")
    out = [
        "# ostl benchmarks",
        "",
        "<!-- Generated by the command below; do not edit by hand: rerun it. -->",
        "",
        f"Generated by `{meta['command']}` on {m['date']} ({meta['mode']} mode, "
        f"{meta['wall_seconds']:.0f} s wall time)."
        + (f" Rendered again from its raw results by `{again}`." if again else ""),
        "",
    ]
    sections = [
        ("Machine", _machine_table(meta, res)),
        ("Goals", _goals_section(res, plan)),
        ("Peak memory vs sequence length", _memory_section(res, plan)),
        ("Time per training step", _speed_section(res, plan)),
        ("Compiled OSTL", compiled_section(res, plan)),
        ("Operations per training step", ops_section(res, plan)),
        ("Low-precision traces", precision_section(res, plan)),
        ("Memory-bandwidth floor of the trace update", _bandwidth_section(res, meta)),
    ]
    for title, lines in sections:
        out += [f"## {title}", "", *lines, ""]
    if plot is not None:
        out += ["## Plot", ""]
        out += [f"![memory and time per step]({plot})" if plot.endswith(".png") else plot, ""]
    out += ["## Notes", "", *_notes(res, meta.get("registered", BENCH_RULES)), ""]
    if notes:
        out += ["## Analysis", "", notes.strip(), ""]
    return "\n".join(out)


def headline_lines(results: Iterable[dict[str, Any]], plan: Plan) -> list[str]:
    """A few lines for the terminal: the headline ratios and memory of this run."""
    res = Results(results)
    head, rec = plan.headline, plan.headline.with_(recurrent=True)
    lines = []
    for net in (head, rec):
        row = ", ".join(
            f"{m} {fmt_ms(res.ms(net, m))}"
            for m in ("forward", "bptt", "torch", "ostl", "ostl-compiled", "osttp", "eprop")
            if res.ms(net, m) is not None
        )
        if row:
            lines.append(f"{net.label}: ms/step {row}")
    ops = ", ".join(
        f"{m} {res.aten(head, m):.0f}" for m in plan.ops_methods if res.aten(head, m) is not None
    )
    if ops:
        lines.append(f"{head.label}: aten ops/step {ops}")
    T1 = max(plan.memory_steps)
    mem = ", ".join(
        f"{m} {fmt_mib(res.extra(m, T1))} MiB"
        for m in plan.memory_methods
        if res.extra(m, T1) is not None
    )
    if mem:
        lines.append(f"extra peak memory at T = {T1}: {mem}")
    for g in goals(res, plan):
        lines.append(f"goal: {g.text}: {g.measured}: {g.verdict}")
    return lines


def _rounds(plan: Plan) -> str:
    n = plan.speed_rounds
    if n == 1:
        return "one process per method"
    return (
        f"{n} processes per method, run in {n} rounds that take every method in turn "
        "(A B C … A B C …, so that a slow spell of the shared machine hits every method alike)"
    )


def _paired(res: Results, net: NetSpec, a: str, b: str) -> str:
    p = res.paired(net, a, b)
    return fmt_x(p[0] if p is not None else None)
