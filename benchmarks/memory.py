"""Peak memory of one training run over a sequence of T steps, measured inside its own process.

Protocol (one process per measurement):

1. warm the code paths of the method on a tiny network (two steps), so one-time library
   initialisation (autograd engine, ``torch.func``, optimizer code) is not counted as extra;
2. build the model, the optimizer, the input pool and the targets;
3. ``baseline`` = the process's resident set (``VmRSS``) now; the kernel's high-water mark is
   reset (``/proc/self/clear_refs`` ← ``5``);
4. run one sequence of T steps (BPTT: ``update_every=None``, one backward pass at the end;
   online rules: ``update_every=1``);
5. ``peak`` = the high-water mark ``VmHWM`` (whole process), ``extra = peak − baseline``.

Where the high-water mark cannot be reset, ``peak`` is ``ru_maxrss`` (since process start);
the result says which (``peak_method``). The bytes of the tensors the learner holds at the last
step (``Learner.state_bytes()``: state, traces, gradients; BPTT's autograd graph is not in it)
are recorded too. On CUDA the device's allocator peak is measured the same way.
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ostl.learner import Learner

from .workload import NetSpec, build_network, input_pool, make_learner, one_hot_targets

__all__ = ["current_rss", "peak_rss", "reset_peak", "measure_memory", "POOL_FRAMES"]

#: Distinct input frames; a sequence cycles through them.
POOL_FRAMES = 100

_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    rss = _status_bytes("VmRSS")
    if rss is not None:
        return rss
    return peak_rss()  # no /proc: the best available figure


def peak_rss() -> int:
    """High-water mark of the resident set since start (or since :func:`reset_peak`), bytes."""
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak() -> bool:
    """Reset the kernel's resident-set high-water mark to the current RSS (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    hwm = _status_bytes("VmHWM")
    return hwm is not None and hwm <= current_rss() + (1 << 20)


def _build(
    spec: NetSpec, method: str, steps: int, seed: int, device: str
) -> tuple[Learner, Tensor, Tensor]:
    """The learner (model + optimizer), the input pool and the targets of one measurement."""
    net = build_network(spec, seed=seed, device=device)
    pool = input_pool(spec, min(steps, POOL_FRAMES), seed=seed, device=device)
    return make_learner(net, method), pool, one_hot_targets(spec, seed=seed, device=device)


def _train(
    learner: Learner, pool: Tensor, target: Tensor, steps: int, held_at: Sequence[int] = ()
) -> dict[int, int]:
    """One sequence; the learner's held bytes after the steps in ``held_at`` and the last one.

    Returns:
        ``{step: bytes}``, steps counted from 1.
    """
    learner.reset(target.shape[0])
    held = {}
    for t in range(1, steps + 1):
        learner.step(pool[(t - 1) % len(pool)], target)
        if t in held_at or t == steps:
            held[t] = learner.state_bytes()
    learner.end_sequence()
    return held


def measure_memory(
    spec: NetSpec,
    method: str,
    steps: int,
    *,
    seed: int = 0,
    device: str = "cpu",
    held_at: Sequence[int] = (),
) -> dict[str, Any]:
    """Peak memory of training ``method`` on ``spec`` over one sequence of ``steps`` steps.

    Returns:
        ``baseline_bytes``, ``peak_bytes`` (whole process), ``extra_bytes`` (peak − baseline),
        ``held_bytes`` (tensors the learner holds after the last step), ``held_bytes_at``
        (the same after each step of ``held_at``, as ``{step: bytes}``), ``seconds`` (wall time
        of the sequence), ``peak_method``; on CUDA also ``device_extra_bytes``.
    """
    cuda = torch.device(device).type == "cuda"
    _train(*_build(spec.with_(n_in=4, hidden=8, batch=2), method, 2, seed, device), steps=2)
    learner, pool, target = _build(spec, method, steps, seed, device)
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        device_base = torch.cuda.memory_allocated()
    baseline = current_rss()
    resettable = reset_peak()
    t0 = time.perf_counter()
    held = _train(learner, pool, target, steps, held_at)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = peak_rss()
    out: dict[str, Any] = {
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "extra_bytes": max(0, peak - baseline),
        "held_bytes": held[steps],
        "held_bytes_at": held,
        "seconds": seconds,
        "peak_method": "VmHWM after clear_refs" if resettable else "ru_maxrss since start",
    }
    if cuda:
        out["device_extra_bytes"] = torch.cuda.max_memory_allocated() - device_base
    return out
