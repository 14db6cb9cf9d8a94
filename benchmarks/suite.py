"""The benchmark suite: which measurements a run makes (quick or full), and running them.

Full mode (for ``BENCHMARKS.md``):

- bandwidth: ``copy_`` over 2 × 512 MiB buffers;
- speed (T = 50 steps per sequence, 1 warm-up + 5 measured sequences):
  LIF feed-forward and LIF with recurrent layer 1 on the headline configuration with every
  method (forward, hand-written torch BPTT, snnTorch BPTT, the registered rules of
  :data:`~benchmarks.workload.BENCH_RULES` and the compiled OSTL); the networks of
  :func:`goal_nets` (two LSTM or GRU layers of 128 units with forward, BPTT, OSTL, OSTTP and the
  compiled OSTL; LIF with 1024 neurons per layer, traces far out of cache, and LIF with batch
  128, with forward, BPTT and OSTL); SNU with forward and the rules; LIF with 128 neurons per
  layer (traces in cache) with forward, BPTT and OSTL; the OSTL variants
  (:data:`~.workload.VARIANTS`): derived Jacobians on LIF and SNU, half-precision traces on LIF,
  LSTM and LIF-1024, the trace update without the fused kernel on LIF and LIF-1024; the LIF with
  a subtractive, non-differentiated reset (factorised traces) with forward, BPTT and OSTL;
- ops: aten operations per training step (:mod:`.ops`) on the headline configuration, for
  BPTT, OSTL, OSTTP, the hand-written torch BPTT and the compiled OSTL;
- memory: the headline configuration, BPTT and the registered online rules, T ∈ {10², 10³, 10⁴}.

Quick mode runs the same kinds on tiny networks (16 → 32 → 32 → 10, batch 4, and their
relatives) with short sequences: it checks the harness, its numbers mean little.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .job import Job, run_job
from .workload import HEADLINE, NetSpec, registered_bench_rules

__all__ = [
    "SuiteConfig",
    "Plan",
    "goal_nets",
    "make_plan",
    "build_jobs",
    "run_suite",
    "summarise",
]

KINDS = ("bandwidth", "speed", "ops", "memory")


@dataclass(frozen=True)
class SuiteConfig:
    """What the user chose: mode, threads, device, seed and which kinds to measure."""

    quick: bool = False
    threads: int = 1
    device: str = "cpu"
    seed: int = 0
    kinds: tuple[str, ...] = KINDS


@dataclass(frozen=True)
class Plan:
    """The measurements of a mode."""

    headline: NetSpec
    speed: tuple[tuple[NetSpec, tuple[str, ...]], ...]  # (network, methods)
    speed_steps: int
    speed_warmup: int
    speed_repeats: int
    memory_net: NetSpec
    memory_methods: tuple[str, ...]
    memory_steps: tuple[int, ...]
    buffer_mib: int
    bandwidth_repeats: int
    #: processes per memory entry (the table shows the median: RSS moves by ~1 MiB run to run)
    memory_repeats: int = 1
    #: methods whose aten operations per step are counted on the headline network (:mod:`.ops`)
    ops_methods: tuple[str, ...] = ()
    #: time steps of the profiled sequence
    ops_steps: int = 50
    #: rounds of speed processes: every speed job runs once per round, all of them in turn
    #: (A B C … A B C …), so a slow spell of the machine hits every method alike
    speed_rounds: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (kept with the raw results, so a report can be rendered again)."""
        d = asdict(self)
        d["speed"] = [[net.to_dict(), list(methods)] for net, methods in self.speed]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        d = dict(d)
        d["headline"] = NetSpec.from_dict(d["headline"])
        d["memory_net"] = NetSpec.from_dict(d["memory_net"])
        d["speed"] = tuple((NetSpec.from_dict(n), tuple(m)) for n, m in d["speed"])
        d["memory_methods"] = tuple(d["memory_methods"])
        d["memory_steps"] = tuple(d["memory_steps"])
        d["ops_methods"] = tuple(d.get("ops_methods", ()))
        return cls(**d)


def goal_nets(head: NetSpec) -> dict[str, NetSpec]:
    """The networks the speed goals name, derived from the headline one: ``"lstm"`` and
    ``"gru"`` (two layers of hidden/2 units: 128 at the headline), ``"wide"`` (LIF, 4× the
    neurons per layer: 1024) and ``"batch"`` (LIF, 4× the batch: 128)."""
    small = head.hidden // 2
    return {
        "lstm": head.with_(cell="lstm", hidden=small, layers=2),
        "gru": head.with_(cell="gru", hidden=small, layers=2),
        "wide": head.with_(hidden=4 * head.hidden),
        "batch": head.with_(batch=4 * head.batch),
    }


def make_plan(quick: bool, rules: Sequence[str] | None = None) -> Plan:
    """The measurements of quick or full mode (quick: the compiled OSTL on the headline only).

    Args:
        quick: tiny networks and short runs.
        rules: the rules to measure; default: those of ``BENCH_RULES`` registered now.
    """
    rules = tuple(registered_bench_rules() if rules is None else rules)
    trained = tuple(r for r in ("bptt", "ostl", "osttp") if r in rules)
    comp = ("ostl-compiled",) if "ostl" in rules else ()
    comp_big = () if quick else comp  # compiling costs seconds per network
    head = HEADLINE.with_(n_in=16, hidden=32, batch=4) if quick else HEADLINE
    nets = goal_nets(head)
    basic = ("forward", "bptt", "ostl")
    baselines = ("forward", "torch", "snntorch", *rules)
    jacobians = ("jacobians", "jacobians-derived")
    variants = ("ostl-derived", "ostl-torch", "ostl-bf16", "ostl-fp16")
    direct = ("ostl-direct",) if "ostl" in rules else ()
    speed = [
        (head, (*baselines, *direct, *comp, *variants, *jacobians)),
        (head.with_(recurrent=True), (*baselines, *comp_big)),
        (head.with_(reset="subtract", detach_reset=True), basic),
        (nets["lstm"], ("forward", *trained, *comp_big, "ostl-bf16")),
        (nets["gru"], ("forward", *trained, *comp_big)),
        (nets["wide"], (*basic, "ostl-torch", "ostl-bf16")),
        (nets["batch"], basic),
    ]
    ops = (*trained, "torch", *comp_big)
    memory = ("bptt", *(r for r in rules if r != "bptt"))
    if quick:
        return Plan(head, tuple(speed), 10, 1, 2, head, memory, (100, 1000), 32, 3, 1, ops, 10)
    speed.insert(3, (head.with_(cell="snu"), ("forward", *rules, "ostl-derived", *jacobians)))
    speed.insert(6, (head.with_(hidden=128), basic))
    steps = (100, 1000, 10000)
    return Plan(head, tuple(speed), 50, 1, 3, head, memory, steps, 512, 10, 3, ops, 50, 3)


def build_jobs(cfg: SuiteConfig, plan: Plan | None = None) -> list[Job]:
    """Every job of a run, in the order they run: bandwidth, speed, ops, memory."""
    plan = plan or make_plan(cfg.quick)

    def job(kind: str, **kw: Any) -> Job:
        return Job(kind, threads=cfg.threads, device=cfg.device, seed=cfg.seed, **kw)

    jobs: list[Job] = []
    if "bandwidth" in cfg.kinds:
        jobs.append(
            job("bandwidth", buffer_mib=plan.buffer_mib, repeats=plan.bandwidth_repeats, warmup=2)
        )
    if "speed" in cfg.kinds:
        for _ in range(plan.speed_rounds):
            for net, methods in plan.speed:
                jobs.extend(
                    job(
                        "speed",
                        method=m,
                        net=net.to_dict(),
                        steps=plan.speed_steps,
                        repeats=plan.speed_repeats,
                        warmup=plan.speed_warmup,
                    )
                    for m in methods
                )
    if "ops" in cfg.kinds:
        jobs.extend(
            job("ops", method=m, net=plan.headline.to_dict(), steps=plan.ops_steps, warmup=1)
            for m in plan.ops_methods
        )
    if "memory" in cfg.kinds:
        for m in plan.memory_methods:
            jobs.extend(
                job("memory", method=m, net=plan.memory_net.to_dict(), steps=T)
                for T in plan.memory_steps
                for _ in range(plan.memory_repeats)
            )
    return jobs


def summarise(result: dict[str, Any]) -> str:
    """One line for the progress log."""
    for key in ("skipped", "error"):
        if key in result:
            return f"{key}: {result[key]}"
    if "gbps" in result:
        return f"{result['gbps']:.1f} GB/s"
    if "ms_per_step" in result:
        return f"{result['ms_per_step']:.3f} ms/step"
    if "aten_per_step" in result:
        return f"{result['aten_per_step']:.1f} aten ops/step"
    if "extra_bytes" in result:
        return f"extra peak {result['extra_bytes'] / 2**20:.1f} MiB"
    return "done"


def run_suite(
    jobs: Sequence[Job],
    *,
    isolate: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the jobs one after another (never concurrently: they would disturb each other)."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    results = []
    for i, job in enumerate(jobs, 1):
        r = run_job(job, isolate=isolate)
        log(f"[{i}/{len(jobs)}] {job.label}: {summarise(r)} ({r['wall_seconds']:.1f} s)")
        if "traceback" in r:
            log(r["traceback"])
        results.append(r)
    return results
