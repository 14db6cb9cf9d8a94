"""Run the GPU tests (pytest's ``gpu`` marker) on a machine with a CUDA device, and summarise.

    python scripts/gpu_check.py --out gpu-check.txt      # make gpu-check

The tests marked ``gpu`` (``tests/test_gpu.py``: every rule and cell on CUDA against the CPU;
``tests/test_gpu_train.py``: ``ostl.run.train`` of every task with BPTT, OSTL, OSTTP and e-prop
on CUDA, batches moved without a host synchronisation, PCM refused on CUDA; the sync-free and
NCCL tests) run in one pytest session, in a few worker processes. The summary (device, torch
and CUDA versions, passed / failed / skipped counts, the failed tests, the wall time) is
printed and written to ``--out``. Sized for a few minutes on one GPU; the tests are stopped
after ``--timeout`` seconds (default 480).

Exit status: 0 when every test passed (skips allowed), 1 otherwise (a failure, an error,
nothing collected, the timeout). Without a CUDA device it says so in one line, writes that
line to ``--out`` and exits 0, so that a machine without a GPU is not a failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        line = f"gpu-check: no CUDA device here (torch {torch.__version__}): nothing to run"
        print(line)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        rc, seconds = run_tests(args.workers, args.timeout, junit)
        n, failed = counts(junit) if junit.exists() else ({}, [])
    ok = rc == 0 and n.get("passed", 0) > 0 and not failed
    status = "timed out" if rc is None else f"pytest exit status {rc}"
    lines = [
        f"gpu-check: {'PASSED' if ok else 'FAILED'} ({status}, {seconds:.0f} s)",
        f"device: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}",
        "tests: " + ", ".join(f"{v} {k}" for k, v in n.items()) if n else "tests: no report",
        *(f"  failed: {name}" for name in failed),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
