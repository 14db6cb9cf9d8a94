"""Throughput of data-parallel online learning: samples per second with 1 and N processes.

::

    python -m benchmarks.distributed --out BENCHMARKS.md    # 1 and 2 processes, 4 modes
    python -m benchmarks.distributed --procs 1,2,4 --rules ostl --modes online --rounds 1
    python -m benchmarks.distributed --rules ostl,osttp --batch 64 \
        --modes online,delayed,every-4,every-8,delayed-every-4 --rounds 5 --out /tmp/D.md

Workload: the headline network of :mod:`.workload` (64 Poisson inputs → LIF(256) → LIF(256) →
readout 10), a *global* batch of 32 sequences of ``steps`` steps (``--batch``), a loss at every
step, Adam; online rules update as the mode says, BPTT once per sequence. With N processes
(launched by torchrun, gloo on CPU, one torch thread each) every process learns on its slice
of the batch and the gradients are summed over the processes before every update
(:class:`ostl.Learner`, ``distributed=True``). A *sample* is one sequence of ``steps`` steps;
throughput is the global batch times the timed sequences over the wall time between two
barriers (after ``warmup`` discarded sequences). The section ``distributed`` of ``--out`` is
replaced (other sections stay).

``--modes`` picks how the online rules update (:data:`MODES`, the names of ``ostl train
--schedule``): ``online`` (the default Learner: an update after every step, each waiting for
its all-reduce), ``every-K`` (``update_every=K``: one all-reduce and one update per K steps),
``delayed`` (``delayed_updates=True``: the all-reduce of each update runs during the next step,
and its gradient is applied one update late) and ``delayed-every-K`` (both). BPTT runs in
``online`` only (it updates once per sequence).
Every (rule, mode, process count) runs in its own torchrun launch; ``--rounds R`` repeats the
whole set R times, the process counts interleaved (ascending, then descending, ...), and the
report gives the median throughput and the median and range of the per-round speed-ups, each
against the same round's single-process run of the same rule and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ostl import distributed as dist
from ostl.errors import OptionError
from ostl.learner import Learner
from ostl.run.config import parse_schedule
from ostl.run.sections import write_section

from .machine import machine_info
from .outfile import add_out_option, require_out
from .workload import HEADLINE, build_network, input_pool, loss_fn, make_optimizer, make_rule

__all__ = ["main", "measure", "markdown", "parse_mode", "MODES"]

#: What each ``--modes`` entry means: the run schedules of ``ostl train --schedule``
#: (:func:`ostl.run.config.parse_schedule`; ``every-K`` and ``delayed-every-K`` for any K >= 1).
MODES = {
    "online": "an update after every step, each waiting for a blocking all-reduce of every "
    "gradient (the default)",
    "every-K": "update_every={k}: each process sums its gradients over {k} steps, then one "
    "blocking all-reduce and one update (one process with the whole batch and update_every={k} "
    "follows the same trajectory)",
    "delayed": "delayed_updates=True: an update after every step, applying the gradient of the "
    "step before, whose all-reduce ran in the background during this step",
    "delayed-every-K": "delayed_updates=True and update_every={k}: the all-reduce of each "
    "update runs during the next {k} steps",
}


def parse_mode(mode: str) -> tuple[int, bool]:
    """``(update_every, delayed)`` of a mode name (:data:`MODES`)."""
    try:
        every, delayed = parse_schedule(mode)
    except OptionError:
        every = None
    if every is None:  # "sequence" too: the online rules' modes only
        raise argparse.ArgumentTypeError(
            f"unknown mode {mode!r}: expected online, delayed, every-K or delayed-every-K (K >= 1)"
        )
    return every, delayed


def measure(
    rule: str, steps: int, warmup: int, repeats: int, batch: int, mode: str = "online"
) -> dict[str, Any]:
    """Run in every process: time ``repeats`` sequences of this rank's shard; rank 0's record."""
    spec = HEADLINE.with_(batch=batch)
    world, s = dist.world_size(), dist.shard_range(batch, dist.rank(), dist.world_size())
    net = build_network(spec, seed=0)
    every, delayed = parse_mode(mode)
    if rule == "bptt" and mode != "online":
        raise ValueError(f"BPTT updates once per sequence: mode {mode!r} does not apply")
    learner = Learner(
        net,
        make_rule(rule),
        loss_fn=loss_fn,
        optimizer=make_optimizer(net.parameters()),
        update_every=None if rule == "bptt" else every,
        distributed=world > 1,
        delayed_updates=delayed,
    )
    pool = input_pool(spec, steps)[:, s]
    gen = torch.Generator().manual_seed(2)
    target = torch.nn.functional.one_hot(
        torch.randint(0, spec.classes, (batch,), generator=gen), spec.classes
    )
    target = target.float()[s]

    def sequence() -> None:
        learner.reset(s.stop - s.start)
        for x in pool:
            learner.step(x, target)
        learner.end_sequence()

    for _ in range(warmup):
        sequence()
    _barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        sequence()
    _barrier()
    wall = time.perf_counter() - t0
    return {
        "allreduce_ms": _allreduce_ms(learner) if world > 1 else None,
        "rule": rule,
        "mode": mode,
        "processes": world,
        "batch": batch,
        "local_batch": s.stop - s.start,
        "steps": steps,
        "sequences": repeats,
        "wall_s": wall,
        "samples_per_s": batch * repeats / wall,
        "sample_steps_per_s": batch * repeats * steps / wall,
    }


def _allreduce_ms(learner: Learner, repeats: int = 50) -> float:
    """Milliseconds of one gradient all-reduce (:func:`ostl.distributed.all_reduce_grads`)."""
    grads, b = learner.runner.grads, learner.runner.batch_size
    _barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce_grads(grads, b, True)
    _barrier()
    return 1e3 * (time.perf_counter() - t0) / repeats


def _barrier() -> None:
    if dist.active():
        torch.distributed.barrier()


def _worker(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    dist.init("cpu")
    try:
        rows = [
            measure(r, args.steps, args.warmup, args.repeats, args.batch, m)
            for r, m in _configs(args.rules, args.modes)
        ]
        if dist.is_main():
            Path(args.worker).write_text(json.dumps(rows))
    finally:
        dist.shutdown()
    return 0


def _configs(rules: list[str], modes: list[str]) -> list[tuple[str, str]]:
    """Every (rule, mode) to measure: BPTT in ``online`` only."""
    return [(r, m) for r in rules for m in modes if r != "bptt" or m == "online"]


def _speedups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[float]]:
    """Per (rule, mode, processes): the speed-up of each round over its 1-process run."""
    one = {(r["rule"], r.get("mode", "online"), r.get("round", 0)): r["samples_per_s"]
           for r in rows if r["processes"] == 1}  # fmt: skip
    out: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        mode, rnd = r.get("mode", "online"), r.get("round", 0)
        base = one.get((r["rule"], mode, rnd))
        if base:
            out.setdefault((r["rule"], mode, r["processes"]), []).append(r["samples_per_s"] / base)
    return out


def _mode_table(rows: list[dict[str, Any]], mode: str) -> list[str]:
    """One mode's table: a row per (rule, processes), medians over the rounds."""
    speed = _speedups(rows)
    default = {r: statistics.median(v) for (r, m, n), v in _throughputs(rows).items()
               if m == "online" and n == 1}  # fmt: skip
    every, delayed = parse_mode(mode)
    about = MODES[mode] if every == 1 else MODES["delayed-every-K" if delayed else "every-K"]
    lines = [
        f"**{mode}**: {about.format(k=every)}.",
        "",
        "| rule | processes | batch per process | samples/s | sample-steps/s | speed-up "
        "| one gradient all-reduce | scaling efficiency | vs online, 1 process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (rule, m, n), thr in _throughputs(rows).items():
        if m != mode:
            continue
        group = [
            r for r in rows if (r["rule"], r.get("mode", "online"), r["processes"]) == (rule, m, n)
        ]
        r0, ratios = group[0], speed.get((rule, m, n), [])
        b = r0["batch"]
        sizes = sorted({len(range(b)[dist.shard_range(b, i, n)]) for i in range(n)})
        ars = [r["allreduce_ms"] for r in group if r.get("allreduce_ms") is not None]
        steps_s = statistics.median(r["sample_steps_per_s"] for r in group)
        su = statistics.median(ratios) if ratios else float("nan")
        spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
        vs = f"{statistics.median(thr) / default[rule]:.2f}×" if rule in default else "–"
        lines.append(
            f"| {rule} | {n} | {' or '.join(map(str, sizes))} | {statistics.median(thr):.1f} "
            f"| {steps_s:.0f} | {su:.2f}×{spread} "
            f"| {f'{statistics.median(ars):.2f} ms' if ars else '–'} | {su / n:.0%} | {vs} |"
        )
    return lines + [""]


def _throughputs(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[float]]:
    """Samples per second of every round, per (rule, mode, processes), in the rows' order."""
    out: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        key = (r["rule"], r.get("mode", "online"), r["processes"])
        out.setdefault(key, []).append(r["samples_per_s"])
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], command: str) -> str:
    """The ``distributed`` section of BENCHMARKS.md."""
    r0 = rows[0]
    rounds = len({r.get("round", 0) for r in rows})
    modes = list(dict.fromkeys(r.get("mode", "online") for r in rows))
    lines = [
        "## Data-parallel throughput (torch.distributed)",
        "",
        f"Generated by `{command}` on {meta['date']} ({meta['cpu']}, {meta['usable_cores']} "
        f"usable cores, torch {meta['torch']}, gloo, one torch thread per process, ostl "
        f"commit {meta['commit']}).",
        "",
        f"Network: LIF 64→256→256→10; a global batch of {r0['batch']} sequences of "
        f"{r0['steps']} steps, a loss at every step, Adam; online rules update as the mode says "
        "(below), BPTT once per sequence. N processes launched by torchrun each learn on their "
        "slice of the batch. A sample is one sequence; throughput is "
        f"{r0['batch']} × {r0['sequences']} timed sequences over the wall time between two "
        "barriers, after a warm-up sequence. Each (rule, mode, process count) ran in its own "
        f"launch, {rounds} round(s), the process counts interleaved; samples/s is the median "
        "over the rounds, speed-up the median (and range) of each round's throughput over the "
        "same round's single process with the same rule and mode, scaling efficiency the "
        "speed-up over the number of processes, and the last column the throughput over that of "
        "one process in mode online.",
        "",
    ]
    for mode in modes:
        lines += _mode_table(rows, mode)
    lines += [
        "Load on the machine"
        + (
            f": 1-minute load average {meta['load'][0]:.1f} before and {meta['load'][1]:.1f} "
            f"after the measurement (its own processes count in it), on {meta['usable_cores']} "
            "cores"
            if "load" in meta
            else ": not recorded"
        )
        + ". Other jobs on the same cores make these numbers noisy: compare runs on a quiet "
        "machine. In mode online the online rules "
        "synchronise at every step: each step costs the slower process's compute plus one "
        "all-reduce of every gradient (timed separately), so a process that is "
        "descheduled by another job stalls both: with more processes than free cores the "
        "speed-up can fall below 1.",
    ]
    return "\n".join(lines) + "\n"


def _procs(s: str) -> list[int]:
    try:
        ns = [int(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2, got {s!r}") from None
    if not ns or any(n <= 0 for n in ns):
        raise argparse.ArgumentTypeError(f"process counts must be positive, got {s}")
    return ns


def _modes(s: str) -> list[str]:
    modes = s.split(",")
    for m in modes:
        parse_mode(m)  # an ArgumentTypeError names the bad one
    return modes


def _positive(s: str) -> int:
    if not s.isdigit() or int(s) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return int(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--procs", type=_procs, default=[1, 2], help="process counts (default 1,2)")
    p.add_argument(
        "--rules", type=lambda s: s.split(","), default=["bptt", "ostl", "osttp"], help="rules"
    )
    p.add_argument("--steps", type=int, default=50, help="time steps per sequence")
    p.add_argument("--batch", type=int, default=HEADLINE.batch, help="global batch")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=4, help="timed sequences")
    p.add_argument(
        "--modes",
        type=_modes,
        default=["online", "delayed", "every-4", "delayed-every-4"],
        help="how the online rules update, comma-separated run schedules: online, delayed, "
        "every-K, delayed-every-K (K >= 1); default online,delayed,every-4,delayed-every-4",
    )
    p.add_argument(
        "--rounds", type=_positive, default=3, help="repeat every launch this many times (3)"
    )
    add_out_option(p, "its 'distributed' section")
    p.add_argument("--no-write", action="store_true", help="print the section, write nothing")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run as a torchrun worker
    return p


def _launch(n: int, rule: str, mode: str, opts: list[str], tmp: str) -> list[dict[str, Any]]:
    """One torchrun launch of ``n`` workers measuring one rule in one mode: rank 0's rows.

    A failed launch is run once more (said on stderr), so that a long ``--rounds`` run does not
    lose its measurements to one crash; a second failure ends the command.
    """
    path = os.path.join(tmp, "rows.json")
    worker = ["-m", "benchmarks.distributed", *opts, f"--rules={rule}", f"--modes={mode}"]
    status = dist.launch([*worker, "--worker", path], n)
    if status != 0:
        print(f"the run of {rule} ({mode}) with {n} processes failed (status {status}): "
              "once more", file=sys.stderr)  # fmt: skip
        status = dist.launch([*worker, "--worker", path], n)
    if status != 0:
        raise SystemExit(f"the run of {rule} ({mode}) with {n} processes failed (status {status})")
    rows: list[dict[str, Any]] = json.loads(Path(path).read_text())
    os.remove(path)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:  # a torchrun worker writes nothing
        return _worker(args)
    require_out(parser, args)
    if any(n > args.batch for n in args.procs):
        raise SystemExit(f"every process needs a sequence: --batch {args.batch} < --procs")
    opts = [f"--steps={args.steps}", f"--batch={args.batch}", f"--warmup={args.warmup}",
            f"--repeats={args.repeats}"]  # fmt: skip
    rows: list[dict[str, Any]] = []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            procs = args.procs if rnd % 2 == 0 else args.procs[::-1]
            for rule, mode in _configs(args.rules, args.modes):
                for n in procs:  # each configuration in its own launch
                    rows += [{**r, "round": rnd} for r in _launch(n, rule, mode, opts, tmp)]
    load.append(os.getloadavg()[0])
    rows.sort(key=lambda r: (args.rules.index(r["rule"]), args.modes.index(r["mode"]),
                             r["processes"], r["round"]))  # fmt: skip
    command = "python -m benchmarks.distributed" + (f" {' '.join(argv)}" if argv else "")
    meta = {**machine_info(), "load": load}
    text = markdown(rows, meta, command)
    print(text)
    if not args.no_write:
        write_section(args.out, "distributed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
