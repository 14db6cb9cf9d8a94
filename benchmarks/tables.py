"""Sections of the benchmark report about the OSTL step itself: compiled against eager, aten
operations per step, and traces stored in half precision (:mod:`.report` assembles them)."""

from __future__ import annotations

from .results import Results, fmt_mib, fmt_ms, fmt_x, ratio
from .suite import Plan
from .workload import NetSpec

__all__ = ["METHOD_NAMES", "method_name", "compiled_section", "ops_section", "precision_section"]

METHOD_NAMES = {
    "forward": "forward only (inference, `net.step` under no_grad)",
    "torch": "PyTorch autograd BPTT, hand-written LIF",
    "snntorch": "snnTorch BPTT (`Leaky` / `RLeaky`)",
    "ostl-direct": "OSTL written directly for this network (same maths and kernel, no library)",
    "bptt": "ostl BPTT (`update_every=None`)",
    "ostl": "OSTL, diagonal (`update_every=1`)",
    "osttp": "OSTTP (`update_every=1`)",
    "eprop": "e-prop (`update_every=1`)",
    "ostl-compiled": "OSTL, diagonal, compiled (`Learner(..., compile=True)`)",
    "ostl-derived": 'OSTL, diagonal, Jacobians derived with torch.func (`jacobians="derived"`)',
    "ostl-torch": "OSTL, diagonal, trace update in PyTorch ops, no fused kernel (`OSTL_KERNELS=0`)",
    "ostl-bf16": "OSTL, diagonal, bfloat16 traces (`trace_dtype=torch.bfloat16`)",
    "ostl-fp16": "OSTL, diagonal, float16 traces (`trace_dtype=torch.float16`)",
    "jacobians": "Jacobian path alone: currents, cell step and closed-form Jacobian blocks",
    "jacobians-derived": "Jacobian path alone, blocks derived with torch.func",
}

COMPILED = "ostl-compiled"


def method_name(m: str) -> str:
    """How the report names a method."""
    return METHOD_NAMES.get(m, f"{m} (`update_every=1`)")


def _compiled_row(res: Results, net: NetSpec) -> str:
    r = res.speed.get((net, COMPILED))
    if r is None or not res.ok(r):
        why = "not measured" if r is None else (r.get("skipped") or r.get("error"))
        return f"| {net.label} | {fmt_ms(res.ms(net, 'ostl'))} | – | | | | | {why} |"
    eager, comp = res.ms(net, "ostl"), r["ms_per_step"]

    def paired(a: str, b: str) -> float | None:  # median over the rounds, as everywhere
        p = res.paired(net, a, b)
        return None if p is None else p[0]

    gain = paired("ostl", COMPILED)
    if gain is None:
        verdict = "–"
    else:
        verdict = (
            "compiled faster" if gain > 1.05 else "eager faster" if gain < 0.95 else "about even"
        )
    if r.get("recompiles"):
        verdict += f"; {r['recompiles']} recompilation(s) while timed"
    cells = [
        net.label,
        fmt_ms(eager),
        fmt_ms(comp),
        fmt_x(gain),
        fmt_x(paired("ostl", "bptt")),
        fmt_x(paired(COMPILED, "bptt")),
        f"{r['compile_seconds']:.1f}" if r.get("compile_seconds") is not None else "–",
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def compiled_section(res: Results, plan: Plan) -> list[str]:
    """OSTL with ``Learner(..., compile=True)`` beside the eager OSTL, network by network."""
    nets = [net for net, methods in plan.speed if COMPILED in methods]
    if not nets or not any((net, COMPILED) in res.speed for net in nets):
        return ["Not measured in this run."]
    return [
        "`Learner(net, rule, ..., compile=True)` runs the rule's whole step (every layer's "
        "forward pass and Jacobians, the learning signals, the trace updates) under "
        "`torch.compile`; the optimizer step stays eager. Its first step compiles it: that "
        "sequence runs before the warm-up, off the clock, and its wall time is shown "
        "(*compile s*; it includes the sequence itself). With a target at every step this is "
        "one graph; a recompilation while the clock ran would be flagged in the last column. "
        "This is a report, not a goal: it shows where compiling pays off.",
        "",
        "| network | OSTL ms/step | compiled ms/step | eager ÷ compiled | OSTL × BPTT | "
        "compiled × BPTT | compile s | |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *(_compiled_row(res, net) for net in nets),
    ]


def _top_ops(top: dict[str, float] | None, n: int = 5) -> str:
    if not top:
        return ""
    return ", ".join(f"{name} {count:.0f}" for name, count in list(top.items())[:n])


def ops_section(res: Results, plan: Plan) -> list[str]:
    """Aten operations per training step, method by method, on the headline network."""
    head = plan.headline
    methods = [m for m in plan.ops_methods if (head, m) in res.ops]
    if not methods:
        return ["Not measured in this run."]
    lines = [
        f"Network: {head.label}. Aten operations dispatched per training step, counted with "
        f"`torch.profiler` over one sequence of T = {plan.ops_steps} steps after a warm-up "
        "sequence, each method in its own process, divided by T: BPTT's backward pass, every "
        "optimizer step and every zeroing of gradients are in the sequence. *All* counts every "
        "profiler event whose name starts with `aten::`, nested ones included (an "
        "`aten::linear` that calls `aten::t` and `aten::addmm` counts 3), the same for every "
        "method; *backward* is the part of *all* that autograd's engine ran (BPTT's backward "
        "pass); *top level* counts only those with no aten operation above them (what Python "
        "code or an autograd node called directly). Work that bypasses the dispatcher is not "
        "counted: ostl's fused trace kernel, which eager code calls directly, and the code "
        "`torch.compile` generates. Fewer operations mean less fixed cost per step, which is "
        "what dominates on small networks.",
        "",
        "| method | aten ops/step, all | × BPTT | backward | top level | × BPTT | most frequent "
        "top-level ops per step |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    b_all, b_top = res.aten(head, "bptt"), res.aten(head, "bptt", top=True)
    for m in methods:
        r = res.ops[(head, m)]
        if not res.ok(r):
            why = r.get("skipped") or r.get("error")
            lines.append(f"| {method_name(m)} | – | | | | | {why} |")
            continue
        a, t = r["aten_per_step"], r["aten_top_per_step"]
        back = r.get("aten_backward_per_step")
        cells = [method_name(m), f"{a:.1f}", fmt_x(ratio(a, b_all))]
        cells += ["–" if back is None else f"{back:.1f}", f"{t:.1f}"]
        cells += [fmt_x(ratio(t, b_top)), _top_ops(r.get("top_ops"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def precision_section(res: Results, plan: Plan) -> list[str]:
    """Traces stored in half precision: their time and the error of their gradient."""
    rows = []
    for net, methods in plan.speed:
        for m in methods:
            r = res.speed.get((net, m))
            if r is None or not res.ok(r) or r.get("grad_cosine") is None:
                continue
            cells = [
                net.label,
                method_name(m),
                fmt_ms(r["ms_per_step"]),
                fmt_x(ratio(r["ms_per_step"], res.ms(net, "ostl"))),
                fmt_mib(r["trace_bytes"]),
                f"{r['grad_cosine']:.6f}",
                f"{r['grad_rel_error']:.2e}",
            ]
            rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return ["Not measured in this run."]
    return [
        "Traces stored in half precision (`OSTL(trace_dtype=...)`): the arithmetic runs in "
        "float32 and gradients accumulate in float32, but every step's trace is rounded to the "
        "storage dtype. The error is measured on the gradient of one sequence of the speed "
        f"run (T = {plan.speed_steps}, weights fixed) against float32 OSTL: the worst cosine "
        "and the worst relative error ‖g − g₃₂‖ / ‖g₃₂‖ over the parameters.",
        "",
        "| network | method | ms/step | × OSTL float32 | trace MiB | cosine | rel. error |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]
