"""The benchmark command: ``python -m benchmarks`` (and ``ostl bench``, ``make bench``).

::

    python -m benchmarks --out BENCHMARKS.md      # full run: BENCHMARKS.md and BENCHMARKS.png
    python -m benchmarks --quick --out /tmp/B.md  # tiny networks, a minute: checks the harness
    python -m benchmarks --only speed --out /tmp/B.md     # one kind of measurement
    python -m benchmarks --json raw.json --out B.md       # keep the raw results; later:
    python -m benchmarks --from-json raw.json --notes analysis.md --out B.md

``--out`` is required (:mod:`.outfile`): the command never writes into the current folder
unless told.

Every measurement runs in its own process (``--in-process`` turns that off, for debugging).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ostl.run.sections import keep_sections

from .outfile import add_out_option, require_out
from .suite import KINDS, Plan, SuiteConfig, build_jobs, make_plan, run_suite

__all__ = ["build_parser", "main"]


def _positive(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s}")
    return v


def _kinds(s: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in s.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(KINDS)}, got {s}")
    return kinds


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    """The benchmark's argument parser (``ostl bench`` reuses it)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark ostl: peak memory vs sequence length, time per training step "
        "against BPTT, snnTorch and inference (eager and compiled OSTL), aten operations per "
        "step, and the memory-bandwidth floor of the traces.",
    )
    p.add_argument("--quick", action="store_true", help="tiny networks, short runs (a minute)")
    add_out_option(p, "(and its plot next to it, as .png)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads per measurement")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--only", type=_kinds, default=KINDS, help=f"comma list of {', '.join(KINDS)} (all)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument(
        "--notes", type=Path, default=None, help="Markdown appended to the report (analysis)"
    )
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="measure nothing: render the report again from the raw results of --json",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process (debugging; less reliable numbers)",
    )
    return p


def _write(
    results: list[dict[str, Any]], meta: dict[str, Any], plan: Plan, args: argparse.Namespace
) -> None:
    """The report (and its plot, and the raw results if asked) from one run's results."""
    from .plot import plot
    from .report import render

    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_ref: str | None = None
    if not args.no_plot:
        png = args.out.with_suffix(".png")
        why = plot(results, plan, png)
        plot_ref = png.name if why is None else why
    notes = args.notes.read_text() if args.notes else None
    text = render(results, meta, plan, plot=plot_ref, notes=notes)
    # Sections written by other commands (python -m benchmarks.soak, the distributed bench) stay.
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(keep_sections(text, old))
    if args.json:
        raw = {"meta": meta, "plan": plan.to_dict(), "results": results}
        args.json.write_text(json.dumps(raw, indent=1))


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the benchmark and write the report; returns the exit status.

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).
        prog: how the command is named in ``--help`` and in the report's command line
            (``ostl bench`` when called from the ``ostl`` command).
    """
    from .machine import machine_info
    from .report import headline_lines
    from .workload import registered_bench_rules

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    require_out(parser, args)
    command = " ".join([prog, *map(shlex.quote, argv)])
    if args.from_json:
        raw = json.loads(args.from_json.read_text())
        meta, plan, results = raw["meta"], Plan.from_dict(raw["plan"]), raw["results"]
        meta["rendered_by"] = command
        _write(results, meta, plan, args)
        print(f"wrote {args.out} from {args.from_json}")
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"{prog}: --device {args.device}: no CUDA device here", file=sys.stderr)
            return 2
    cfg = SuiteConfig(args.quick, args.threads, args.device, args.seed, args.only)
    registered = registered_bench_rules()
    plan = make_plan(cfg.quick, registered)
    t0 = time.perf_counter()
    results = run_suite(build_jobs(cfg, plan), isolate=not args.in_process)
    meta = {
        "command": command,
        "mode": "quick" if args.quick else "full",
        "device": args.device,
        "wall_seconds": time.perf_counter() - t0,
        "registered": registered,
        "machine": machine_info(),
    }
    _write(results, meta, plan, args)
    for line in headline_lines(results, plan):
        print(line)
    print(f"wrote {args.out} in {meta['wall_seconds']:.0f} s")
    return 1 if any("error" in r for r in results) else 0
