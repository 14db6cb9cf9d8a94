"""The performance goals, evaluated on the results of one run.

Every speed goal is a ratio of two methods measured in the same run, on the same machine, so
it does not depend on how fast the machine is. Each goal says what was measured and, when it
is missed, by how much (the *why* is for the maintainers' analysis, ``--notes``).

:func:`goals` are the current goals; :func:`other_goals` are targets of earlier rounds that
still have no newer goal in their place (bandwidth floor, factorised traces, closed-form
Jacobians).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .results import MIB, Results, fmt_mib, fmt_ms, fmt_x, pow10, ratio
from .suite import Plan, goal_nets
from .workload import NetSpec

__all__ = ["Goal", "goals", "other_goals", "goal_roles", "LIMITS", "COMPILED_METHOD"]

#: The compiled OSTL, shown beside the eager one in the OSTL-vs-BPTT goals.
COMPILED_METHOD = "ostl-compiled"


@dataclass(frozen=True)
class Goal:
    """One goal and what this run measured for it."""

    text: str
    measured: str
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**not met**", None: "not measured"}[self.met]


def _limit_goal(
    text: str, value: float | None, limit: float, shown: str, *, at_least: bool = False
) -> Goal:
    """A goal ``value ≤ limit`` (or ``≥``); ``shown`` is the value as the table shows it."""
    if value is None:
        return Goal(text, "not measured in this run", None)
    met = value >= limit if at_least else value <= limit
    if not met:
        miss = (limit / value if value > 0 else math.inf) if at_least else value / limit
        shown += f"; {miss:.2f}× short of the goal" if at_least else f"; {miss:.2f}× the limit"
    return Goal(text, shown, met)


def _memory_goals(res: Results, plan: Plan) -> list[Goal]:
    t0, t1 = min(plan.memory_steps), max(plan.memory_steps)
    T0, T1 = pow10(t0), pow10(t1)
    o0, o1, b1 = res.extra("ostl", t0), res.extra("ostl", t1), res.extra("bptt", t1)
    net = plan.memory_net.label
    flat = f"Memory flat in T ({net}): OSTL's extra peak at T = {T1} within 5 % of that at T = {T0}"
    if o0 is None or o1 is None:
        g1 = Goal(flat, "not measured in this run", None)
    else:
        growth = o1 - o0
        shown = f"{fmt_mib(o1)} vs {fmt_mib(o0)} MiB ({growth / MIB:+.3g} MiB)"
        g1 = Goal(flat, shown, growth <= 0.05 * o0)
    ratio_text = f"Memory ({net}): BPTT's extra peak at T = {T1} at least 20× OSTL's"
    if b1 is None or o1 is None:
        g2 = Goal(ratio_text, "not measured in this run", None)
    elif b1 == 0:  # RSS grows in pages and reuses freed memory: tiny (--quick) runs
        g2 = Goal(ratio_text, "BPTT's extra peak is 0 MiB here (below the RSS resolution)", None)
    elif o1 == 0:
        g2 = Goal(ratio_text, f"{fmt_mib(b1)} MiB vs 0 MiB", True)
    else:
        g2 = _limit_goal(
            ratio_text,
            b1 / o1,
            20.0,
            f"{b1 / o1:.1f}× ({fmt_mib(b1)} vs {fmt_mib(o1)} MiB)",
            at_least=True,
        )
    return [g1, g2]


def _vs(
    res: Results, net: NetSpec, a: str, b: str, text: str, limit: float, role: str = ""
) -> Goal:
    """Goal: method a's step ≤ limit × method b's step on net, judged on the median over the
    rounds of the paired ratio (:meth:`Results.paired`); the compiled OSTL's ratio is shown
    beside OSTL's when it was measured. ``role`` names the network before its label."""
    ma, mb = res.ms(net, a), res.ms(net, b)
    p = res.paired(net, a, b)
    r = p[0] if p is not None else None
    spread = f", rounds {p[1]:.2f}–{p[2]:.2f}×" if p is not None and p[1] != p[2] else ""
    shown = f"{fmt_x(r)} ({fmt_ms(ma)} vs {fmt_ms(mb)} ms/step{spread})"
    name = f"{role} ({net.label})" if role else net.label
    goal = _limit_goal(f"{name}: {text}", r, limit, shown)
    pc = res.paired(net, COMPILED_METHOD, b) if a == "ostl" else None
    if pc is None:
        return goal
    return Goal(
        goal.text, f"{goal.measured}; compiled OSTL (not the goal): {fmt_x(pc[0])}", goal.met
    )


def _ops_goal(res: Results, plan: Plan) -> Goal:
    head = plan.headline
    o, b = res.aten(head, "ostl"), res.aten(head, "bptt")
    r = ratio(o, b)
    shown = "–" if o is None or b is None else f"{fmt_x(r)} ({o:.0f} vs {b:.0f} per step)"
    text = f"Headline ({head.label}): aten operations per OSTL step ≤ 1.5× those of a BPTT step"
    return _limit_goal(text, r, 1.5, shown)


def goal_roles(head: NetSpec) -> dict[str, NetSpec]:
    """The networks of the speed goals by how the goals name them (headline first)."""
    nets = goal_nets(head)
    return {
        "Headline, feed-forward": head,
        "Headline, recurrent layer 1": head.with_(recurrent=True),
        f"Two LSTM-{nets['lstm'].hidden} layers": nets["lstm"],
        f"Two GRU-{nets['gru'].hidden} layers": nets["gru"],
        f"LIF-{nets['wide'].hidden}, batch {nets['wide'].batch}": nets["wide"],
        f"LIF-{nets['batch'].hidden}, batch {nets['batch'].batch}": nets["batch"],
    }


#: OSTL's step ÷ BPTT's limit on the networks of :func:`goal_nets`.
LIMITS = {"lstm": 2.5, "gru": 2.5, "wide": 2.5, "batch": 2.0}


def goals(res: Results, plan: Plan) -> list[Goal]:
    """The current goals, evaluated on this run's results."""
    head = plan.headline
    roles = list(goal_roles(head).items())
    out = _memory_goals(res, plan)
    for role, net in roles[:2]:
        torch_text = "OSTL step ≤ 1.6× the hand-written PyTorch BPTT's"
        out += [
            _vs(res, net, "ostl", "bptt", "OSTL step ≤ 1.3× ostl's BPTT step", 1.3, role),
            _vs(res, net, "osttp", "ostl", "OSTTP step ≤ OSTL's", 1.0, role),
            _vs(res, net, "ostl", "torch", torch_text, 1.6, role),
        ]
    for (role, net), limit in zip(roles[2:], LIMITS.values()):
        text = f"OSTL step ≤ {limit:g}× ostl's BPTT step"
        out.append(_vs(res, net, "ostl", "bptt", text, limit, role))
    out.append(_ops_goal(res, plan))
    return out


def _speedup(res: Results, net: NetSpec, fast: str, text: str) -> Goal:
    """Goal: the closed-form method ``fast`` ≥ 3× faster than its derived twin on net."""
    slow = "jacobians-derived" if fast == "jacobians" else f"{fast}-derived"
    f, s = res.ms(net, fast), res.ms(net, slow)
    r = ratio(s, f)
    shown = f"{fmt_x(r)} ({fmt_ms(s)} vs {fmt_ms(f)} ms/step)"
    return _limit_goal(f"Closed-form Jacobians ({text}", r, 3.0, shown, at_least=True)


def other_goals(res: Results, plan: Plan) -> list[Goal]:
    """Targets of earlier rounds that no current goal replaces, evaluated on this run."""
    out = []
    with_ostl = [net for net, methods in plan.speed if "ostl" in methods]
    if with_ostl:
        big = max(with_ostl, key=lambda n: n.hidden)
        ms, fl = res.ms(big, "ostl"), res.floor(big, "ostl")
        out.append(
            _limit_goal(
                f"{big.label}: OSTL step ≤ 1.5× its bandwidth floor",
                ratio(ms, fl),
                1.5,
                f"{fmt_x(ratio(ms, fl))} ({fmt_ms(ms)} vs {fmt_ms(fl)} ms/step)",
            )
        )
    fact = next((n for n, _ in plan.speed if n.factorised), None)
    if fact is not None:
        out.append(_vs(res, fact, "ostl", "bptt", "factorised traces, OSTL ≤ 1.5× BPTT's", 1.5))
    for net, methods in plan.speed:
        cell = net.cell.upper()
        if "jacobians" in methods and "jacobians-derived" in methods:
            what = "the Jacobian path (currents, cell step, blocks) ≥ 3× faster than the derived"
            out.append(_speedup(res, net, "jacobians", f"{cell}): {what} (`torch.func`) one"))
        if "ostl-derived" in methods:
            what = "the whole OSTL step ≥ 3× faster than with the derived (`torch.func`) Jacobians"
            out.append(_speedup(res, net, "ostl", f"{cell}): {what}"))
    return out
