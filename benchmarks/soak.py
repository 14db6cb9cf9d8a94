"""Soak test of a never-ending stream: the Learner's memory and step time stay flat.

::

    python -m benchmarks.soak --out BENCHMARKS.md   # 10⁵ steps per rule; the 'soak' section
    python -m benchmarks.soak --steps 20000 --no-write

One stream, never reset: a layer of SNUs (recurrent) under a Readout, a random input and a
one-hot target at every step, the weights updated every step (online rules) or every 50 steps
(truncated BPTT), a checkpoint written every ``checkpoint_every`` steps (the newest 2 kept).
Every ``window`` steps it records the mean time per step, the process's resident memory (RSS)
and the bytes the rule holds (``Learner.state_bytes``). Flat means: the last window's time per
step within a small factor of the first's, and RSS and rule memory not growing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ostl.layer import Layer, Network, Readout
from ostl.learner import Learner
from ostl.rules import BPTT, get_rule
from ostl.run.checkpoint import save_checkpoint
from ostl.run.sections import describe_machine

from .outfile import add_out_option, require_out

__all__ = ["SoakResult", "soak", "soak_markdown", "main"]

SECTION = "soak"


@dataclass
class SoakResult:
    """Per-window figures of one soak run (window i covers steps (i-1)·window .. i·window)."""

    rule: str
    steps: int
    window: int
    ms_per_step: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    state_bytes: list[int] = field(default_factory=list)
    checkpoints: int = 0
    seconds: float = 0.0
    replay_ms: tuple[float, float] = (math.nan, math.nan)  # (early state, late state)

    def _head_tail(self) -> tuple[list[float], list[float]]:
        """Windows of the first and last tenth (at least one each; the warm-up window dropped).

        Medians over several windows: on a shared machine a single window can be slowed by
        other processes, which says nothing about the stream.
        """
        ms = self.ms_per_step[1:] if len(self.ms_per_step) > 2 else self.ms_per_step
        k = max(1, len(ms) // 10)
        return ms[:k], ms[-k:]

    @property
    def ms_first(self) -> float:
        """Median time per step over the first tenth of the stream (ms)."""
        return statistics.median(self._head_tail()[0])

    @property
    def ms_last(self) -> float:
        """Median time per step over the last tenth of the stream (ms)."""
        return statistics.median(self._head_tail()[1])

    @property
    def time_ratio(self) -> float:
        """Last tenth's median time per step over the first tenth's."""
        return self.ms_last / self.ms_first

    @property
    def rss_growth_mib(self) -> float:
        """RSS growth from the end of the first window to the end of the run."""
        return self.rss_mib[-1] - self.rss_mib[0]


def rss_mib() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(
    rule: str = "ostl",
    steps: int = 100_000,
    *,
    window: int = 1000,
    hidden: int = 64,
    n_in: int = 32,
    n_out: int = 10,
    batch_size: int = 8,
    checkpoint_every: int | None = 10_000,
    replay: int = 500,
    seed: int = 0,
) -> SoakResult:
    """Run one stream of ``steps`` steps; see the module docstring."""
    if steps < window or window <= 0:
        raise ValueError(f"steps ({steps}) must be at least one window ({window}), window > 0")
    learner = _learner(rule, n_in, hidden, n_out, batch_size, seed)
    gen = torch.Generator().manual_seed(seed)
    eye = torch.eye(n_out)

    def sample() -> tuple[Tensor, Tensor]:
        x = (torch.rand(batch_size, n_in, generator=gen) < 0.2).float()
        return x, eye[torch.randint(n_out, (batch_size,), generator=gen)]

    res = SoakResult(rule=rule, steps=steps, window=window)
    t_start = time.perf_counter()
    early: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as ckpt:
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            learner.step(*sample())
            if checkpoint_every and step % checkpoint_every == 0:
                save_checkpoint(ckpt, {"learner": learner.state_dict()}, step=step, keep=2)
                res.checkpoints += 1
            if step % window == 0:
                t1 = time.perf_counter()
                res.ms_per_step.append((t1 - t0) / window * 1e3)
                res.rss_mib.append(rss_mib())
                res.state_bytes.append(learner.state_bytes())
                if step == window:
                    early = learner.state_dict()
                t0 = time.perf_counter()
    res.seconds = time.perf_counter() - t_start
    if replay:
        data = [sample() for _ in range(replay)]
        states = (early, learner.state_dict())
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(3):  # interleaved, so that the machine's load hits both alike
            for i, sd in enumerate(states):
                times[i].append(_replay(sd, data, (rule, n_in, hidden, n_out, batch_size, seed)))
        res.replay_ms = (statistics.median(times[0]), statistics.median(times[1]))
    return res


def _learner(rule: str, n_in: int, hidden: int, n_out: int, batch_size: int, seed: int) -> Learner:
    torch.manual_seed(seed)
    net = Network([Layer(n_in, hidden, "snu", recurrent=True), Readout(hidden, n_out)])
    r = get_rule(rule)
    learner = Learner(
        net,
        r,
        loss_fn=lambda y, t: ((y - t) ** 2).mean(),
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-4),
        update_every=50 if isinstance(r, BPTT) else 1,
    )
    learner.reset(batch_size)
    return learner


def _replay(
    state: dict[str, Any], data: list[tuple[Tensor, Tensor]], build: tuple[Any, ...]
) -> float:
    """ms per step of ``data`` from a learner restored to ``state``."""
    learner = _learner(*build)
    learner.load_state_dict(state)
    t0 = time.perf_counter()
    for x, y in data:
        learner.step(x, y)
    return (time.perf_counter() - t0) / len(data) * 1e3


def soak_markdown(results: Sequence[SoakResult], command: str) -> str:
    """The BENCHMARKS.md section: one row per rule, with the command and the machine."""
    lines = [
        "## Soak: a never-ending stream (memory and step time stay flat)",
        "",
        f"Command: `{command}`. Machine: {describe_machine()}.",
        "",
        "One stream, never reset: recurrent SNU layer (32 → 64) + Readout (10), batch 8, a target "
        "and an Adam update every step (truncated BPTT: every 50 steps), a checkpoint every "
        "10⁴ steps. Time per step: mean over each window of 1000 steps; first / last = the median "
        "window of the first / last tenth of the stream (the warm-up window dropped; medians, "
        "because the machine is shared with other jobs). RSS: resident memory of the process "
        "(first: after the first window). Rule memory: `Learner.state_bytes()` (state, traces, "
        "gradients; BPTT's graph is not counted).",
        "",
        "Replay: after the stream, the learner restored from its state after the first window "
        "(early) and from its final state (late) each runs the same 500 steps, three times "
        "interleaved (median): the same machine load for both, so a real slowdown of a long "
        "stream would show as late > early.",
        "",
        "| rule | steps | ms/step first | ms/step last | last/first | replay early / late "
        "(ms/step) | RSS first (MiB) | RSS last (MiB) | RSS growth (MiB) | "
        "rule memory first → last (bytes) | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.rule} | {r.steps} | {r.ms_first:.3f} | {r.ms_last:.3f} | "
            f"{r.time_ratio:.2f} | {r.replay_ms[0]:.3f} / {r.replay_ms[1]:.3f} | "
            f"{r.rss_mib[0]:.1f} | {r.rss_mib[-1]:.1f} | "
            f"{r.rss_growth_mib:+.1f} | {r.state_bytes[0]} → {r.state_bytes[-1]} | "
            f"{r.seconds:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--rules", default="ostl,osttp,bptt")
    p.add_argument("--threads", type=int, default=1)
    add_out_option(p, "its 'soak' section")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    require_out(p, args)
    if args.steps < 1000:
        p.error(f"--steps must be at least 1000 (one window), got {args.steps}")
    torch.set_num_threads(args.threads)
    results = []
    for rule in [r.strip() for r in args.rules.split(",") if r.strip()]:
        results.append(soak(rule, args.steps))
        print(soak_markdown(results[-1:], "").splitlines()[-1], flush=True)
    cmd = f"python -m benchmarks.soak --steps {args.steps} --rules {args.rules}"
    md = soak_markdown(results, cmd)
    print(md)
    if not args.no_write:
        from ostl.run.sections import write_section

        write_section(args.out, SECTION, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
