"""Run the GPU tests (pytest's ``gpu`` marker) and the GPU benchmark on a CUDA device; summarise.

    python scripts/gpu_check.py --out gpu-check.txt      # make gpu-check

The tests marked ``gpu`` (``tests/test_gpu.py``: every rule and cell on CUDA against the CPU;
``tests/test_gpu_train.py``: ``ostl.run.train`` of every task with BPTT, OSTL, OSTTP and e-prop
on CUDA, batches moved without a host synchronisation, PCM refused on CUDA; the sync-free and
NCCL tests) run in one pytest session, in a few worker processes, stopped after ``--timeout``
seconds (default 480). Then, in what is left of ``--total`` (default 540 s: 9 minutes), the GPU
benchmark ``python -m benchmarks.gpu --device cuda`` (time per step of OSTL against BPTT, host
syncs between updates, memory until BPTT runs out) writes its section into ``gpu-bench.md`` and
its raw results into ``gpu-bench.json``, both next to ``--out``; ``python -m benchmarks.gpu
--from-json <that json> --out BENCHMARKS.md`` puts the section into the report later, on any
machine. With less than ``--bench-min`` seconds left the benchmark is skipped, and the summary
says so; ``--no-bench`` skips it.

The summary (device, torch and CUDA versions, passed / failed / skipped counts, the failed
tests, the wall time, then the benchmark's exit status and its goal lines) is printed and
written to ``--out``.

Exit status: 0 when every test passed (skips allowed) and the benchmark, if it ran, finished
with status 0 (a goal it reports as not met is not a failure); 1 otherwise (a failure, an error,
nothing collected, a timeout). Without a CUDA device it says so in one line, writes that line to
``--out`` and exits 0, so that a machine without a GPU is not a failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: The prefix of the benchmark's goal lines on its standard output.
GOAL_PREFIX = "goal: "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="where to write the summary")
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        help="pytest worker processes (0, or pytest-xdist missing: one process)",
    )
    p.add_argument(
        "--timeout", type=float, default=480.0, help="stop the tests after this many seconds"
    )
    p.add_argument(
        "--total",
        type=float,
        default=540.0,
        help="seconds for the whole check: the benchmark gets what the tests leave (540)",
    )
    p.add_argument(
        "--bench-min",
        type=float,
        default=120.0,
        help="skip the benchmark when fewer seconds than this are left (120)",
    )
    p.add_argument("--no-bench", action="store_true", help="run the tests only")
    return p.parse_args(argv)


def counts(junit: Path) -> tuple[dict[str, int], list[str]]:
    """Passed, failed, error and skipped counts of a JUnit XML report, and the failed tests."""
    n = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    failed: list[str] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        kind = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        kind = {"failure": "failed"}.get(kind, kind)
        n[kind] += 1
        if kind in ("failed", "error"):
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return n, failed


def run_tests(workers: int, timeout: float, junit: Path) -> tuple[int | None, float]:
    """The pytest session (its exit status, None on the timeout) and its wall time."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={junit}", "tests"]
    if workers > 0 and importlib.util.find_spec("xdist") is not None:  # pytest-xdist
        cmd += ["-n", str(workers)]
    t0 = time.perf_counter()
    try:
        rc: int | None = subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = None
    return rc, time.perf_counter() - t0


@dataclass
class Bench:
    """How the benchmark went: its exit status (None: stopped at the timeout; absent: not
    run, ``why`` says why), its wall time, its goal lines and the files it wrote."""

    rc: int | None = None
    seconds: float = 0.0
    goals: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    why: str = ""  # not run: the reason

    @property
    def ok(self) -> bool:
        """Not a failure: finished with status 0, or not run on purpose."""
        return self.rc == 0 or bool(self.why)


def run_bench(argv: list[str], timeout: float, files: list[Path] | None = None) -> Bench:
    """``python -m benchmarks.gpu *argv`` from the repository's root: its progress goes to this
    process's stderr, its goal lines are kept. ``files``: what it writes (for the summary)."""
    cmd = [sys.executable, "-m", "benchmarks.gpu", *argv]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=timeout, stdout=subprocess.PIPE, text=True)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = None
    else:
        out, rc = proc.stdout, proc.returncode
    goals = [line for line in out.splitlines() if line.startswith(GOAL_PREFIX)]
    return Bench(rc, time.perf_counter() - t0, goals, files or [])


def bench_lines(bench: Bench) -> list[str]:
    """The benchmark's part of the summary."""
    if bench.why:
        return [f"gpu bench: not run: {bench.why}"]
    status = "timed out" if bench.rc is None else f"exit status {bench.rc}"
    wrote = ", ".join(str(f) for f in bench.files if f.exists())
    head = f"gpu bench: {'finished' if bench.ok else 'FAILED'} ({status}, {bench.seconds:.0f} s)"
    return [head + (f", wrote {wrote}" if wrote else ""), *(f"  {g}" for g in bench.goals)]


def _device_line() -> str:
    if not torch.cuda.is_available():
        return "device: no CUDA device"
    return f"device: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)"


def summary(
    rc: int | None, seconds: float, n: dict[str, int], failed: list[str], bench: Bench
) -> tuple[str, bool]:
    """The summary's text and whether the check passed."""
    ok = rc == 0 and n.get("passed", 0) > 0 and not failed and bench.ok
    status = "timed out" if rc is None else f"pytest exit status {rc}"
    lines = [
        f"gpu-check: {'PASSED' if ok else 'FAILED'} ({status}, {seconds:.0f} s)",
        _device_line(),
        f"torch {torch.__version__}, CUDA {torch.version.cuda}",
        "tests: " + ", ".join(f"{v} {k}" for k, v in n.items()) if n else "tests: no report",
        *(f"  failed: {name}" for name in failed),
        *bench_lines(bench),
    ]
    return "\n".join(lines) + "\n", ok


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    if not torch.cuda.is_available():
        line = f"gpu-check: no CUDA device here (torch {torch.__version__}): nothing to run"
        print(line)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        rc, seconds = run_tests(args.workers, min(args.timeout, args.total), junit)
        n, failed = counts(junit) if junit.exists() else ({}, [])
    left = args.total - (time.perf_counter() - start)
    md, raw = args.out.with_name("gpu-bench.md"), args.out.with_name("gpu-bench.json")
    if args.no_bench:
        bench = Bench(why="--no-bench")
    elif left < args.bench_min:
        bench = Bench(why=f"{left:.0f} s left of --total {args.total:.0f}, under --bench-min")
    else:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.unlink(missing_ok=True)  # a fresh file: the section alone
        budget = left - 20  # the benchmark stops starting measurements before its end
        argv_b = [
            "--device",
            "cuda",
            "--out",
            str(md),
            "--json",
            str(raw),
            "--budget",
            f"{budget:.0f}",
        ]
        bench = run_bench(argv_b, timeout=left, files=[md, raw])
    text, ok = summary(rc, seconds, n, failed, bench)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
