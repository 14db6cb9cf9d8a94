"""One measurement: its description, its execution, and its own process.

A :class:`Job` is plain data (JSON-serialisable). :func:`run_job` runs it in a fresh Python
process (``python -m benchmarks.worker '<json>'``) with the thread count fixed through
``torch.set_num_threads`` and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, and reads back one
JSON line. With ``isolate=False`` it runs in the calling process instead (tests, debugging:
timings and process memory are then less trustworthy).

A measurement that cannot run (it raises :class:`~ostl.errors.UnsupportedError`: a rule that
cannot handle the network, snnTorch missing) comes back with ``skipped`` set to the reason;
one that fails otherwise with ``error`` (and ``traceback``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Job", "execute", "run_job", "RESULT_TAG"]

#: Prefix of the line a worker prints its result on.
RESULT_TAG = "OSTL_BENCH_RESULT "

KINDS = ("speed", "memory", "bandwidth", "ops")


@dataclass(frozen=True)
class Job:
    """One measurement.

    Attributes:
        kind: ``"speed"``, ``"memory"``, ``"bandwidth"`` or ``"ops"`` (aten operations per
            step, :mod:`.ops`).
        method: ``"forward"``, ``"torch"``, ``"snntorch"`` or a rule name (ignored for
            bandwidth); see :mod:`benchmarks.workload`.
        net: the network, a :class:`~benchmarks.workload.NetSpec` as a dict.
        steps: time steps T of a sequence.
        repeats: measured repetitions (speed, bandwidth).
        warmup: discarded repetitions before them (speed, bandwidth, ops).
        threads: ``torch.set_num_threads`` of the measuring process.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed of the weights and inputs.
        buffer_mib: buffer size of the bandwidth measurement.
    """

    kind: str
    method: str = ""
    net: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    repeats: int = 1
    warmup: int = 0
    threads: int = 1
    device: str = "cpu"
    seed: int = 0
    buffer_mib: int = 512

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Job.kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(**d)

    @property
    def label(self) -> str:
        """Short description for progress lines."""
        if self.kind == "bandwidth":
            return f"bandwidth copy_ {self.buffer_mib} MiB"
        from .workload import NetSpec

        return f"{self.kind} {self.method} T={self.steps} [{NetSpec.from_dict(self.net).label}]"


def _measure(job: Job) -> dict[str, Any]:
    """The measurement of a job, in this process."""
    from .bandwidth import measure_bandwidth
    from .memory import measure_memory
    from .ops import count_ops
    from .speed import measure_speed
    from .workload import NetSpec

    if job.kind == "bandwidth":
        return measure_bandwidth(
            job.buffer_mib, repeats=job.repeats, warmup=job.warmup, device=job.device
        )
    net = NetSpec.from_dict(job.net)
    if job.kind == "speed":
        return measure_speed(
            net,
            job.method,
            job.steps,
            warmup=job.warmup,
            repeats=job.repeats,
            seed=job.seed,
            device=job.device,
        )
    if job.kind == "ops":
        return count_ops(
            net, job.method, job.steps, warmup=job.warmup, seed=job.seed, device=job.device
        )
    return measure_memory(net, job.method, job.steps, seed=job.seed, device=job.device)


def execute(job: Job) -> dict[str, Any]:
    """Run a job in this process. Returns the job, its measurements and the process facts."""
    import torch

    from ostl.errors import UnsupportedError

    torch.set_num_threads(job.threads)
    out: dict[str, Any] = {"job": job.to_dict(), "threads": torch.get_num_threads()}
    try:
        out.update(_measure(job))
    except UnsupportedError as e:  # e.g. a rule that cannot handle the network, no snnTorch
        out["skipped"] = f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - a failed measurement is reported, not fatal
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
    return out


def _pythonpath() -> str:
    """PYTHONPATH that finds this benchmark package and this copy of ostl (``src/``) in a child
    process, wherever it runs and whether or not ostl is installed."""
    root = Path(__file__).resolve().parents[1]
    paths = [str(root), str(root / "src")]
    old = os.environ.get("PYTHONPATH")
    return os.pathsep.join(paths + ([old] if old else []))


def run_job(job: Job, *, isolate: bool = True, timeout: float | None = 3600) -> dict[str, Any]:
    """Run a job, in a fresh process unless ``isolate=False``; adds ``wall_seconds``."""
    t0 = time.perf_counter()
    if not isolate:
        import torch

        threads = torch.get_num_threads()
        try:
            out = execute(job)
        finally:
            torch.set_num_threads(threads)  # leave the calling process as it was
    else:
        env = dict(os.environ)
        env.update(
            OMP_NUM_THREADS=str(job.threads),
            MKL_NUM_THREADS=str(job.threads),
            PYTHONPATH=_pythonpath(),
        )
        cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(job.to_dict())]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
            )
            out = _parse(job, proc)
        except subprocess.TimeoutExpired:
            out = {"job": job.to_dict(), "error": f"timed out after {timeout} s"}
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def _parse(job: Job, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {
        "job": job.to_dict(),
        "error": f"worker exited with status {proc.returncode}: " + " | ".join(tail),
    }
