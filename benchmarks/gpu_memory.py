"""Peak device memory against the sequence length T: BPTT until it runs out, OSTL beyond.

:func:`memory_sweep` doubles T from ``t0``. At every T it trains one sequence with BPTT
(``update_every=None``: the autograd graph of all T steps is held until the backward pass) and
one with OSTL (``update_every=1``), each measured by :func:`benchmarks.memory.measure_memory`
(on CUDA: ``torch.cuda.max_memory_allocated`` after ``torch.cuda.reset_peak_memory_stats``,
minus what was allocated once the model, optimizer and inputs were built). When BPTT raises
``torch.cuda.OutOfMemoryError`` the sweep records "out of memory" at that T, frees the device's
cached memory and goes on with OSTL alone, at that T and the next one, then stops. It also
stops past ``t_max``, and before a measurement predicted to end after ``time_cap`` seconds (the
same method's last measurement scaled by T: a sequence's time grows linearly with T).

Choice of the workload: BPTT's graph grows by a fixed number of bytes per sample and per step,
so the batch decides at which T the device is full. :func:`bytes_per_sample_step` measures that
number on the device (two short BPTT runs) and :func:`choose_batch` picks the batch whose
predicted out-of-memory T is ``t0 · 4√2`` (≈ 5,660 for ``t0`` = 1,000): between two doublings,
with a factor 1.41 of margin either way, so BPTT still runs at ``4·t0`` and runs out at
``8·t0``. The network is the headline one (LIF 64→256→256→10) with that large batch rather than
a wide one, because OSTL's work per step grows with its traces (batch × neurons × inputs per
neuron) while BPTT's graph grows with batch × neurons only: narrow layers fill the device in
the fewest, cheapest OSTL steps. Measured on the CPU, the headline network's graph holds 8,488
bytes per sample and step (:data:`CPU_BYTES_PER_SAMPLE_STEP`); on a 140 GiB H200 that gives a
batch of about 3,100 (OSTL's traces: about 1 GiB). LIF 64→1024→1024→10 with batch 256 would
hold 8.1 MiB per step and run out only near T = 17,000: twice the steps, four times the trace.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from .memory import measure_memory
from .workload import NetSpec

__all__ = [
    "CPU_BYTES_PER_SAMPLE_STEP",
    "OOM",
    "bytes_per_sample_step",
    "choose_batch",
    "free_device",
    "is_oom",
    "memory_sweep",
    "peak_bytes",
]

#: Bytes BPTT's autograd graph holds per sample and per step on the headline network, counted
#: on the CPU (the storages autograd saves, ``torch.autograd.graph.saved_tensors_hooks``,
#: between T = 10 and T = 20 at B = 32). Used when the device measurement is unusable.
CPU_BYTES_PER_SAMPLE_STEP = 8488

#: The status of a measurement that ran out of device memory.
OOM = "out of memory"

#: ``measure_memory``'s signature: (spec, method, steps, *, seed, device) -> record.
Measure = Callable[..., dict[str, Any]]


def is_oom(e: BaseException) -> bool:
    """Whether an exception says the device ran out of memory (the allocator's
    ``torch.cuda.OutOfMemoryError``, or a library's RuntimeError saying so)."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def free_device(device: str) -> None:
    """On CUDA: drop unreachable tensors and hand the allocator's cached blocks back (a CPU
    measurement collects what it needs itself)."""
    if torch.device(device).type == "cuda":
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def peak_bytes(record: dict[str, Any]) -> int:
    """The peak of a :func:`~benchmarks.memory.measure_memory` record: the device allocator's
    on CUDA, the process's resident memory elsewhere (both above the built model)."""
    return int(record.get("device_extra_bytes", record["extra_bytes"]))


def bytes_per_sample_step(
    spec: NetSpec,
    *,
    device: str,
    measure: Measure = measure_memory,
    steps: tuple[int, int] = (50, 100),
    batch: int = 64,
) -> float | None:
    """Bytes BPTT's graph adds per sample and step on ``device``: the peak of two short BPTT
    sequences at batch ``batch``, their difference over the extra steps. None when the
    difference is not positive (a resident-memory peak on the CPU can miss it)."""
    s = spec.with_(batch=batch)
    a, b = (peak_bytes(measure(s, "bptt", T, device=device)) for T in steps)
    free_device(device)
    per = (b - a) / ((steps[1] - steps[0]) * batch)
    return per if per > 0 else None


def choose_batch(
    free_bytes: int, per_sample_step: float, target_steps: float, multiple: int = 32
) -> int:
    """The batch (a multiple of ``multiple``, at least one) whose BPTT graph fills
    ``free_bytes`` at ``target_steps`` steps."""
    if per_sample_step <= 0 or target_steps <= 0:
        raise ValueError(
            f"expected positive bytes per sample-step and steps, got {per_sample_step} and "
            f"{target_steps}"
        )
    b = int(free_bytes / (target_steps * per_sample_step)) // multiple * multiple
    return max(multiple, b)


def target_steps(t0: int) -> float:
    """Where the chosen batch should run out: ``t0 · 4√2``, between ``4·t0`` and ``8·t0``."""
    return t0 * 4 * math.sqrt(2)


def _one(
    measure: Measure, spec: NetSpec, method: str, T: int, device: str, seed: int
) -> dict[str, Any]:
    """One measurement as a sweep row; out of memory and other failures become its status."""
    row: dict[str, Any] = {"method": method, "steps": T, "peak_bytes": None}
    t0 = time.perf_counter()
    failure: BaseException | None = None
    try:
        rec = measure(spec, method, T, seed=seed, device=device)
    except Exception as e:  # noqa: BLE001 - a failed measurement is reported, not fatal
        failure = e
    row["seconds"] = time.perf_counter() - t0
    if failure is None:
        row.update(status="ok", peak_bytes=peak_bytes(rec))
    else:
        row["status"] = OOM if is_oom(failure) else f"error: {type(failure).__name__}: {failure}"
        failure = None  # drop the traceback (it holds the failed run's tensors) before freeing
    free_device(device)
    return row


def _predicted(rows: list[dict[str, Any]], method: str, T: int) -> float:
    """Seconds a measurement of ``method`` at ``T`` should take: its last run scaled by T."""
    last = [r for r in rows if r["method"] == method]
    return last[-1]["seconds"] * T / last[-1]["steps"] if last else 0.0


def memory_sweep(
    spec: NetSpec,
    *,
    device: str,
    t0: int,
    t_max: int,
    time_cap: float,
    measure: Measure = measure_memory,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """BPTT and OSTL at T = t0, 2·t0, ... (see the module docstring).

    Args:
        spec: the network and batch.
        device: where to train.
        t0, t_max: the first T and the largest one tried.
        time_cap: seconds; no measurement is started that is predicted to end after it.
        measure: the measurement (:func:`~benchmarks.memory.measure_memory`'s signature); it
            raises ``torch.cuda.OutOfMemoryError`` when the device is full.
        seed: of the weights and inputs.
        log: progress lines.

    Returns:
        ``rows`` (``method``, ``steps``, ``status``: "ok", :data:`OOM` or "error: ...",
        ``peak_bytes``, ``seconds``), ``out_of_memory_at`` (BPTT's T, or None) and ``stop``
        (why the sweep ended).
    """
    rows: list[dict[str, Any]] = []
    start, n, out_at, stop = time.perf_counter(), t0, None, ""
    while not stop:
        if n > t_max:
            stop = f"reached the T cap ({t_max})"
            break
        for method in ("bptt", "ostl") if out_at is None else ("ostl",):
            if time.perf_counter() - start + _predicted(rows, method, n) > time_cap:
                stop = f"the time cap ({time_cap:.0f} s) would be passed by {method} at T = {n}"
                break
            rows.append(_one(measure, spec, method, n, device, seed))
            r = rows[-1]
            peak = r["peak_bytes"]
            log(f"memory {method} T={n}: {r['status']}, peak {peak} B ({r['seconds']:.1f} s)")
            if r["status"] == OOM and method == "bptt":
                out_at = n
            elif r["status"] != "ok":
                stop = f"{method} at T = {n}: {r['status']}"
                break
        if not stop and out_at is not None and n > out_at:
            stop = f"BPTT ran out of memory at T = {out_at}; OSTL ran there and at T = {n}"
        n *= 2
    return {"rows": rows, "out_of_memory_at": out_at, "stop": stop}
