"""Benchmarks of ostl: peak memory vs sequence length, time per step, bandwidth floors.

Run ``python -m benchmarks --out BENCHMARKS.md`` (full; ``make bench``) or ``python -m
benchmarks --quick --out /tmp/B.md`` (``--out`` is required: nothing is written into the
working tree unless asked). Modules, one concept each:

- :mod:`.workload`: the networks, inputs, loss and methods (rules and baselines) measured;
- :mod:`.baselines`: BPTT outside ostl (hand-written autograd LIF, snnTorch);
- :mod:`.memory`, :mod:`.speed`, :mod:`.ops`, :mod:`.bandwidth`: the kinds of measurement;
- :mod:`.job`, :mod:`.worker`: one measurement, run in its own process;
- :mod:`.suite`: which measurements a run makes (quick or full) and running them;
- :mod:`.goals`: the goals, evaluated on one run's results;
- :mod:`.machine`, :mod:`.report`, :mod:`.tables`, :mod:`.plot`: the report and its figure;
- :mod:`.outfile`: the ``--out`` option every command that writes the report takes;
- :mod:`.cli`: the command; :func:`main` is what ``ostl bench`` calls.

Commands that write one section of the report each (``--out``, or ``--no-write`` to print):
:mod:`.soak` (a never-ending stream), :mod:`.denormal`, :mod:`.distributed` (throughput with 1
and N processes per update schedule), :mod:`.schedules` (the schedules' accuracy), and
:mod:`.gpu` (with :mod:`.gpu_memory`, :mod:`.gpu_sync`, :mod:`.gpu_report`: OSTL against BPTT
on a CUDA device).
"""

from __future__ import annotations

from .cli import build_parser, main
from .job import Job, run_job
from .suite import SuiteConfig, build_jobs, make_plan, run_suite
from .workload import HEADLINE, NetSpec

__all__ = [
    "main",
    "build_parser",
    "Job",
    "run_job",
    "SuiteConfig",
    "make_plan",
    "build_jobs",
    "run_suite",
    "NetSpec",
    "HEADLINE",
]
