"""The goals of issue 5, evaluated on the results of one run.

Each goal says what was measured and, when it is missed, by how much (the *why* is for the
maintainers' analysis, ``--notes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .results import MIB, Results, fmt_mib, fmt_ms, fmt_x, pow10, ratio
from .suite import Plan
from .workload import NetSpec

__all__ = ["Goal", "goals"]


@dataclass(frozen=True)
class Goal:
    """One goal of issue 5 and what this run measured for it."""

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
        miss = limit / value if at_least else value / limit
        shown += f"; {miss:.2f}× short of the goal" if at_least else f"; {miss:.2f}× the limit"
    return Goal(text, shown, met)


def _memory_goals(res: Results, plan: Plan) -> list[Goal]:
    t0, t1 = min(plan.memory_steps), max(plan.memory_steps)
    T0, T1 = pow10(t0), pow10(t1)
    o0, o1, b1 = res.extra("ostl", t0), res.extra("ostl", t1), res.extra("bptt", t1)
    flat = f"OSTL (diagonal) extra peak memory at T = {T1} within 5 % of that at T = {T0}"
    if o0 is None or o1 is None:
        g1 = Goal(flat, "not measured in this run", None)
    else:
        growth = o1 - o0
        shown = f"{fmt_mib(o1)} vs {fmt_mib(o0)} MiB ({growth / MIB:+.3g} MiB)"
        g1 = Goal(flat, shown, growth <= 0.05 * o0)
    ratio_text = f"BPTT's extra peak at T = {T1} at least 20× OSTL's"
    if b1 is None or o1 is None:
        g2 = Goal(ratio_text, "not measured in this run", None)
    elif o1 == 0:
        g2 = Goal(ratio_text, f"{fmt_mib(b1)} MiB vs 0 MiB", b1 > 0)
    else:
        g2 = _limit_goal(
            ratio_text,
            b1 / o1,
            20.0,
            f"{b1 / o1:.1f}× ({fmt_mib(b1)} vs {fmt_mib(o1)} MiB)",
            at_least=True,
        )
    return [g1, g2]


def _vs(res: Results, net: NetSpec, a: str, b: str, text: str, limit: float) -> Goal:
    """Goal: method a's step ≤ limit × method b's step on net."""
    ma, mb = res.ms(net, a), res.ms(net, b)
    r = ratio(ma, mb)
    shown = f"{fmt_x(r)} ({fmt_ms(ma)} vs {fmt_ms(mb)} ms/step)"
    return _limit_goal(text, r, limit, shown)


def _speedup(res: Results, net: NetSpec, fast: str, text: str) -> Goal:
    """Goal: the closed-form method ``fast`` ≥ 3× faster than its derived twin on net."""
    slow = "jacobians-derived" if fast == "jacobians" else f"{fast}-derived"
    f, s = res.ms(net, fast), res.ms(net, slow)
    r = ratio(s, f)
    shown = f"{fmt_x(r)} ({fmt_ms(s)} vs {fmt_ms(f)} ms/step)"
    return _limit_goal(f"Closed-form Jacobians ({text}", r, 3.0, shown, at_least=True)


def goals(res: Results, plan: Plan) -> list[Goal]:
    """The measurable goals of issue 5, evaluated on this run's results."""
    head, rec = plan.headline, plan.headline.with_(recurrent=True)
    ostl_ms = res.ms(head, "ostl")
    out = [
        *_memory_goals(res, plan),
        _vs(res, head, "ostl", "bptt", "OSTL (diagonal) step ≤ 1.5× BPTT's, feed-forward", 1.5),
        _limit_goal(
            "OSTL (diagonal) step ≤ 0.7 ms, feed-forward", ostl_ms, 0.7, f"{fmt_ms(ostl_ms)} ms"
        ),
        _vs(res, rec, "ostl", "bptt", "OSTL (diagonal) step ≤ 1.5× BPTT's, recurrent layer 1", 1.5),
    ]
    with_ostl = [net for net, methods in plan.speed if "ostl" in methods]
    if with_ostl:
        big = max(with_ostl, key=lambda n: n.hidden)
        ms, fl = res.ms(big, "ostl"), res.floor(big, "ostl")
        out.append(
            _limit_goal(
                f"Largest layers ({big.label}): OSTL step ≤ 1.5× its bandwidth floor",
                ratio(ms, fl),
                1.5,
                f"{fmt_x(ratio(ms, fl))} ({fmt_ms(ms)} vs {fmt_ms(fl)} ms/step)",
            )
        )
    out.append(_vs(res, head, "osttp", "ostl", "OSTTP no slower than OSTL, feed-forward", 1.0))
    fact = next((n for n, _ in plan.speed if n.factorised), None)
    if fact is None:
        out.append(Goal("Factorised traces ≤ 1.5× BPTT", "not measured in this run", None))
    else:
        out.append(
            _vs(
                res,
                fact,
                "ostl",
                "bptt",
                f"Factorised traces ({fact.label}): OSTL step ≤ 1.5× BPTT's",
                1.5,
            )
        )
    for net, methods in plan.speed:
        cell = net.cell.upper()
        if "jacobians" in methods and "jacobians-derived" in methods:
            what = "the Jacobian path (currents, cell step, blocks) ≥ 3× faster than the derived"
            out.append(_speedup(res, net, "jacobians", f"{cell}): {what} (`torch.func`) one"))
        if "ostl-derived" in methods:
            what = "the whole OSTL step ≥ 3× faster than with the derived (`torch.func`) Jacobians"
            out.append(_speedup(res, net, "ostl", f"{cell}): {what}"))
    return out
