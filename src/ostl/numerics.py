"""Denormal (subnormal) floats: why online rules flush them, and how.

An eligibility trace decays geometrically between the steps that refresh it (a LIF's trace of
an input that stays silent shrinks by the leak, e.g. ×0.9, every step). After a few hundred
silent steps its float32 entries fall below 1.2·10⁻³⁸ and become *denormal*; x86 CPUs handle
those in microcode, many times slower than normal floats. On a long stream without resets the
trace update then slows down by several times (measured: ``python -m benchmarks.denormal``)
although nothing about the work has changed. Flushing denormals to zero (FTZ/DAZ) removes the
cost; it changes only values below 1.2·10⁻³⁸ (float32) or 2.2·10⁻³⁰⁸ (float64), far below
the rounding error of any gradient.

- :func:`flush_denormals` scopes it: every runner step (:meth:`ostl.rules.Runner.step`) and
  every :class:`ostl.Learner` step and ``end_sequence`` (so the optimizer's decaying moments
  too) run inside it, and the previous mode is restored afterwards.
- ``ostl.numerics.ENABLED = False`` turns the scoped flush off (IEEE denormals everywhere;
  the benchmark measures both).
- The mode is per thread. torch's intra-op worker threads inherit it only when they are
  created, at the first parallel operation of the process; :func:`flush_denormals_globally`,
  called first thing by the ``ostl`` command, sets it for the whole process. A library user
  who runs with more than one torch thread should call it (or
  ``torch.set_flush_denormal(True)``) before any other torch work.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["ENABLED", "denormals_flushed", "flush_denormals", "flush_denormals_globally"]

#: Whether :func:`flush_denormals` flushes (False: it does nothing).
ENABLED = True

# The smallest positive double (a denormal) and one, as module variables: Python's compiler
# would fold a product of two literals, and the probe must run on this thread's FPU.
_DENORMAL, _ONE = 5e-324, 1.0


def denormals_flushed() -> bool:
    """True if this thread treats denormal floats as zero.

    Python's float arithmetic runs on the same SSE unit and control register as torch's CPU
    kernels, so a product of two Python floats probes the mode without any tensor operation.
    """
    return _DENORMAL * _ONE == 0.0


_scope = threading.local()  # how deep this thread is inside flush_denormals blocks


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormals to zero on this thread inside the block; restore the mode after it.

    Nested blocks cost nothing (the outermost one probes and restores the mode). A no-op on
    CPUs without FTZ/DAZ support (``torch.set_flush_denormal`` returns False).
    """
    depth = getattr(_scope, "depth", 0)
    if not ENABLED or depth:
        yield
        return
    _scope.depth = 1
    try:
        if denormals_flushed():
            yield
            return
        supported = torch.set_flush_denormal(True)
        try:
            yield
        finally:
            if supported:
                torch.set_flush_denormal(False)
    finally:
        _scope.depth = 0


def flush_denormals_globally() -> bool:
    """Flush denormals for this process: this thread and the torch threads created after it.

    Call it before the first multi-threaded torch operation (the intra-op threads copy the
    mode when they start). Returns whether the CPU supports it.
    """
    return bool(torch.set_flush_denormal(True))
