"""The memory-bandwidth floor of a trace update.

An online rule with eligibility traces must, at every step, read every trace element and write
it back (``ε_t = J ε_{t-1} + ∂s_t/∂θ``). Once the traces no longer fit in the caches, no
implementation can be faster than moving those bytes through main memory::

    bytes per step = 2 × Σ_layers Σ_params size(ε)         (read once + write once)
    floor          = bytes per step ÷ copy bandwidth

where size(ε) is the bytes of the trace tensors the runner actually holds
(the tensors of ``runner.traces``, e.g. ``B·N·k·C·4`` for a float32 diagonal trace of a
parameter with C columns per neuron and k state variables) and the copy bandwidth is measured
on this machine as ``dst.copy_(src)`` over buffers far larger than the caches, counting
2 × buffer bytes moved per copy (read + write). The floor ignores the forward pass, the
learning signal and the optimizer, so the ratio measured step ÷ floor is ≥ 1 in principle and
tells how far an implementation is from being memory bound.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ostl.engine.carry import tensors

__all__ = ["FORMULA", "measure_bandwidth", "trace_bytes", "floor_ms"]

FORMULA = (
    "bytes/step = 2 × Σ_layers Σ_params bytes(ε) (each trace element read once and written once)"
)


def _copy_rates(mib: int, repeats: int, warmup: int, device: str) -> list[float]:
    """GB/s of ``repeats`` copies between two ``mib`` MiB float32 buffers (read + write)."""
    src = torch.rand(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    nbytes = 2 * src.numel() * src.element_size()
    cuda = torch.device(device).type == "cuda"
    rates = []
    for i in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            rates.append(nbytes / (time.perf_counter() - t0) / 1e9)
    return rates


def measure_bandwidth(
    mib: int = 512, *, repeats: int = 10, warmup: int = 2, device: str = "cpu"
) -> dict[str, Any]:
    """Copy bandwidth ``dst.copy_(src)`` over float32 buffers of growing size up to ``mib`` MiB.

    The smaller sizes (2, 8, 32, 128 MiB below ``mib``) show where the caches end; the floor
    uses the largest, which is far beyond them on CPUs.

    Returns:
        ``gbps`` (median at ``mib``, 10⁹ bytes per second, read + write counted), ``gbps_all``,
        ``buffer_bytes``, and ``by_size``: ``[{"mib", "gbps"}]`` for every size.
    """
    sizes = [m for m in (2, 8, 32, 128) if m < mib] + [mib]
    by_size = []
    rates: list[float] = []
    for m in sizes:
        rates = _copy_rates(m, repeats, warmup, device)
        by_size.append({"mib": m, "gbps": statistics.median(rates)})
    return {
        "gbps": by_size[-1]["gbps"],
        "gbps_all": rates,
        "buffer_bytes": mib * 2**20,
        "by_size": by_size,
    }


def trace_bytes(runner: object) -> int | None:
    """Bytes of the eligibility traces a bound runner holds after ``reset``; None if it has none.

    Reads ``runner.traces``: one entry per layer, None or the layer's trace carry, whose
    ``eps`` tensors (the traces proper, not the small per-step factors) are counted.
    """
    traces = getattr(runner, "traces", None)
    if not traces or all(tr is None for tr in traces):
        return None
    eps = [tr.eps for tr in traces if tr is not None]
    return sum(t.numel() * t.element_size() for t in tensors(eps))


def floor_ms(trace_nbytes: int, gbps: float) -> float:
    """Milliseconds per step to read and write ``trace_nbytes`` at ``gbps`` (10⁹ bytes/s)."""
    return 2 * trace_nbytes / (gbps * 1e9) * 1e3
