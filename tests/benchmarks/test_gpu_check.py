"""scripts/gpu_check.py (make gpu-check): its summary carries the GPU benchmark's goal lines.

Without a CUDA device the script's real no-CUDA path runs; the benchmark runs for real on the
CPU (quick) through the script's runner.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from benchmarks.gpu_report import goal_lines

ROOT = Path(__file__).resolve().parents[2]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


def _gpu_check() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@no_cuda
def test_gpu_check_without_cuda_writes_one_line_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "check.txt"
    assert _gpu_check().main(["--out", str(out)]) == 0
    (line,) = out.read_text().splitlines()
    assert line.startswith("gpu-check: no CUDA device here") and line.endswith("nothing to run")
    assert not (tmp_path / "runs" / "gpu-bench.md").exists()


def test_gpu_check_summary_fails_on_a_failed_or_timed_out_bench() -> None:
    gc = _gpu_check()
    n = {"passed": 3, "failed": 0, "error": 0, "skipped": 1}
    text, ok = gc.summary(0, 12.0, n, [], gc.Bench(why="--no-bench"))
    assert ok and text.splitlines()[0].startswith("gpu-check: PASSED")
    assert text.splitlines()[-1] == "gpu bench: not run: --no-bench"
    for rc, status in ((1, "exit status 1"), (None, "timed out")):
        text, ok = gc.summary(0, 12.0, n, [], gc.Bench(rc, 30.0, ["goal: met | g | m"]))
        assert not ok and text.startswith("gpu-check: FAILED")
        assert f"gpu bench: FAILED ({status}, 30 s)\n  goal: met | g | m\n" in text


@pytest.mark.slow
def test_gpu_check_summary_carries_the_bench_goal_lines(tmp_path: Path) -> None:
    """The real bench (quick, on the CPU) through gpu_check's runner and summary."""
    gc = _gpu_check()
    raw = tmp_path / "G.json"
    argv = ["--device", "cpu", "--quick", "--no-write", "--in-process", "--json", str(raw)]
    bench = gc.run_bench(argv, timeout=600, files=[raw])
    assert bench.rc == 0 and len(bench.goals) == 4
    n = {"passed": 1, "failed": 0, "error": 0, "skipped": 0}
    text, ok = gc.summary(0, 1.0, n, [], bench)
    assert ok
    lines = text.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("gpu bench: finished")))
    assert f"wrote {raw}" in lines[at]
    assert lines[at + 1 :] == [f"  {g}" for g in goal_lines(json.loads(raw.read_text()))]
