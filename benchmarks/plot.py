"""The benchmark figure: peak memory against T, and time per step, from one run's results."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .results import MIB, Results
from .suite import Plan

__all__ = ["plot"]


def plot(results: Iterable[dict[str, Any]], plan: Plan, path: Path) -> str | None:
    """Write a PNG with matplotlib (a Figure object: no backend change); returns None, or why
    no plot was made."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed: no plot (pip install 'ostl[bench]')."
    res = Results(results)
    fig = Figure(figsize=(11, 4.2))
    ax_mem, ax_time = fig.subplots(1, 2)
    markers = "osD^v<>"
    for i, m in enumerate(plan.memory_methods):
        pts = [(T, res.extra(m, T)) for T in plan.memory_steps]
        pts = [(T, v / MIB) for T, v in pts if v is not None]
        if pts:
            ax_mem.plot(*zip(*pts), marker=markers[i % len(markers)], alpha=0.8, label=m)
    ax_mem.set_xscale("log")
    ax_mem.set_yscale("symlog", linthresh=1.0)  # linear below 1 MiB: zero is drawable
    ax_mem.set_ylim(bottom=0)
    ax_mem.set(
        xlabel="sequence length T (steps)",
        ylabel="extra peak memory (MiB)",
        title=plan.memory_net.label,
    )
    if ax_mem.lines:
        ax_mem.legend()
    nets = [plan.headline, plan.headline.with_(recurrent=True)]
    methods = list(dict.fromkeys(m for _, ms in plan.speed[:2] for m in ms))
    width = 0.8 / len(nets)
    for i, net in enumerate(nets):
        vals = [res.ms(net, m) or 0.0 for m in methods]
        ax_time.barh(
            [j + i * width for j in range(len(methods))],
            vals,
            height=width,
            label="recurrent layer 1" if net.recurrent else "feed-forward",
        )
    ax_time.set_yticks([j + width / 2 for j in range(len(methods))], methods)
    ax_time.invert_yaxis()
    ax_time.set(xlabel="ms per time step (median)", title="time per training step")
    ax_time.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None
