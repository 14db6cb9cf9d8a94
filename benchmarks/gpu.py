"""GPU benchmark: time per training step against BPTT, host syncs, memory until BPTT runs out.

::

    python -m benchmarks.gpu --device cuda --out BENCHMARKS.md   # the 'gpu' section, ~3 min
    python -m benchmarks.gpu --device cuda --out /tmp/G.md --json /tmp/G.json
    python -m benchmarks.gpu --from-json /tmp/G.json --out BENCHMARKS.md  # render again
    python -m benchmarks.gpu --device cpu --quick --no-write      # tiny sizes: checks the harness

Three measurements, each section of the report saying how it was made:

1. Time per training step of BPTT, OSTL and OSTTP on three networks: the headline one (LIF
   64→256→256→10, batch 32), hidden 1024 and batch 256. Each (method, network) runs in its own
   process (:func:`benchmarks.job.run_job`, the suite's isolation) with
   :func:`benchmarks.speed.measure_speed`: sequences of ``--steps`` steps (50), 2 of them
   discarded, the median of the next 5; the device synchronised around each timed sequence.
   BPTT trains a sequence and then runs its backward pass (one update per sequence); OSTL and
   OSTTP update after every step; ms per step is a sequence's time over its steps. ``--rounds``
   repeats every process, the methods' order reversed every other round (A B C, C B A: each
   pair of methods runs A B B A), and OSTL ÷ BPTT is taken per round, between processes that
   ran close together in time.
2. Host synchronisations of OSTL with ``update_every=4`` on the headline network, counted on
   every step between updates (none allowed) and at the updates: on CUDA with
   ``torch.cuda.set_sync_debug_mode("warn")``, on the CPU with the detector of
   ``benchmarks/sync_detector.py``; a deliberate ``.item()`` checks that the counter sees a sync.
3. Peak device memory against T, doubling T until BPTT raises ``torch.cuda.OutOfMemoryError``,
   then OSTL at that T and the next (:mod:`.gpu_memory`, which says how its workload is chosen).
   CUDA only: on the CPU the section says so.

The goals are computed from these numbers: OSTL's step ≤ 1.5× BPTT's on the headline network and
at hidden 1024, no sync between updates, and BPTT out of memory at a T where OSTL runs.

Expected wall time on one H200, estimated from CPU figures (a GPU has not measured it yet):
ostl's Learner spends about 1–1.5 ms of host time per step even on a tiny network (CPU, one
thread), a floor for a GPU step, where these networks' kernels are short; a process starts in
about 4 s (interpreter, torch, ostl). 18 processes × ~5 s (start-up, CUDA initialisation, 7
sequences of 50 steps) ≈ 90 s; the sync count a few seconds; the memory sweep ≈ 13k BPTT and 31k
OSTL steps at ~1.5–2 ms ≈ 70–90 s, capped by ``--memory-time`` (120 s): about 3 to 4 minutes in
all. ``--budget`` bounds the whole run (measurements that would end after it are skipped, and
said so).

Without a CUDA device ``--device cuda`` prints one line and exits with status 2. The section
``gpu`` of ``--out`` is replaced (other sections stay).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ostl.run.sections import write_section

from .gpu_memory import (
    CPU_BYTES_PER_SAMPLE_STEP,
    bytes_per_sample_step,
    choose_batch,
    memory_sweep,
    target_steps,
)
from .gpu_sync import count_syncs
from .job import Job, run_job
from .outfile import add_out_option, require_out
from .workload import (
    HEADLINE,
    NetSpec,
    registered_bench_rules,
)

__all__ = ["GpuPlan", "make_gpu_plan", "speed_jobs", "run_speed", "measure_memory_part", "main"]

PROG = "python -m benchmarks.gpu"
SECTION = "gpu"
#: Seconds kept for the memory sweep when ``--budget`` bounds the run (at most --memory-time).
MEMORY_RESERVE = 60.0


@dataclass(frozen=True)
class GpuPlan:
    """What one run measures (see the module docstring)."""

    nets: dict[str, NetSpec]  # role -> network, the headline first, then hidden, then batch
    methods: tuple[str, ...]
    steps: int
    warmup: int
    repeats: int
    rounds: int
    memory_net: NetSpec
    memory_t0: int
    memory_tmax: int
    memory_time: float
    sync_every: int = 4
    sync_steps: int = 24

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nets"] = {k: v.to_dict() for k, v in self.nets.items()}
        d["memory_net"] = self.memory_net.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GpuPlan:
        d = dict(d)
        d["nets"] = {k: NetSpec.from_dict(v) for k, v in d["nets"].items()}
        d["memory_net"] = NetSpec.from_dict(d["memory_net"])
        d["methods"] = tuple(d["methods"])
        return cls(**d)


def make_gpu_plan(quick: bool, args: argparse.Namespace | None = None) -> GpuPlan:
    """The full plan (the sizes of the module docstring) or the quick one (tiny networks,
    short sequences); ``args`` overrides steps, rounds and the memory options when given."""
    head = HEADLINE.with_(n_in=16, hidden=32, batch=4) if quick else HEADLINE
    wide, big = head.with_(hidden=4 * head.hidden), head.with_(batch=8 * head.batch)
    nets = {"headline": head, f"hidden {wide.hidden}": wide, f"batch {big.batch}": big}
    methods = tuple(m for m in ("bptt", "ostl", "osttp") if m in registered_bench_rules())
    if quick:
        plan = GpuPlan(nets, methods, 10, 1, 2, 2, head, 100, 400, 30.0, 2, 6)
    else:
        plan = GpuPlan(nets, methods, 50, 2, 5, 2, head, 1000, 64000, 120.0)
    if args is None:
        return plan
    d = plan.to_dict() | {k: getattr(args, k) for k in ("rounds", "steps") if getattr(args, k)}
    d |= {k: v for k in ("memory_t0", "memory_tmax", "memory_time") if (v := getattr(args, k))}
    return GpuPlan.from_dict(d)


def speed_jobs(
    plan: GpuPlan, device: str, threads: int = 1, seed: int = 0
) -> list[tuple[int, Job]]:
    """(round, job) of every speed process, in the order they run: per round every network,
    the methods in order in even rounds and reversed in odd ones."""
    out = []
    for rnd in range(plan.rounds):
        for net in plan.nets.values():
            for m in plan.methods if rnd % 2 == 0 else plan.methods[::-1]:
                job = Job("speed", m, net.to_dict(), plan.steps, plan.repeats, plan.warmup,
                          threads, device, seed)  # fmt: skip
                out.append((rnd, job))
    return out


def run_speed(
    jobs: Sequence[tuple[int, Job]],
    *,
    isolate: bool = True,
    deadline: float = float("inf"),
    log: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """Run the jobs one after another; each result carries its ``round``. A job that would end
    after ``deadline`` (``time.perf_counter()`` seconds; its length guessed from the longest
    so far) is skipped with the reason."""
    rows: list[dict[str, Any]] = []
    longest = 0.0
    for i, (rnd, job) in enumerate(jobs, 1):
        if time.perf_counter() + longest > deadline:
            r: dict[str, Any] = {"job": job.to_dict(), "skipped": "out of time (--budget)"}
        else:
            left = min(3600.0, max(60.0, deadline - time.perf_counter()))  # finite
            r = run_job(job, isolate=isolate, timeout=left)
            longest = max(longest, r["wall_seconds"])
        rows.append({**r, "round": rnd})
        what = r.get("error") or r.get("skipped") or f"{r['ms_per_step']:.3f} ms/step"
        log(f"[{i}/{len(jobs)}] round {rnd + 1}: {job.label}: {what}")
    return rows


def measure_memory_part(
    plan: GpuPlan, *, device: str, batch: int | None, time_cap: float, seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:  # fmt: skip
    """The memory sweep on CUDA (:mod:`.gpu_memory`), its batch chosen from the device's free
    memory unless ``batch`` is given; elsewhere ``skipped`` with the reason."""
    if torch.device(device).type != "cuda":
        return {"skipped": "needs CUDA: the device allocator's peak and its out-of-memory error "
                "(this run is on the CPU)"}  # fmt: skip
    if time_cap <= 0:
        return {"skipped": "out of time (--budget)"}
    spec = plan.memory_net
    t0 = time.perf_counter()
    per = bytes_per_sample_step(spec, device=device)
    free, total = torch.cuda.mem_get_info(torch.device(device))
    choice = "given" if batch is not None else "sized"
    if batch is None:
        sized = per if per is not None else CPU_BYTES_PER_SAMPLE_STEP
        batch = choose_batch(free, sized, target_steps(plan.memory_t0))
    spec = spec.with_(batch=batch)
    log(f"memory: {spec.label}, {per} bytes per sample and step, {free} of {total} bytes free")
    left = time_cap - (time.perf_counter() - t0)
    sweep = memory_sweep(spec, device=device, t0=plan.memory_t0, t_max=plan.memory_tmax,
                         time_cap=left, seed=seed, log=log)  # fmt: skip
    predicted = free / (per * batch) if per else None
    return {"net": spec.to_dict(), "batch_choice": choice, "per_sample_step": per,
            "free_bytes": free, "total_bytes": total, "predicted_oom_steps": predicted,
            **sweep}  # fmt: skip


def _machine(device: str) -> dict[str, Any]:
    from .machine import machine_info

    m = machine_info()
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        m |= {"gpu": props.name, "gpu_memory_bytes": props.total_memory,
              "cuda_version": torch.version.cuda}  # fmt: skip
    return m


def _positive(s: str) -> int:
    if not s.isdigit() or int(s) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return int(s)


def _seconds(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny networks, short runs")
    add_out_option(p, "its 'gpu' section")
    p.add_argument("--no-write", action="store_true", help="print the section, write nothing")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--from-json", type=Path, help="measure nothing: render --json's results")
    p.add_argument("--rounds", type=_positive, help="rounds of speed processes (2; quick 2)")
    p.add_argument("--steps", type=_positive, help="steps per timed sequence (50; quick 10)")
    p.add_argument("--memory-t0", type=_positive, help="first T of the memory sweep (1000)")
    p.add_argument("--memory-tmax", type=_positive, help="largest T of the sweep (64000)")
    p.add_argument("--memory-time", type=_seconds, help="time cap of the sweep, s (120)")
    p.add_argument("--memory-batch", type=_positive, help="batch of the sweep (default: sized so "
                   "that BPTT runs out of memory between 4 and 8 times --memory-t0)")  # fmt: skip
    p.add_argument("--budget", type=_seconds, help="seconds for the whole run (no limit)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--in-process", action="store_true",
                   help="time every method in this process (debugging; less reliable)")  # fmt: skip
    return p


def _device_ok(p: argparse.ArgumentParser, device: str) -> str | None:
    """None when ``device`` can run here, else the one line that says why not."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = ""
    if kind not in ("cpu", "cuda"):
        p.error(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        return f"{PROG}: --device {device}: no CUDA device here"
    return None


def measure(args: argparse.Namespace, command: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement of a run, with the plan and the machine (JSON-ready)."""
    start = time.perf_counter()
    deadline = start + args.budget if args.budget else float("inf")
    plan = make_gpu_plan(args.quick, args)
    cuda = torch.device(args.device).type == "cuda"
    reserve = min(plan.memory_time, MEMORY_RESERVE) if cuda else 0.0
    jobs = speed_jobs(plan, args.device, args.threads, args.seed)
    speed = run_speed(jobs, isolate=not args.in_process, deadline=deadline - reserve, log=log)
    sync = _guarded(lambda: count_syncs(plan.nets["headline"], device=args.device,
                    every=plan.sync_every, steps=plan.sync_steps, seed=args.seed))  # fmt: skip
    log(f"syncs: {sync}")
    cap = min(plan.memory_time, deadline - time.perf_counter())
    # quick: the plan's tiny batch (sized for a full device, a tiny network's batch is huge)
    batch = args.memory_batch or (plan.memory_net.batch if args.quick else None)
    memory = _guarded(lambda: measure_memory_part(plan, device=args.device, batch=batch,
                      time_cap=cap, seed=args.seed, log=log))  # fmt: skip
    meta = {"command": command, "device": args.device, "mode": "quick" if args.quick else "full",
            "machine": _machine(args.device)}  # fmt: skip
    meta["wall_seconds"] = time.perf_counter() - start
    return {"meta": meta, "plan": plan.to_dict(), "speed": speed, "sync": sync, "memory": memory}


def _guarded(part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A part of the run, or ``error`` (and ``traceback``) if it raised: the parts before it
    are kept and reported."""
    try:
        return part()
    except Exception as e:  # noqa: BLE001 - a failed part is reported, not fatal
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def failed(data: dict[str, Any]) -> list[str]:
    """What failed in a run (not skipped, not a goal missed): errors of every measurement."""
    out = [f"speed {r['job']['method']}: {r['error']}" for r in data["speed"] if "error" in r]
    out += [f"{k}: {data[k]['error']}" for k in ("sync", "memory") if "error" in data[k]]
    out += [f"memory {r['method']} T={r['steps']}: {r['status']}"
            for r in data["memory"].get("rows", []) if r["status"].startswith("error")]  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from .gpu_report import goal_lines, markdown

    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args = p.parse_args(argv)
    command = " ".join([PROG, *map(shlex.quote, argv)])
    require_out(p, args)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        data["meta"]["rendered_by"] = command
    else:
        why = _device_ok(p, args.device)
        if why is not None:
            print(why, file=sys.stderr)
            return 2
        data = measure(args, command, lambda s: print(s, file=sys.stderr, flush=True))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=1))
    text = markdown(data)
    print(text)
    for line in goal_lines(data):
        print(line)
    if args.out is not None and not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_section(args.out, SECTION, text)
        print(f"wrote the '{SECTION}' section of {args.out}")
    for line in failed(data):
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failed(data) else 0


if __name__ == "__main__":
    raise SystemExit(main())
